"""Spatially tiled VAE encode/decode with overlap blending (DiffSynth's scheme, SAMA_METHOD.md §6.3).

Tiles and strides are in latent units (x8 in pixels when encoding). Tile origins lie on
multiples of the stride; an origin is skipped when the tile before it already reaches the
end. Each tile's output is weighted by a mask that ramps linearly, (i+1)/L for i < L with
L = size - stride, on the edges it shares with another tile (not on the frame border), the
min of the row and column ramps; the weighted sum is divided by the summed weights. Decoded
tiles are blended unclamped and the result is clamped once.

Every tile runs through one jitted encode/decode per distinct tile shape (at most four: the
last row and column may be shorter), so peak memory is that of one tile.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from flax import nnx

from sama_jax.models.vae import WanVAE, check_frames, check_latents, spatial_factor


def tile_spans(length: int, size: int, stride: int) -> list[tuple[int, int]]:
  """[(start, end)] of the tiles along one axis of `length`; the last may be cut by the end."""
  if size <= 0 or stride <= 0 or stride > size:
    raise ValueError(f"tile size {size} and stride {stride} must be positive with stride <= size "
                     "(tiles must touch or overlap)")
  spans = []
  for start in range(0, length, stride):
    if start >= stride and start - stride + size >= length:
      continue  # the previous tile already reaches the end
    spans.append((start, min(start + size, length)))
  return spans


def ramp(length: int, ramp_start: bool, ramp_end: bool, border: int) -> np.ndarray:
  """[length] weights: 1, with linear ramps of `border` samples at the ends that are shared."""
  w = np.ones(length, np.float32)
  up = (np.arange(border, dtype=np.float32) + 1) / max(border, 1)
  if ramp_start and border:
    w[:border] = up[:length]
  if ramp_end and border:
    w[-border:] = up[::-1][-length:]
  return w


def tile_mask(span_h, span_w, full: tuple[int, int], border: tuple[int, int], scale: int) -> np.ndarray:
  """[h, w] blend weights of one output tile (`scale`: output pixels per latent unit of the spans)."""
  (h0, h1), (w0, w1) = span_h, span_w
  mh = ramp((h1 - h0) * scale, h0 > 0, h1 < full[0], border[0])
  mw = ramp((w1 - w0) * scale, w0 > 0, w1 < full[1], border[1])
  return np.minimum(mh[:, None], mw[None, :])


def _blend(run: Callable, source: np.ndarray, grid: tuple[int, int], tile, stride, in_scale: int,
           out_scale: int) -> np.ndarray:
  """Runs `run` on every tile of `source` [B, T, H, W, C] (grid = (H, W) in latent units; a
  tile spans `in_scale` source pixels per latent unit and `out_scale` output pixels) and
  blends the outputs."""
  border = tuple((s - d) * out_scale for s, d in zip(tile, stride))
  total = weight = None
  for span_h in tile_spans(grid[0], tile[0], stride[0]):
    for span_w in tile_spans(grid[1], tile[1], stride[1]):
      crop = source[:, :, span_h[0] * in_scale:span_h[1] * in_scale, span_w[0] * in_scale:span_w[1] * in_scale]
      out = np.asarray(run(crop), np.float32)
      if total is None:
        full = out.shape[:2] + (grid[0] * out_scale, grid[1] * out_scale) + out.shape[4:]
        total, weight = np.zeros(full, np.float32), np.zeros(full[2:4], np.float32)
      mask = tile_mask(span_h, span_w, grid, border, out_scale)
      rows = slice(span_h[0] * out_scale, span_h[0] * out_scale + out.shape[2])
      cols = slice(span_w[0] * out_scale, span_w[0] * out_scale + out.shape[3])
      total[:, :, rows, cols] += out * mask[:, :, None]
      weight[rows, cols] += mask
  return total / weight[:, :, None]


def _jitted(vae: WanVAE, method: str) -> Callable:
  graphdef, state = nnx.split(vae)
  if method == "encode":
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x))
  else:
    fn = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z, clamp=False))
  return lambda x: fn(state, x)


def encode_tiled(vae: WanVAE, frames, tile: tuple[int, int] | None = None,
                 stride: tuple[int, int] | None = None) -> np.ndarray:
  """frames [B, 1+4k, H, W, C] -> latents [B, 1+k, H/8, W/8, z] (numpy float32), tile by tile.
  tile / stride in latent units; default config.tile_size / config.tile_stride."""
  check_frames(np.shape(frames), vae.config)
  f = spatial_factor(vae.config)
  tile, stride = tuple(tile or vae.config.tile_size), tuple(stride or vae.config.tile_stride)
  grid = (np.shape(frames)[2] // f, np.shape(frames)[3] // f)
  return _blend(_jitted(vae, "encode"), np.asarray(frames), grid, tile, stride, f, 1)


def decode_tiled(vae: WanVAE, latents, tile: tuple[int, int] | None = None,
                 stride: tuple[int, int] | None = None) -> np.ndarray:
  """latents [B, T_lat, h, w, z] -> frames [B, 1+4(T_lat-1), 8h, 8w, C] (numpy float32) in [-1, 1].
  tile / stride in latent units; default config.tile_size / config.tile_stride."""
  check_latents(np.shape(latents), vae.config)
  f = spatial_factor(vae.config)
  tile, stride = tuple(tile or vae.config.tile_size), tuple(stride or vae.config.tile_stride)
  grid = tuple(np.shape(latents)[2:4])
  return np.clip(_blend(_jitted(vae, "decode"), np.asarray(latents), grid, tile, stride, 1, f), -1.0, 1.0)
