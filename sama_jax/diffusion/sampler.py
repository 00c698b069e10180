"""Euler sampling of the flow-matching ODE with classifier-free guidance on the text
(SAMA_METHOD.md §4.5–4.7): from σ = 1 to 0 on shifted levels, x ← x + v·(σ_next − σ).
The source stays clean in both branches, so guidance is text-only; the semantic tokens
are integrated alongside with the same levels and guidance, then discarded.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sama_jax.diffusion.schedule import NUM_TRAIN_TIMESTEPS, sampling_sigmas

# velocity_fn(latents [B,F,H,W,C], timestep [B], text [B,L,D], semantic [B,N,Ds] | None)
#   -> (velocity like latents, semantic velocity like semantic | None)
VelocityFn = Callable


def guided_velocity(velocity_fn: VelocityFn, x, s, t, text, negative_text, scale: float):
  """v = v_neg + scale·(v_pos − v_neg) for the latents and the semantic tokens, with both
  branches in one batch of 2B. scale == 1 runs the positive branch alone."""
  if scale == 1.0:
    return velocity_fn(x, t, text, s)
  double = lambda a: None if a is None else jnp.concatenate([a, a], axis=0)
  v, vs = velocity_fn(double(x), double(t), jnp.concatenate([text, negative_text], axis=0), double(s))
  b = x.shape[0]
  combine = lambda a: None if a is None else a[b:] + scale * (a[:b] - a[b:])
  return combine(v), combine(vs)


def euler_sample(velocity_fn: VelocityFn, noise: jax.Array, text: jax.Array, negative_text: jax.Array,
                 semantic_noise: jax.Array | None = None, *, steps: int = 50, shift: float = 5.0,
                 guidance: float = 5.0, progress: Callable[[int], None] | None = None) -> jax.Array:
  """Integrates from `noise` (σ = 1) to data; returns the final latents (float32).

  velocity_fn is called once per step (jit it, or pass a jitted closure); `progress(i)`
  is called after step i for progress bars.
  """
  if negative_text.shape != text.shape:
    raise ValueError(f"negative_text has shape {tuple(negative_text.shape)}; expected the text's "
                     f"{tuple(text.shape)}")
  sigmas = sampling_sigmas(steps, shift)
  step = jax.jit(lambda x, s, sigma, sigma_next: _euler_step(velocity_fn, x, s, sigma, sigma_next, text,
                                                             negative_text, guidance))
  x, s = noise.astype(jnp.float32), None if semantic_noise is None else semantic_noise.astype(jnp.float32)
  for i in range(steps):
    x, s = step(x, s, jnp.float32(sigmas[i]), jnp.float32(sigmas[i + 1]))
    if progress is not None:
      progress(i)
  return x


def _euler_step(velocity_fn, x, s, sigma, sigma_next, text, negative_text, guidance):
  t = jnp.full((x.shape[0],), NUM_TRAIN_TIMESTEPS, jnp.float32) * sigma
  v, vs = guided_velocity(velocity_fn, x, s, t, text, negative_text, guidance)
  dt = sigma_next - sigma
  return x + v * dt, None if s is None else s + vs * dt
