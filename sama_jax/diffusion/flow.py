"""Flow-matching interpolation, targets and losses (SAMA_METHOD.md §5.4–5.6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

SEMANTIC_TARGETS = ("velocity", "x0_l1")


def interpolate(x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> jax.Array:
  """x_σ = (1 − σ)·x0 + σ·ε, σ: [B] broadcast over the remaining axes of x0."""
  s = sigma.reshape((-1,) + (1,) * (x0.ndim - 1)).astype(jnp.float32)
  return ((1.0 - s) * x0.astype(jnp.float32) + s * noise.astype(jnp.float32)).astype(x0.dtype)


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
  """v = ε − x0 (the code's sign; the paper's is the opposite)."""
  return noise.astype(jnp.float32) - x0.astype(jnp.float32)


def flow_loss(velocity: jax.Array, x0: jax.Array, noise: jax.Array, weight: jax.Array) -> jax.Array:
  """Weighted MSE over every target element, float32. velocity, x0, noise: [B, ...];
  weight: [B]. Returns the mean over the batch of weight · mean squared error."""
  err = jnp.square(velocity.astype(jnp.float32) - velocity_target(x0, noise))
  per_example = jnp.mean(err.reshape(err.shape[0], -1), axis=1)
  return jnp.mean(per_example * weight.astype(jnp.float32))


def semantic_loss(prediction: jax.Array, s0: jax.Array, noise: jax.Array, target: str = "velocity") -> jax.Array:
  """Mean-reduced L1 on the semantic slots: against ε − s0 ("velocity", our default,
  consistent with the sampler) or against s0 ("x0_l1", the paper's wording)."""
  if target not in SEMANTIC_TARGETS:
    raise ValueError(f"semantic loss target {target!r}; expected one of {SEMANTIC_TARGETS}")
  goal = velocity_target(s0, noise) if target == "velocity" else s0.astype(jnp.float32)
  return jnp.mean(jnp.abs(prediction.astype(jnp.float32) - goal))
