"""Diagnostic for the demo's open problem: can the tiny SAMA DiT fit flow matching on one
fixed batch whose target equals its source (a pure copy task)?

    python benchmarks/flow_fit_probe.py --dim 128 --steps 400   # too narrow: plateaus
    python benchmarks/flow_fit_probe.py --dim 256 --steps 400   # fits

Prints the flow loss every 100 steps; nothing is asserted. What it showed in the first
session (2-core CPU): with width 128 the loss plateaus near 0.38-0.42 and the velocity
error at sigma = 0.9 stays at 0.39 (target power 1.23): a token carries 192 input
features (2x2 patch of 48 patch-codec channels) and the velocity must reproduce the
token's noise, which no 128-wide residual stream can carry. With width 256 the error at
sigma = 0.9 / 0.5 falls to 0.08 / 0.07 in 400 steps. Hence configs/stage1_tiny.py uses 256.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from sama_jax.config import load_config
from sama_jax.parallel.mesh import make_mesh, mesh_config
from sama_jax.train.config import train_config
from sama_jax.train.state import create_train_state
from sama_jax.train.step import make_train_step


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--mode", default="token", choices=["token", "channel"])
  p.add_argument("--dim", type=int, default=256)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--steps", type=int, default=1000)
  a = p.parse_args()
  c = load_config("configs/stage1_tiny.py")
  c.model.source_mode, c.model.dim, c.model.ffn_dim = a.mode, a.dim, 2 * a.dim
  tc = train_config(learning_rate=a.lr, ema_decay=0.0, per_sample_timesteps=True, loss_weighting=False,
                    timestep_shift=1.0, warmup_steps=20, total_steps=a.steps)
  mc = mesh_config(data=1)
  graphdef, optimizer, state, _ = create_train_state(c.model, tc, make_mesh(mc, jax.devices()[:1]), mc.rules)
  step = jax.jit(make_train_step(graphdef, optimizer, tc))
  rng = np.random.default_rng(0)
  x = jnp.asarray(np.clip(rng.standard_normal((4, 3, 8, 8, c.model.in_channels)) * 0.5, -1, 1), jnp.float32)
  batch = {"latents": x, "source": x, "text": jnp.asarray(rng.standard_normal((4, 24, c.model.text_dim)), jnp.float32),
           "task": jnp.zeros(4, jnp.int32)}
  print("| step | flow loss | grad norm |\n|---|---|---|")
  for i in range(a.steps):
    state, m = step(state, batch, jax.random.key(0))
    if i % 100 == 0 or i == a.steps - 1:
      print(f"| {i} | {float(m['loss_flow']):.3f} | {float(m['grad_norm']):.3f} |", flush=True)


if __name__ == "__main__":
  main()
