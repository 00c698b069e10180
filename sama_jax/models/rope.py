"""3D rotary position embeddings split over (t, h, w), as in Wan2.1.

A head of D channels holds D/2 rotation pairs of adjacent channels (2j, 2j+1), laid out
[t pairs | h pairs | w pairs] with h = w = 2·(D//6) channels and t the rest (44:42:42 for
D = 128). Axis a with d_a channels rotates pair j by position · theta^(-2j/d_a).
Tables are built in float64 on the host (as the reference does) and cast to float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange


def axis_channels(head_dim: int) -> tuple[int, int, int]:
  """Real channels per axis (t, h, w) for one head."""
  hw = 2 * (head_dim // 6)
  return head_dim - 2 * hw, hw, hw


def axis_tables(head_dim: int, max_len: int, theta: float) -> list[np.ndarray]:
  """Per-axis rotation angles: a list of three float64 arrays [max_len, d_a/2]."""
  positions = np.arange(max_len, dtype=np.float64)
  tables = []
  for d in axis_channels(head_dim):
    freqs = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    tables.append(np.outer(positions, freqs))
  return tables


def grid_rope(grid: tuple[int, int, int], head_dim: int, max_len: int, theta: float,
              offset: tuple[int, int, int] = (0, 0, 0)) -> tuple[jax.Array, jax.Array]:
  """cos, sin: [f·h·w, D/2] float32 for tokens on an (f, h, w) grid, row-major,
  with positions starting at `offset` on each axis."""
  for n, o, axis in zip(grid, offset, "thw"):
    if o + n > max_len:
      raise ValueError(f"{axis} positions reach {o + n} but the RoPE table covers {max_len} "
                       f"(model.rope_max_len)")
  f, h, w = grid
  angles_t, angles_h, angles_w = (table[o:o + n] for table, o, n in
                                  zip(axis_tables(head_dim, max_len, theta), offset, grid))
  angles = np.concatenate([
      np.broadcast_to(angles_t[:, None, None], (f, h, w, angles_t.shape[-1])),
      np.broadcast_to(angles_h[None, :, None], (f, h, w, angles_h.shape[-1])),
      np.broadcast_to(angles_w[None, None, :], (f, h, w, angles_w.shape[-1])),
  ], axis=-1).reshape(f * h * w, head_dim // 2)
  return jnp.asarray(np.cos(angles), jnp.float32), jnp.asarray(np.sin(angles), jnp.float32)


def grid_rope_at(grid: tuple[int, int, int], head_dim: int, max_len: int, theta: float,
                 offset: tuple[int, int, int], frame_offset: jax.Array) -> tuple[jax.Array, jax.Array]:
  """grid_rope with the temporal positions moved on by a traced scalar `frame_offset`
  (traceable, e.g. under lax.map over windows; values equal grid_rope's at
  offset + (frame_offset, 0, 0)). The caller checks the positions stay below max_len:
  a traced offset cannot be checked here and out-of-range slices are clamped."""
  f, h, w = grid
  angles_t, angles_h, angles_w = axis_tables(head_dim, max_len, theta)
  # cos/sin per axis then concatenate: elementwise, so bit-identical to grid_rope's tables.
  parts = []
  for fn in (np.cos, np.sin):
    table_t = jax.lax.dynamic_slice_in_dim(jnp.asarray(fn(angles_t), jnp.float32),
                                           offset[0] + frame_offset, f, axis=0)
    table_h = jnp.asarray(fn(angles_h[offset[1]:offset[1] + h]), jnp.float32)
    table_w = jnp.asarray(fn(angles_w[offset[2]:offset[2] + w]), jnp.float32)
    parts.append(jnp.concatenate([
        jnp.broadcast_to(table_t[:, None, None], (f, h, w, table_t.shape[-1])),
        jnp.broadcast_to(table_h[None, :, None], (f, h, w, table_h.shape[-1])),
        jnp.broadcast_to(table_w[None, None, :], (f, h, w, table_w.shape[-1])),
    ], axis=-1).reshape(f * h * w, head_dim // 2))
  return parts[0], parts[1]


def constant_rope(length: int, head_dim: int, value: float) -> tuple[jax.Array, jax.Array]:
  """cos = value, sin = 0 for `length` tokens: value 1 is the identity rotation, value 0
  the complex-zero rotation SAMA's released code gives semantic tokens (q = k = 0)."""
  cos = jnp.full((length, head_dim // 2), value, jnp.float32)
  return cos, jnp.zeros_like(cos)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates adjacent channel pairs. x: [B, L, H, D]; cos, sin: [L, D/2]."""
  pairs = rearrange(x.astype(jnp.float32), "b l h (d two) -> b l h d two", two=2)
  x1, x2 = pairs[..., 0], pairs[..., 1]
  cos, sin = cos[None, :, None, :], sin[None, :, None, :]
  out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return rearrange(out, "b l h d two -> b l h (d two)").astype(x.dtype)
