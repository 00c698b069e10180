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


def guided_velocity(velocity_fn: VelocityFn, x, s, t, text, negative_text, scale: float,
                    source_scale: float = 0.0, no_source_fn: VelocityFn | None = None):
  """v = v_neg + scale·(v_pos − v_neg) for the latents and the semantic tokens, with both
  branches in one batch of 2B. scale == 1 runs the positive branch alone.

  source_scale s_I > 0 adds the released code's optional source term (SAMA_METHOD.md §4.7):
  v = v_IT + s_I·(v_IT − v_0T) + (scale − 1)·(v_IT − v_I0), where v_0T comes from
  `no_source_fn` (positive text, no source: another sequence length, so a separate pass).
  With s_I = 0 this is the text-only form above."""
  if scale == 1.0:
    v, vs = velocity_fn(x, t, text, s)
  else:
    double = lambda a: None if a is None else jnp.concatenate([a, a], axis=0)
    v2, vs2 = velocity_fn(double(x), double(t), jnp.concatenate([text, negative_text], axis=0), double(s))
    b = x.shape[0]
    combine = lambda a: None if a is None else a[b:] + scale * (a[:b] - a[b:])
    v, vs = combine(v2), combine(vs2)
  if not source_scale:
    return v, vs
  if no_source_fn is None:
    raise ValueError("source guidance needs the model's no-source velocity (no_source_fn)")
  # v above is v_I0 + scale·(v_IT − v_I0) = v_IT + (scale − 1)·(v_IT − v_I0); add s_I·(v_IT − v_0T).
  if scale == 1.0:
    positive, positive_s = v, vs
  else:
    positive, positive_s = v2[:b], None if vs2 is None else vs2[:b]
  u, us = no_source_fn(x, t, text, s)
  v = v + source_scale * (positive - u)
  vs = None if vs is None else vs + source_scale * (positive_s - us)
  return v, vs


def euler_sample(velocity_fn: VelocityFn, noise: jax.Array, text: jax.Array, negative_text: jax.Array,
                 semantic_noise: jax.Array | None = None, *, steps: int = 50, shift: float = 5.0,
                 guidance: float = 5.0, progress: Callable[[int], None] | None = None,
                 source_guidance: float = 0.0, no_source_fn: VelocityFn | None = None) -> jax.Array:
  """Integrates from `noise` (σ = 1) to data; returns the final latents (float32).

  Traceable: under `jax.jit` the whole loop is one `lax.fori_loop`. `progress(i)` is
  called from the device after step i (via `jax.debug.callback`) for progress bars.
  source_guidance > 0 turns on the two-scale mode of `guided_velocity` (needs no_source_fn).
  """
  if negative_text.shape != text.shape:
    raise ValueError(f"negative_text has shape {tuple(negative_text.shape)}; expected the text's "
                     f"{tuple(text.shape)}")
  sigmas = jnp.asarray(sampling_sigmas(steps, shift), jnp.float32)

  def body(i, carry):
    x, s = carry
    x, s = _euler_step(velocity_fn, x, s, sigmas[i], sigmas[i + 1], text, negative_text, guidance,
                       source_guidance, no_source_fn)
    if progress is not None:
      jax.debug.callback(progress, i)
    return x, s

  s = None if semantic_noise is None else semantic_noise.astype(jnp.float32)
  x, _ = jax.lax.fori_loop(0, steps, body, (noise.astype(jnp.float32), s))
  return x


def _euler_step(velocity_fn, x, s, sigma, sigma_next, text, negative_text, guidance, source_guidance=0.0,
                no_source_fn=None):
  t = jnp.full((x.shape[0],), NUM_TRAIN_TIMESTEPS, jnp.float32) * sigma
  v, vs = guided_velocity(velocity_fn, x, s, t, text, negative_text, guidance, source_guidance, no_source_fn)
  dt = sigma_next - sigma
  return x + v * dt, None if s is None else s + vs * dt
