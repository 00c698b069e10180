"""Diagnostic for training SAMA from scratch: which edits can the world DiT learn on images?

    python benchmarks/edit_probe.py --kinds recolour --sigma 1 --edit-weight 10 --steps 600
    python benchmarks/edit_probe.py --kinds recolour --sigma 1 --edit-weight 10 --steps 600 --source-mode channel
    python benchmarks/edit_probe.py --source-mode channel --edit-weight 3 --steps 3000
    python benchmarks/edit_probe.py --source-mode channel --edit-weight 3 --patch 1 --set train.edit_area_norm=True
    python benchmarks/edit_probe.py --kinds recolour,remove --source-mode channel --edit-weight 3 \
        --set model.scale_input=True --set "data.world.radius=(0.16,0.24)" --text-dropout 0.1 --guidance 3

Trains the world config's DiT (configs/stage2_tiny.py; --source-mode, --patch and --set
override it) with AdamW and a warmup-cosine schedule on one-frame world edits (image-edit
pairs of the given kinds in the config's world, data.world; 4000 distinct pairs), the flow
loss of the trainer on x0 predictions (plain x0 MSE: x0_sigma_floor 1) times
train.edit_weight's weights (area-normalised with --set train.edit_area_norm=True), with
--text-dropout of the instructions replaced by the negative prompt, and prints the edit
success per kind and the preservation PSNR (synthetic_metrics) on 96 new pairs, edited in
one step (the x0 prediction at σ = 1) and in 4 Euler steps (--sample-steps), with text
guidance --guidance. Nothing is asserted.

The world config's DiT is the demo's since session 10 (one latent position per token,
width 128, model.scale_input); docs/results.md findings 10-14 and the 8x8-pixel rows of
finding 15 used 2x2 patches at width 256 without it: add --patch 2 --set model.dim=256
--set model.scale_input=False to reproduce them.
"""

import argparse
import ast
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image
from flax import nnx

from sama_jax.config import load_config
from sama_jax.data.config import world_options
from sama_jax.data.synthetic import world_case
from sama_jax.data.synthetic_edits import EDIT_KINDS
from sama_jax.data.synthetic_grammar import parse_instruction
from sama_jax.data.synthetic_metrics import evaluate_edit, ground_truth, summarise
from sama_jax.diffusion.flow import interpolate
from sama_jax.diffusion.schedule import sample_training_sigmas, sampling_sigmas
from sama_jax.encoders import build_encoders, host_arrays, make_encode_fn
from sama_jax.models import SamaDiT
from sama_jax.train.step import edit_weights


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=1000)
  p.add_argument("--every", type=int, default=500, help="score every this many steps")
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--kinds", default="all", help="comma-separated edit kinds, or 'all' (every kind the "
                                                "world has, whatever data.world.edit_kinds says)")
  p.add_argument("--sigma", default="mixed", help="a fixed level in (0, 1], or 'mixed' (the trainer's draw)")
  p.add_argument("--edit-weight", type=float, default=0.0, help="train.edit_weight")
  p.add_argument("--source-mode", choices=("token", "channel"), default=None)
  p.add_argument("--patch", type=int, default=None, help="spatial patch size (the world config: 2)")
  p.add_argument("--text-local-bias", type=float, default=None,
                 help="encoders.world_text_local_bias (0: the text encoder's features ignore word order)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config entry, e.g. model.ffn_dim=1024 (Python literal values)")
  p.add_argument("--colour-refs", action="store_true",
                 help="only edits whose reference names the object's colour ('the red circle', not 'the circle')")
  p.add_argument("--text-dropout", type=float, default=0.0,
                 help="share of training pairs whose instruction is the negative prompt (train.text_dropout)")
  p.add_argument("--guidance", type=float, default=1.0,
                 help="text guidance scale of the sampler (edit.guidance; needs --text-dropout > 0)")
  p.add_argument("--sample-steps", default="1,4", help="comma-separated Euler step counts to score")
  p.add_argument("--save", default="", help="write a PNG of the first 16 test pairs (source | truth | "
                                            "the last --sample-steps count) and their instructions to SAVE.txt")
  a = p.parse_args()
  sample_steps = [int(n) for n in a.sample_steps.split(",")]
  kinds = EDIT_KINDS if a.kinds == "all" else tuple(a.kinds.split(","))
  c = load_config("configs/stage2_tiny.py")
  if a.source_mode:
    c.model.source_mode = a.source_mode
  if a.patch:
    c.model.patch_size = (1, a.patch, a.patch)
  for item in a.set:
    key, value = item.split("=", 1)
    c.update_from_flattened_dict({key: ast.literal_eval(value)})
  if a.text_local_bias is not None:
    c.encoders.world_text_local_bias = a.text_local_bias
  height, width = c.data.resolution[1], c.data.resolution[0]
  sampling = world_options(c.data)["sampling"]  # e.g. --set data.world.radius=(0.16,0.24)
  enc = build_encoders(c.encoders)

  def case(index, seed):
    while True:  # --colour-refs: the next index whose reference names a colour
      scene, edit = world_case("image_edit", index, seed, frames=1, height=height, width=width, kinds=kinds,
                                sampling=sampling)
      if not a.colour_refs or edit.kind in ("add", "background") or parse_instruction(edit.instruction)["ref_colour"]:
        return scene, edit, ground_truth(scene, edit)
      index += 100_000

  encode_fn = make_encode_fn(enc)

  def raw_frames(cases):
    return np.stack([t.frames for _, _, t in cases])

  def encode(cases):
    """The trainer's encoding (host_arrays, then the jitted encoders) of (scene, edit, truth) cases."""
    raw = {"instruction": [e.instruction for _, e, _ in cases], "target": raw_frames(cases),
           "source": np.stack([t.source_frames for _, _, t in cases])}
    out = encode_fn(host_arrays(enc, raw, c.data.image_edit_prefix))
    return {k: out[k] for k in ("text", "source", "latents")}

  start = time.time()
  train_cases = [case(i, 5) for i in range(4000)]
  chunks = [encode(train_cases[i:i + 500]) for i in range(0, 4000, 500)]
  train = {k: jnp.concatenate([chunk[k] for chunk in chunks]) for k in chunks[0]}
  test_cases = [case(i, 777) for i in range(96)]
  test = encode(test_cases)
  negative = encode_fn(host_arrays(enc, {"instruction": [c.edit.negative_prompt], "target": raw_frames(test_cases[:1]),
                                         "source": raw_frames(test_cases[:1])}))["text"]
  print(f"4000 training pairs of {kinds} encoded in {time.time() - start:.0f} s", flush=True)
  graphdef, params = nnx.split(SamaDiT(c.model, nnx.Rngs(0)), nnx.Param)
  optimizer = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, a.lr, min(100, a.steps // 10), a.steps,
                                                             a.lr * 0.05), weight_decay=0.0)
  opt_state = optimizer.init(params)

  def predict(params, x_t, sigma, batch):
    return nnx.merge(graphdef, params)(x_t, 1000.0 * sigma, batch["text"], source=batch["source"])[0]

  def loss_fn(params, batch, key):
    x0 = batch["latents"]
    k_sigma, k_noise, k_drop = jax.random.split(key, 3)
    dropped = jax.random.uniform(k_drop, (x0.shape[0], 1, 1)) < a.text_dropout
    batch = {**batch, "text": jnp.where(dropped, negative, batch["text"])}
    sigma = (sample_training_sigmas(k_sigma, x0.shape[0], c.train.timestep_shift, True, False)[0] if a.sigma == "mixed"
             else jnp.full((x0.shape[0],), float(a.sigma)))
    x_t = interpolate(x0, jax.random.normal(k_noise, x0.shape), sigma)
    weights = edit_weights(x0, batch["source"], a.edit_weight, c.train.edit_area_norm)
    return jnp.mean(weights * jnp.square(predict(params, x_t, sigma, batch) - x0))

  @jax.jit
  def step(params, opt_state, batch, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @functools.partial(jax.jit, static_argnums=1)
  def sample(params, num_steps):
    """Euler in x0 form on the editing schedule (edit.shift), from fixed noise."""
    x = jax.random.normal(jax.random.key(7), test["latents"].shape)
    levels = jnp.asarray(sampling_sigmas(num_steps, c.edit.shift), jnp.float32)
    for i in range(num_steps):
      sigma = jnp.full((x.shape[0],), levels[i])
      x0 = predict(params, x, sigma, test)
      if a.guidance != 1.0:  # guidance on x0 is guidance on the velocity: v is affine in x0 at fixed x
        unconditional = predict(params, x, sigma, {**test, "text": jnp.broadcast_to(negative, test["text"].shape)})
        x0 = unconditional + a.guidance * (x0 - unconditional)
      x = x0 + (levels[i + 1] / levels[i]) * (x - x0)
    return x

  def score(params, num_steps):
    pixels = np.asarray(jnp.clip((enc.codec.decode(sample(params, num_steps)) + 1.0) * 127.5, 0, 255))
    if a.save and num_steps == sample_steps[-1]:
      rows = [np.concatenate([t.source_frames[0], t.frames[0], pixels[i, 0].astype(np.uint8)], axis=1)
              for i, (_, _, t) in enumerate(test_cases[:16])]
      Image.fromarray(np.concatenate(rows, axis=0)).resize((3 * width * 4, 16 * height * 4), Image.NEAREST).save(a.save)
      with open(a.save + ".txt", "w") as f:
        f.write("\n".join(f"{i}: {e.instruction}" for i, (_, e, _) in enumerate(test_cases[:16])) + "\n")
    table = summarise([evaluate_edit(pixels[i], scene, edit) for i, (scene, edit, _) in enumerate(test_cases)])
    return " ".join(f"{k} {100 * v['success']:.0f}%" for k, v in table.items()) + f", PSNR {table['all']['psnr']:.1f} dB"

  rng = np.random.default_rng(0)
  start = time.time()
  print("step | seconds | loss | success per kind and PSNR: " + " | ".join(f"{n} steps" for n in sample_steps))
  for i in range(a.steps):
    chosen = rng.integers(0, 4000, a.batch)  # one draw: text, source and target of the same pairs
    batch = {k: v[chosen] for k, v in train.items()}
    params, opt_state, loss = step(params, opt_state, batch, jax.random.key(i))
    if (i + 1) % a.every == 0 or i + 1 == a.steps:
      scores = " | ".join(score(params, n) for n in sample_steps)
      print(f"{i + 1} | {time.time() - start:.0f} | {float(loss):.4f} | {scores}", flush=True)


if __name__ == "__main__":
  main()
