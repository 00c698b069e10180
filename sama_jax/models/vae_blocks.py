"""Layers of the Wan2.1 causal video VAE (diffusers `AutoencoderKLWan` semantics), channels last.

Time is causal: a kernel-3 convolution at frame t sees frames t-2, t-1, t and nothing later.
A clip is run in chunks (SAMA_METHOD.md §6.3: the first frame alone, then 4 frames at a time
in the encoder; one latent frame at a time in the decoder). Each causal layer hands the frames
the next chunk needs to see across the boundary through a `History`; before the first frame
that history is zeros, which makes the chunked result equal to running the whole clip at once.
Two layers treat the first chunk specially, as the reference does: the temporal downsampler
passes the first frame through alone, and the temporal upsampler neither doubles the first
frame nor lets it into the history of the frames that follow.

Tensors: x [B, T, H, W, C]; a history entry [B, F, H, W, C] with F = 2 (F = 1 for the
temporal downsampler).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import nnx

from sama_jax.models import layers
from sama_jax.models.attention import xla_attention

CONV_PAST = 2  # frames a kernel-3 causal conv sees before the current one
NORM_EPS = 1e-12  # torch F.normalize's floor on the vector norm


class History:
  """The causal history one chunk reads from the previous chunk, and the one it leaves.

  `past` lists, in call order, what every causal layer left after the previous chunk; None on
  the first chunk of a clip. Layers call `take()` then `leave(frames)` once per chunk, always
  in the same order, so `left` has the structure of `past` and a chunk step is a pure function
  (past entries in, left entries out) that `lax.scan` can carry. Lives for one trace only.
  """

  def __init__(self, past: list[jax.Array] | None = None):
    self.first = past is None
    self._past = None if past is None else list(past)
    self.left: list[jax.Array] = []

  def take(self) -> jax.Array | None:
    return None if self._past is None else self._past[len(self.left)]

  def leave(self, frames: jax.Array) -> None:
    self.left.append(frames)


def _conv_kwargs(config, names_len: int):
  return dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype),
              kernel_metadata=layers.logical((None,) * names_len),
              bias_metadata=layers.logical((None,)))


class CausalConv3d(nnx.Conv):
  """Conv3d over [B, T, H, W, C]: zero padding kernel//2 on both sides in space, and the
  previous chunk's last kt-1 frames (zeros before the first frame) in front in time."""

  def __init__(self, in_dim: int, out_dim: int, kernel: tuple[int, int, int], config, rngs: nnx.Rngs):
    kt, kh, kw = kernel
    super().__init__(in_dim, out_dim, kernel, padding=((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)),
                     rngs=rngs, **_conv_kwargs(config, 5))
    self.past_frames = kt - 1

  def step(self, x: jax.Array, past: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """x [B, T, H, W, C], past [B, kt-1, H, W, C] or None (zeros) -> (y [B, T, H', W', C'],
    the last kt-1 input frames, for the next chunk)."""
    if past is None:
      past = jnp.zeros(x.shape[:1] + (self.past_frames,) + x.shape[2:], x.dtype)
    x = jnp.concatenate([past.astype(x.dtype), x], axis=1)
    return super().__call__(x), x[:, x.shape[1] - self.past_frames:]

  def __call__(self, x: jax.Array, history: History | None = None) -> jax.Array:
    if self.past_frames == 0:  # pointwise in time: nothing crosses a chunk boundary
      return super().__call__(x)
    y, keep = self.step(x, history.take())
    history.leave(keep)
    return y


class ChannelRMSNorm(nnx.Module):
  """x / max(||x||₂, 1e-12) · sqrt(C) · gamma over the channel axis, computed in float32
  (diffusers `WanRMS_norm`: F.normalize over channels, no bias)."""

  def __init__(self, dim: int, config, rngs: nnx.Rngs):
    self.gamma = layers.param(nnx.initializers.ones, (dim,), (None,), config, rngs)
    self.scale = float(np.sqrt(dim))

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(xf * xf, axis=-1, keepdims=True))
    y = xf / jnp.maximum(norm, NORM_EPS) * self.scale * self.gamma[...].astype(jnp.float32)
    return y.astype(x.dtype)


class ResidualBlock(nnx.Module):
  """x -> shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))), convs causal 3x3x3."""

  def __init__(self, in_dim: int, out_dim: int, config, rngs: nnx.Rngs):
    self.norm1 = ChannelRMSNorm(in_dim, config, rngs)
    self.conv1 = CausalConv3d(in_dim, out_dim, (3, 3, 3), config, rngs)
    self.norm2 = ChannelRMSNorm(out_dim, config, rngs)
    self.conv2 = CausalConv3d(out_dim, out_dim, (3, 3, 3), config, rngs)
    self.conv_shortcut = CausalConv3d(in_dim, out_dim, (1, 1, 1), config, rngs) if in_dim != out_dim else None

  def __call__(self, x: jax.Array, history: History) -> jax.Array:
    shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
    x = self.conv1(jax.nn.silu(self.norm1(x)), history)
    x = self.conv2(jax.nn.silu(self.norm2(x)), history)
    return x + shortcut


class AttentionBlock(nnx.Module):
  """Single-head self-attention over the pixels of each frame separately, with a residual."""

  def __init__(self, dim: int, config, rngs: nnx.Rngs):
    self.norm = ChannelRMSNorm(dim, config, rngs)
    self.to_qkv = layers.dense(dim, 3 * dim, (None, None), config, rngs)
    self.proj = layers.dense(dim, dim, (None, None), config, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, h, w, c = x.shape
    qkv = self.to_qkv(self.norm(x))
    q, k, v = (rearrange(y, "b t h w c -> (b t) (h w) 1 c") for y in jnp.split(qkv, 3, axis=-1))
    out = rearrange(xla_attention(q, k, v), "(b t) (h w) 1 c -> b t h w c", b=b, h=h)
    return x + self.proj(out).astype(x.dtype)


class Resample(nnx.Module):
  """2x spatial down/upsampling, and 2x in time for the "3d" modes.

  downsample: zero-pad one row/column at the bottom/right, 3x3 conv with stride 2; "3d" then
    convolves pairs of frames (kernel 3, stride 2) with the previous chunk's last frame in front.
  upsample: "3d" first doubles the frames (causal time conv to 2C channels, split into two
    frames each), then nearest 2x in space and a 3x3 conv to `out_dim` (default dim // 2).
  """

  MODES = ("downsample2d", "downsample3d", "upsample2d", "upsample3d")

  def __init__(self, dim: int, mode: str, config, rngs: nnx.Rngs, out_dim: int | None = None):
    if mode not in self.MODES:
      raise ValueError(f"resample mode {mode!r}; expected one of {self.MODES}")
    self.mode = mode
    kwargs = _conv_kwargs(config, 4)
    if mode.startswith("down"):
      self.resample = nnx.Conv(dim, dim, (3, 3), strides=(2, 2), padding=((0, 1), (0, 1)), rngs=rngs, **kwargs)
      self.time_conv = (nnx.Conv(dim, dim, (3, 1, 1), strides=(2, 1, 1), padding="VALID", rngs=rngs,
                                 **_conv_kwargs(config, 5)) if mode == "downsample3d" else None)
    else:
      out_dim = dim // 2 if out_dim is None else out_dim
      self.resample = nnx.Conv(dim, out_dim, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs, **kwargs)
      self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), config, rngs) if mode == "upsample3d" else None

  def __call__(self, x: jax.Array, history: History) -> jax.Array:
    if self.mode == "upsample3d":
      x = self._double_frames(x, history)
    if self.mode.startswith("up"):
      x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)  # nearest-exact at scale 2
    x = self.resample(x)
    if self.mode == "downsample3d":
      x = self._halve_frames(x, history)
    return x

  def _halve_frames(self, x: jax.Array, history: History) -> jax.Array:
    """[B, T, ...] -> [B, T/2, ...]; on the first chunk the single frame passes through."""
    past = history.take()
    history.leave(x[:, -1:])
    if past is None:
      return x
    return self.time_conv(jnp.concatenate([past.astype(x.dtype), x], axis=1))

  def _double_frames(self, x: jax.Array, history: History) -> jax.Array:
    """[B, T, ...] -> [B, 2T, ...]; the first chunk's frame is kept single and, as in the
    reference, is not part of the history the later frames see (they see zeros)."""
    past = history.take()
    if past is None:
      history.leave(jnp.zeros(x.shape[:1] + (CONV_PAST,) + x.shape[2:], x.dtype))
      return x
    y, keep = self.time_conv.step(x, past)
    history.leave(keep)
    return rearrange(y, "b t h w (two c) -> b (t two) h w c", two=2)


class MidBlock(nnx.Module):
  """Residual block, per-frame attention, residual block."""

  def __init__(self, dim: int, config, rngs: nnx.Rngs):
    self.resnets = nnx.List([ResidualBlock(dim, dim, config, rngs) for _ in range(2)])
    self.attention = AttentionBlock(dim, config, rngs)

  def __call__(self, x: jax.Array, history: History) -> jax.Array:
    x = self.resnets[0](x, history)
    return self.resnets[1](self.attention(x), history)
