"""Flow-matching interpolation, targets and losses (SAMA_METHOD.md §5.4–5.6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

SEMANTIC_TARGETS = ("velocity", "x0_l1")


def batch_broadcast(values: jax.Array, like: jax.Array) -> jax.Array:
  """[B] float32 values shaped [B, 1, ..., 1] to broadcast over the trailing axes of `like`."""
  return values.astype(jnp.float32).reshape((-1,) + (1,) * (like.ndim - 1))


def interpolate(x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> jax.Array:
  """x_σ = (1 − σ)·x0 + σ·ε, σ: [B] broadcast over the remaining axes of x0."""
  s = batch_broadcast(sigma, x0)
  return ((1.0 - s) * x0.astype(jnp.float32) + s * noise.astype(jnp.float32)).astype(x0.dtype)


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
  """v = ε − x0 (the code's sign; the paper's is the opposite)."""
  return noise.astype(jnp.float32) - x0.astype(jnp.float32)


# Training an x0-predicting model on the velocity loss divides its error by σ; below this
# level the divisor is held (as JiT does), so the loss weight stays bounded near σ = 0.
X0_SIGMA_MIN = 0.05


def velocity_from_x0(x0_pred: jax.Array, x_t: jax.Array, sigma: jax.Array) -> jax.Array:
  """v = (x_σ − x̂0) / σ, from x_σ = (1 − σ)·x0 + σ·ε and v = ε − x0 (exact for σ > 0).
  x0_pred, x_t: [B, ...]; sigma: [B]. float32."""
  return (x_t.astype(jnp.float32) - x0_pred.astype(jnp.float32)) / batch_broadcast(sigma, x_t)


def flow_loss(velocity: jax.Array, x0: jax.Array, noise: jax.Array, weight: jax.Array) -> jax.Array:
  """Weighted MSE over every target element, float32. velocity, x0, noise: [B, ...];
  weight: [B]. Returns the mean over the batch of weight · mean squared error."""
  err = jnp.square(velocity.astype(jnp.float32) - velocity_target(x0, noise))
  per_example = jnp.mean(err.reshape(err.shape[0], -1), axis=1)
  return jnp.mean(per_example * weight.astype(jnp.float32))


def semantic_loss(prediction: jax.Array, s0: jax.Array, noise: jax.Array, target: str = "velocity",
                  velocity_scale: jax.Array | None = None) -> jax.Array:
  """Mean-reduced L1 on the semantic slots: against ε − s0 ("velocity", our default,
  consistent with the sampler) or against s0 ("x0_l1", the paper's wording).
  velocity_scale [B] multiplies the velocity goal (σ / max(σ, X0_SIGMA_MIN) for x0 models)."""
  if target not in SEMANTIC_TARGETS:
    raise ValueError(f"semantic loss target {target!r}; expected one of {SEMANTIC_TARGETS}")
  goal = velocity_target(s0, noise) if target == "velocity" else s0.astype(jnp.float32)
  if target == "velocity" and velocity_scale is not None:
    goal = goal * batch_broadcast(velocity_scale, goal)
  return jnp.mean(jnp.abs(prediction.astype(jnp.float32) - goal))
