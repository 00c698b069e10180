"""The pixel patch codec: a lossless, parameter-free stand-in for the VAE with the same
`encode` / `decode` interface (SYNTHETIC_WORLD.md), used by the synthetic world.

Space-to-depth by `factor`, no temporal compression:
  frames [B, T, H, W, 3] in [-1, 1] <-> latents [B, T, H/f, W/f, 3·f·f]
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from einops import rearrange


@dataclasses.dataclass(frozen=True)
class PatchCodec:
  factor: int = 4

  @property
  def channels(self) -> int:
    return 3 * self.factor ** 2

  def latent_frames(self, frames: int) -> int:
    return frames

  def encode(self, frames: jax.Array) -> jax.Array:
    """frames [B, T, H, W, 3] in [-1, 1] -> latents [B, T, H/f, W/f, 3f²]."""
    if frames.ndim != 5 or frames.shape[-1] != 3:
      raise ValueError(f"frames have shape {tuple(frames.shape)}; expected [B, T, H, W, 3]")
    if frames.shape[2] % self.factor or frames.shape[3] % self.factor:
      raise ValueError(f"frame size {frames.shape[2]}x{frames.shape[3]} is not divisible by the "
                       f"codec factor {self.factor}")
    f = self.factor
    return rearrange(frames.astype(jnp.float32), "b t (h p) (w q) c -> b t h w (p q c)", p=f, q=f)

  def decode(self, latents: jax.Array) -> jax.Array:
    """latents [B, T, h, w, 3f²] -> frames [B, T, h·f, w·f, 3] clipped to [-1, 1]."""
    if latents.ndim != 5 or latents.shape[-1] != self.channels:
      raise ValueError(f"latents have shape {tuple(latents.shape)}; expected [B, T, h, w, {self.channels}]")
    f = self.factor
    return jnp.clip(rearrange(latents, "b t h w (p q c) -> b t (h p) (w q) c", p=f, q=f), -1.0, 1.0)
