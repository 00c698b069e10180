"""Diagnostic for training SAMA from scratch: how long until the DiT learns in-context
copying (a target token reading the source token at its own position)?

    python benchmarks/copy_probe.py --lr 1e-3 --steps 2000    # clicks after ~1450 steps
    python benchmarks/copy_probe.py --lr 3e-3 --steps 1200    # clicks after ~600 steps
    python benchmarks/copy_probe.py --mode channel --steps 300 # channel concat: ~150 steps
    python benchmarks/copy_probe.py --mode channel --frames 9 --data world --steps 400
    python benchmarks/copy_probe.py --mode channel --frames 9 --data world --whiten --steps 200

Trains the world config's DiT (configs/stage1_tiny.py) on identity pairs (target = source)
with uniform loss weights over per-example levels, and prints the x0 error of a one-step
prediction on held-out pairs at sigma 0.98 and 0.5 (and the held-out latents' variance,
the error of a model that ignores the source at sigma 1). Nothing is asserted. --data:
  gaussian   fresh N(0, 0.5²) latents each step, no text (the original probe);
  world      the world's stage-2 video-edit clips (their sources), patch-codec latents,
             the instructions through the world text encoder;
  scaled     gaussian, each latent pixel scaled by U(0.1, 2) (token norms vary as in the world);
  blocky     gaussian, constant over 4x4-latent-pixel blocks (spatially smooth);
  redundant  gaussian, each latent pixel's 3f² channels 16 copies of 3 values (a flat world patch).
--whiten maps latents through an orthonormal 4x4 DCT per patch and per-channel
standardisation (statistics of 4 batches) before training.

What it showed (2-core CPU, dim 256, 4 layers, 3x8x8 latents): in token mode (SAMA's
in-context source) the errors stay at 0.27 / 0.20 for ~1450 steps at lr 1e-3 and then
fall within 150 steps to 0.006 / 0.003 — a phase change, as with induction heads; at lr
3e-3 it comes after ~600 steps; rope_theta 100 or 10 instead of 10000 changes nothing,
nor do q/k RMSNorm gains started at 3 (--qk-scale 3: no change in 700 steps).
Channel mode ([x_t ; z_s], not the released model) copies after ~150 steps on Gaussian
latents — but not on the world's (docs/results.md, finding 5). An earlier version of this
probe fitted one fixed batch, which a model can memorise without reading the source; it
only showed that a 128-wide stream is too narrow for a token's 192 input features (2x2
patch x 48 codec channels), hence width 256.
"""

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sama_jax.config import load_config
from sama_jax.parallel.mesh import make_mesh, mesh_config
from sama_jax.train.config import train_config
from sama_jax.train.optimizer import learning_rate_table
from sama_jax.train.state import create_train_state
from sama_jax.train.step import make_train_step

DATA = ("gaussian", "world", "scaled", "blocky", "redundant")


def gaussian_source(rng, shape, kind):
  """[B, F, h, w, C] synthetic source latents of the given kind (see the module doc)."""
  z = rng.standard_normal(shape) * 0.5
  if kind == "scaled":
    z = z * rng.uniform(0.1, 2.0, shape[:-1] + (1,))
  elif kind == "blocky":
    b, f, h, w, c = shape
    z = np.repeat(np.repeat(rng.standard_normal((b, f, h // 4, w // 4, c)) * 0.5, 4, 2), 4, 3)
  elif kind == "redundant":
    z = np.tile(rng.standard_normal(shape[:-1] + (3,)) * 0.5, (1,) * (len(shape) - 1) + (shape[-1] // 3,))
  return z


def world_batches(c):
  """Endless model batches from the world's stage-2 video edits (sources only)."""
  from sama_jax.data.pipeline import stage2_pipeline
  from sama_jax.encoders import build_encoders, host_arrays, make_encode_fn
  c.data.stage2.image_edit = 0.0
  encoders = build_encoders(c.encoders)
  encode = make_encode_fn(encoders)
  for raw in stage2_pipeline(c.data):
    b = encode(host_arrays(encoders, raw))
    yield {"source": b["source"], "text": b["text"]}


def dct_whitener(samples: jax.Array, factor: int = 4):
  """A function latents -> whitened latents: orthonormal DCT over each factor x factor pixel
  patch of the (p q c) channels, then per-channel standardisation from `samples`."""
  n = factor
  d = np.array([[math.sqrt((1 if k == 0 else 2) / n) * math.cos(math.pi * (2 * i + 1) * k / (2 * n))
                 for i in range(n)] for k in range(n)], np.float32)

  def dct(z):
    z = z.reshape(z.shape[:-1] + (n, n, -1))
    return jnp.einsum("kp,lq,...pqc->...klc", d, d, z).reshape(z.shape[:-3] + (-1,))

  flat = dct(samples).reshape(-1, samples.shape[-1])
  mean, std = flat.mean(0), jnp.maximum(flat.std(0), 0.05)
  return lambda z: (dct(z) - mean) / std


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--mode", default="token", choices=["token", "channel"])
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--steps", type=int, default=1200)
  p.add_argument("--frames", type=int, default=3, help="latent frames (world clips: 9, the demo's)")
  p.add_argument("--theta", type=float, default=10000.0)
  p.add_argument("--qk-scale", type=float, default=1.0,
                 help="initial value of the q/k RMSNorm gains (1 = Wan's init)")
  p.add_argument("--data", default="gaussian", choices=DATA)
  p.add_argument("--whiten", action="store_true")
  p.add_argument("--dim", type=int, default=0, help="DiT width (0: the world config's 256; ffn 2x)")
  a = p.parse_args()
  c = load_config("configs/stage2_tiny.py")
  c.model.source_mode, c.model.rope_theta = a.mode, a.theta
  if a.dim:
    c.model.dim, c.model.ffn_dim = a.dim, 2 * a.dim
  c.data.num_frames = a.frames
  tc = train_config(learning_rate=a.lr, ema_decay=0.0, per_sample_timesteps=True, loss_weighting=False,
                    timestep_shift=3.0, warmup_steps=20, total_steps=a.steps)
  mc = mesh_config(data=1)
  graphdef, optimizer, state, _ = create_train_state(c.model, tc, make_mesh(mc, jax.devices()[:1]), mc.rules)
  if a.qk_scale != 1.0:
    state["params"] = jax.tree_util.tree_map_with_path(
        lambda path, x: x * a.qk_scale if any(getattr(k, "key", None) in ("norm_q", "norm_k") for k in path) else x,
        state["params"])
  step = jax.jit(make_train_step(graphdef, optimizer, tc))
  rates = learning_rate_table(tc)
  rng = np.random.default_rng(0)
  world = world_batches(c) if a.data == "world" else None
  shape = (4, a.frames, 8, 8, c.model.in_channels)

  def raw_batch():
    if world is not None:
      return next(world)
    return {"source": jnp.asarray(gaussian_source(rng, shape, a.data), jnp.float32),
            "text": jnp.zeros((4, 24, c.model.text_dim))}

  whiten = dct_whitener(jnp.concatenate([raw_batch()["source"] for _ in range(4)])) if a.whiten else None

  def batch():
    b = raw_batch()
    x = b["source"] if whiten is None else whiten(b["source"])
    return {"latents": x, "source": x, "text": b["text"], "task": jnp.zeros(x.shape[0], jnp.int32)}

  @jax.jit
  def x0_error(params, b, sigma):
    model = nnx.merge(graphdef, params)
    noise = jax.random.normal(jax.random.key(5), b["latents"].shape)
    xt = (1 - sigma) * b["latents"] + sigma * noise
    v, _ = model(xt, jnp.full((xt.shape[0],), 1000 * sigma), b["text"], source=b["source"])
    return jnp.mean((xt - sigma * v - b["latents"]) ** 2)

  held = [batch() for _ in range(3)]
  floor = np.mean([float(jnp.mean(b["latents"] ** 2)) for b in held])
  print(f"data {a.data}{' (whitened)' if a.whiten else ''}, {a.mode} mode, lr {a.lr}; held-out mean "
        f"square {floor:.4f} (a model blind to the source sits near it at sigma 1)")
  print("| step | flow loss | x0 error at sigma 0.98 | at 0.5 |\n|---|---|---|---|")
  for i in range(a.steps):
    state, m = step(state, batch(), jax.random.key(i), rates[i])
    if i % 100 == 0 or i == a.steps - 1:
      e98 = np.mean([float(x0_error(state["params"], b, 0.98)) for b in held])
      e50 = np.mean([float(x0_error(state["params"], b, 0.5)) for b in held])
      print(f"| {i} | {float(m['loss_flow']):.3f} | {e98:.4f} | {e50:.4f} |", flush=True)


if __name__ == "__main__":
  main()
