"""Noise levels for training and sampling (SAMA_METHOD.md §4.5, §5.5).

Both use the shift map σ' = s·σ / (1 + (s − 1)·σ) (s = 5 for SAMA) on a uniform grid:
training on linspace(1, 0, 1001)[:-1] (1000 levels), sampling on linspace(1, 0, n + 1)[:-1]
then 0. The training loss weight is DiffSynth's Gaussian bump over the 1000 timesteps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
  """σ' = s·σ / (1 + (s − 1)·σ): spends more steps at high noise for s > 1."""
  return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def training_sigmas(shift: float = 5.0, num: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
  """The `num` shifted noise levels training draws from, descending from 1. [num] float64."""
  return shift_sigmas(np.linspace(1.0, 0.0, num + 1)[:-1], shift)


def training_weights(sigmas: np.ndarray) -> np.ndarray:
  """DiffSynth's loss weight per level: y(t) = exp(−2((t − 500)/1000)²) with t = 1000σ,
  shifted to 0 at its minimum and scaled to mean 1 over the levels. [num] float64."""
  t = NUM_TRAIN_TIMESTEPS * sigmas
  y = np.exp(-2.0 * ((t - NUM_TRAIN_TIMESTEPS / 2) / NUM_TRAIN_TIMESTEPS) ** 2)
  y = y - y.min()
  return y * len(sigmas) / y.sum()


def sample_training_sigmas(rng: jax.Array, batch: int, shift: float = 5.0, per_sample: bool = False,
                           weighted: bool = True):
  """Draws noise levels for a batch: one level index for the whole batch as the released
  trainer does (per_sample=False) or one per example. Returns (sigma [B], weight [B])
  as float32; weight is all ones when `weighted` is False."""
  sigmas = training_sigmas(shift)
  weights = training_weights(sigmas) if weighted else np.ones_like(sigmas)
  index = jax.random.randint(rng, (batch if per_sample else 1,), 0, len(sigmas))
  index = jnp.broadcast_to(index, (batch,))
  return jnp.asarray(sigmas, jnp.float32)[index], jnp.asarray(weights, jnp.float32)[index]


def sampling_sigmas(steps: int = 50, shift: float = 5.0) -> np.ndarray:
  """Descending noise levels for an Euler sampler, ending with 0. [steps + 1] float64.
  steps = 50, shift = 5 gives timesteps 1000, 995.935, 991.736, ..., 92.593 then 0."""
  if steps < 1:
    raise ValueError(f"steps={steps}; the sampler needs at least 1 step")
  return np.append(shift_sigmas(np.linspace(1.0, 0.0, steps + 1)[:-1], shift), 0.0)
