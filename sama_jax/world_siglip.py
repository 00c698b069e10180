"""Contrastive pre-training of the world's SigLIP stand-in on world frames and captions.

The stand-in built by `build_encoders` is random: its semantic tokens carry whatever a
random ViT computes, so Semantic Anchoring has nothing semantic to anchor to.
SYNTHETIC_WORLD.md allows a short contrastive pre-training on world frames and captions;
this is it, with SigLIP's own objective (Zhai et al. 2023: a sigmoid loss on every
image-caption pair of a batch, learnt temperature and bias):

    python -m sama_jax.world_siglip --out runs/world_siglip [--steps 600] [--config configs/stage1_tiny.py]

then train with `--config.encoders.world_siglip_init=runs/world_siglip`. The frames are
one-frame world scenes drawn as training clips are (with no held-out (shape, colour)
pair only where `data.world.held_out_from` names "clip") at the run's resolution,
captioned by the world's grammar ("a red circle and a blue square standing still on a
green background": one frame shows no motion); the caption tower is a small umT5 over
the world's word tokenizer, trained with the vision tower and then dropped. Only the
vision tower's weights are saved (Orbax), and `build_encoders` loads them over its
random init.
The report also says how often a frame's own caption beats the same caption with one
shape changed; `--shape-negatives` adds those captions to every batch as negatives
(docs/results.md finding 24: off, it cost the DiT colour edits and taught it no shape).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from sama_jax.models.siglip import SiglipVision, preprocess
from sama_jax.models.text import tokenize, word_tokenizer
from sama_jax.models.umt5 import UMT5Encoder, umt5_config

CAPTION_LEN = 32


class CaptionTower(nnx.Module):
  """(input_ids, attention_mask [B, L]) -> unit caption embeddings [B, D]: a small umT5,
  mean-pooled over the caption's tokens, projected to the vision width."""

  def __init__(self, vocab_size: int, width: int, rngs: nnx.Rngs):
    self.encoder = UMT5Encoder(umt5_config(vocab_size=vocab_size, d_model=width, d_kv=width // 4, num_heads=4,
                                           d_ff=2 * width, num_layers=2, text_len=CAPTION_LEN), rngs)
    self.proj = nnx.Linear(width, width, rngs=rngs)

  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    hidden = self.encoder(ids, mask)  # [B, L, D]
    weights = mask[..., None].astype(hidden.dtype)
    return unit(self.proj((hidden * weights).sum(1) / weights.sum(1)))


def unit(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-6)


def sigmoid_loss(images: jax.Array, captions: jax.Array, log_temperature: jax.Array, bias: jax.Array) -> jax.Array:
  """SigLIP's loss over unit embeddings images [B, D], captions [C, D] (C >= B; caption i
  belongs to image i, captions past B are extra negatives): each of the B x C pairs is a
  binary match / no-match decision on exp(t) * cosine + b; summed over captions,
  averaged over images."""
  logits = jnp.exp(log_temperature) * images @ captions.T + bias
  labels = 2.0 * jnp.eye(*logits.shape) - 1.0
  return -jnp.mean(jnp.sum(jax.nn.log_sigmoid(labels * logits), axis=-1))


def world_frames(count: int, seed: int, height: int, width: int,
                 **world) -> tuple[np.ndarray, list[str], list[str]]:
  """`count` one-frame training scenes (uint8 [count, H, W, 3]), their captions, and each
  caption with one object's shape changed to another (a hard negative: the same colours
  and background, so only the shape tells the two apart)."""
  from sama_jax.data.synthetic import Edit, apply_edit, world_case
  from sama_jax.data.synthetic_grammar import caption
  from sama_jax.data.synthetic_render import render
  from sama_jax.data.synthetic_scene import SHAPES

  rng = np.random.default_rng(seed)
  frames, captions, swapped = [], [], []
  for index in range(count):
    scene, _ = world_case("clip", index, seed, frames=1, height=height, width=width, **world)
    frames.append(render(scene)[0][0])
    captions.append(caption(scene))
    # A replace edit that keeps the colour: one object's shape changed.
    which = int(rng.integers(len(scene.objects)))
    target = scene.objects[which]
    shape = str(rng.choice([s for s in SHAPES if s != target.shape]))
    swapped.append(caption(apply_edit(scene, Edit("replace", "", which, target.colour, shape))))
  return np.stack(frames), captions, swapped


def pretrain(encoders_config, *, steps: int = 600, batch_size: int = 64, pool: int = 4096, learning_rate: float = 3e-3,
             seed: int = 0, height: int = 32, width: int = 32, world: dict | None = None,
             shape_negatives: bool = False, progress: bool = True) -> tuple[SiglipVision, dict]:
  """Trains the world SigLIP stand-in that `build_encoders(encoders_config)` builds (same
  shapes, same random init) against a caption tower on `pool` world frames. With
  `shape_negatives` each frame's caption with one shape changed joins the batch as a
  negative for every frame. Returns the vision tower and {"loss": per step, "retrieval":
  the share of `batch_size` frames past the pool whose own caption scores highest among
  theirs, "retrieval_chance", "shape_retrieval": the share whose own caption scores above
  its shape-changed one (chance 50%)}."""
  from sama_jax.encoders import build_encoders, world_vocabulary

  if steps < 1 or batch_size < 2 or pool < batch_size:
    raise ValueError(f"steps={steps}, batch_size={batch_size}, pool={pool}: expected steps >= 1 and "
                     f"2 <= batch_size <= pool")
  if encoders_config.semantic != "world":
    raise ValueError(f"encoders.semantic={encoders_config.semantic!r}: only the world stand-in is pre-trained here")
  siglip = build_encoders(encoders_config).siglip
  frames, captions, swapped = world_frames(pool + batch_size, seed, height, width, **(world or {}))
  with tempfile.TemporaryDirectory() as folder:
    tokenizer = word_tokenizer(world_vocabulary(), folder)
    ids, mask = tokenize(tokenizer, captions, CAPTION_LEN)
    hard_ids, hard_mask = tokenize(tokenizer, swapped, CAPTION_LEN)
  pixels = np.asarray(preprocess(jnp.asarray(frames), siglip.config.image_size))
  # The last batch_size frames are held back to score retrieval.
  (pixels, test_pixels), (ids, test_ids), (mask, test_mask), (hard_ids, test_hard_ids), (hard_mask, test_hard_mask) = [
      (x[:pool], x[pool:]) for x in (pixels, ids, mask, hard_ids, hard_mask)]
  tower = CaptionTower(len(tokenizer), siglip.config.hidden_size, nnx.Rngs(seed + 1))
  scale = nnx.Param(jnp.array([np.log(10.0), -10.0], jnp.float32))  # log temperature, bias (the paper's init)
  model = nnx.List([siglip, tower, scale])
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(50, steps // 10 + 1), steps)
  optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, pixels, ids, mask):
    def loss_fn(model):
      vision, captions_, scale = model
      images = unit(vision(pixels)[1])
      return sigmoid_loss(images, captions_(ids, mask), scale[0], scale[1])

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  rng, losses = np.random.default_rng(seed), []
  for _ in tqdm(range(steps), desc="world SigLIP", unit="step", disable=not progress):
    chosen = rng.choice(pool, batch_size, replace=False)
    batch_ids, batch_mask = ids[chosen], mask[chosen]
    if shape_negatives:
      batch_ids = np.concatenate([batch_ids, hard_ids[chosen]])
      batch_mask = np.concatenate([batch_mask, hard_mask[chosen]])
    losses.append(float(step(model, optimizer, jnp.asarray(pixels[chosen]), jnp.asarray(batch_ids),
                             jnp.asarray(batch_mask))))

  @nnx.jit
  def score(model, pixels, ids, mask, hard_ids, hard_mask):
    """([N, N] every frame against every caption, [N] each frame against its shape-changed caption)."""
    vision, captions_, _ = model
    images = unit(vision(pixels)[1])
    return images @ captions_(ids, mask).T, (images * captions_(hard_ids, hard_mask)).sum(-1)

  scores, hard_scores = score(model, *map(jnp.asarray, (test_pixels, test_ids, test_mask, test_hard_ids,
                                                         test_hard_mask)))
  # Identical captions (the same scene description) count as a hit.
  same = (test_ids[:, None] == test_ids[None]).all(-1)
  hits = same[np.arange(batch_size), np.asarray(jnp.argmax(scores, axis=1))]
  return siglip, {"loss": losses, "retrieval": float(hits.mean()), "retrieval_chance": float(same.mean()),
                  "shape_retrieval": float(np.mean(np.asarray(jnp.diagonal(scores) > hard_scores)))}


def pretrain_for(config, steps: int, batch_size: int, seed: int, **kwargs) -> tuple[SiglipVision, dict]:
  """`pretrain` for a trainer config: its encoders, frame size and scene sampling."""
  from sama_jax.data.config import world_options

  options = world_options(config.data)
  return pretrain(config.encoders, steps=steps, batch_size=batch_size, seed=seed, height=options["height"],
                  width=options["width"],
                  world={"sampling": options["sampling"], "held_out_from": options["held_out_from"]}, **kwargs)


def describe(history: dict, batch_size: int) -> str:
  """One line on a `pretrain` run: loss at the start and end, caption retrieval, and own
  caption against its shape-changed one."""
  losses = history["loss"]
  return (f"loss {losses[0]:.3f} -> {np.mean(losses[-20:]):.3f} over {len(losses)} steps; caption retrieval "
          f"{100 * history['retrieval']:.0f}% of {batch_size} new frames (chance "
          f"{100 * history['retrieval_chance']:.0f}%); own caption above its shape-changed one for "
          f"{100 * history['shape_retrieval']:.0f}% (chance 50%)")


def save(siglip: SiglipVision, path: str) -> str:
  """Writes the vision tower's weights to `path` (an Orbax checkpoint folder)."""
  import orbax.checkpoint as ocp

  path = os.path.abspath(path)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, nnx.to_pure_dict(nnx.state(siglip, nnx.Param)), force=True)
  return path


def load_into(siglip: SiglipVision, path: str) -> None:
  """Overwrites `siglip`'s weights with those `save` wrote to `path`; the shapes must match."""
  import orbax.checkpoint as ocp

  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no world SigLIP checkpoint at {path}; write one with python -m sama_jax.world_siglip")
  state = nnx.state(siglip, nnx.Param)
  target = nnx.to_pure_dict(state)
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(path, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target))
  nnx.replace_by_pure_dict(state, restored)
  nnx.update(siglip, state)


def prepare(demo, workdir: str, progress: bool = True) -> str | None:
  """Pre-trains the world SigLIP for a demo config (configs/demo.py: `demo.siglip` steps,
  batch and pool) into WORKDIR/world_siglip, unless it is there already (a rerun reuses
  it), and points both stages' encoders at it (`encoders.world_siglip_init`, in place).
  Returns the folder, or None when `demo.siglip.steps` is 0 (the random stand-in)."""
  if not demo.siglip.steps:
    return None
  path = os.path.abspath(os.path.join(workdir, "world_siglip"))
  if not os.path.isdir(path):
    siglip, history = pretrain_for(demo.stage1, demo.siglip.steps, demo.siglip.batch, demo.siglip.seed,
                                   pool=demo.siglip.pool, progress=progress)
    save(siglip, path)
    print(f"world SigLIP: {describe(history, demo.siglip.batch)}")
  for stage in (demo.stage1, demo.stage2):
    stage.encoders.world_siglip_init = path
  return path


def main(argv=None) -> int:
  from sama_jax.config import load_config

  p = argparse.ArgumentParser(prog="python -m sama_jax.world_siglip", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="folder to write the vision tower's checkpoint to")
  p.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "configs", "stage1_tiny.py"),
                 help="a trainer config: its encoders and world (resolution, scene sampling) are used")
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--shape-negatives", action="store_true",
                 help="add each frame's caption with one shape changed as a negative")
  a = p.parse_args(argv)
  siglip, history = pretrain_for(load_config(a.config), a.steps, a.batch, a.seed,
                                 shape_negatives=a.shape_negatives)
  print(f"{describe(history, a.batch)}; wrote {save(siglip, a.out)}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
