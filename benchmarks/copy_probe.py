"""Diagnostic for training SAMA from scratch: how long until the DiT learns in-context
copying (a target token reading the source token at its own position)?

    python benchmarks/copy_probe.py --lr 1e-3 --steps 2000    # clicks after ~1450 steps
    python benchmarks/copy_probe.py --lr 3e-3 --steps 1200    # clicks after ~600 steps
    python benchmarks/copy_probe.py --mode channel --steps 300 # channel concat: ~150 steps

Trains the world config's DiT (configs/stage1_tiny.py) on fresh random latents each step
whose target equals the source, with uniform loss weights over per-example levels, and
prints the x0 error of a one-step prediction on new data at sigma 0.98 and 0.5. A model
that ignores the source sits at the data variance (0.25) at sigma 0.98 and at the
optimal blind denoiser's 0.20 at sigma 0.5. Nothing is asserted.

What it showed (2-core CPU, dim 256, 4 layers, 3x8x8 latents): in token mode (SAMA's
in-context source) the errors stay at 0.27 / 0.20 for ~1450 steps at lr 1e-3 and then
fall within 150 steps to 0.006 / 0.003 — a phase change, as with induction heads; at lr
3e-3 it comes after ~600 steps; rope_theta 100 or 10 instead of 10000 changes nothing.
Channel mode ([x_t ; z_s], not the released model) copies after ~150 steps. Hence the
world recipe's lr 3e-3. An earlier version of this probe fitted one fixed batch, which a
model can memorise without reading the source; it only showed that a 128-wide stream is
too narrow for a token's 192 input features (2x2 patch x 48 codec channels), hence width 256.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sama_jax.config import load_config
from sama_jax.parallel.mesh import make_mesh, mesh_config
from sama_jax.train.config import train_config
from sama_jax.train.state import create_train_state
from sama_jax.train.step import make_train_step


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--mode", default="token", choices=["token", "channel"])
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--steps", type=int, default=1200)
  p.add_argument("--frames", type=int, default=3)
  p.add_argument("--theta", type=float, default=10000.0)
  a = p.parse_args()
  c = load_config("configs/stage1_tiny.py")
  c.model.source_mode, c.model.rope_theta = a.mode, a.theta
  tc = train_config(learning_rate=a.lr, ema_decay=0.0, per_sample_timesteps=True, loss_weighting=False,
                    timestep_shift=3.0, warmup_steps=20, total_steps=a.steps)
  mc = mesh_config(data=1)
  graphdef, optimizer, state, _ = create_train_state(c.model, tc, make_mesh(mc, jax.devices()[:1]), mc.rules)
  step = jax.jit(make_train_step(graphdef, optimizer, tc))
  rng = np.random.default_rng(0)

  def batch():
    x = jnp.asarray(rng.standard_normal((4, a.frames, 8, 8, c.model.in_channels)) * 0.5, jnp.float32)
    return {"latents": x, "source": x, "text": jnp.zeros((4, 24, c.model.text_dim)), "task": jnp.zeros(4, jnp.int32)}

  @jax.jit
  def x0_error(params, b, sigma):
    model = nnx.merge(graphdef, params)
    noise = jax.random.normal(jax.random.key(5), b["latents"].shape)
    xt = (1 - sigma) * b["latents"] + sigma * noise
    v, _ = model(xt, jnp.full((4,), 1000 * sigma), b["text"], source=b["source"])
    return jnp.mean((xt - sigma * v - b["latents"]) ** 2)

  print("| step | flow loss | x0 error at sigma 0.98 | at 0.5 |\n|---|---|---|---|")
  for i in range(a.steps):
    state, m = step(state, batch(), jax.random.key(i))
    if i % 100 == 0 or i == a.steps - 1:
      b = batch()
      print(f"| {i} | {float(m['loss_flow']):.3f} | {float(x0_error(state['params'], b, 0.98)):.4f} | "
            f"{float(x0_error(state['params'], b, 0.5)):.4f} |", flush=True)


if __name__ == "__main__":
  main()
