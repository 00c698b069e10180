"""Weight-only parameter formats for inference: float32, bfloat16 and int8.

    state = quantize(nnx.state(model, nnx.Param), "int8")   # kernels -> Int8Weight
    nnx.update(model, state)                                 # the model now holds int8 kernels

"bfloat16" casts every floating parameter to bfloat16 (half the memory). "int8" replaces
every Linear kernel w [..., in, out] (stacked blocks have a leading layers axis) by
`Int8Weight`: q = round(w / s) in [-127, 127] with one float32 scale per output channel,
s = max|w[..., :, o]| / 127 (symmetric, absmax; a quarter of float32's memory, plus one
scale per column); biases, norms and tables stay as they are. Compute is unchanged: a
quantized model is only run through `dequantize`, which the editing sampler applies
outside the stacked blocks once, and `layers.run_stacked` applies to one layer's slice
at a time inside the scan, so the full-precision copy of the blocks never exists.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

WEIGHT_FORMATS = ("float32", "bfloat16", "int8")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Int8Weight:
  """q: int8 [..., in, out]; scale: float32 [..., 1, out]; dtype: the original dtype name."""
  q: jax.Array
  scale: jax.Array
  dtype: str = dataclasses.field(default="float32", metadata=dict(static=True))

  def dequantize(self) -> jax.Array:
    return (self.q.astype(jnp.float32) * self.scale).astype(self.dtype)

  @property
  def shape(self) -> tuple[int, ...]:
    return self.q.shape


def check_format(weights: str) -> None:
  if weights not in WEIGHT_FORMATS:
    raise ValueError(f"weights={weights!r}; expected one of {WEIGHT_FORMATS}")


def quantize_kernel(w: jax.Array) -> Int8Weight:
  """Per-output-channel symmetric int8 of w [..., in, out]."""
  absmax = jnp.max(jnp.abs(w.astype(jnp.float32)), axis=-2, keepdims=True)
  scale = jnp.where(absmax > 0, absmax / 127.0, 1.0)
  q = jnp.clip(jnp.round(w.astype(jnp.float32) / scale), -127, 127).astype(jnp.int8)
  return Int8Weight(q, scale, jnp.dtype(w.dtype).name)


def _names(path) -> list:
  """Key names along a pytree path, without NNX's trailing `.value`."""
  names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
  return names[:-1] if names and names[-1] == "value" else names


def _is_kernel(path, leaf) -> bool:
  names = _names(path)
  return bool(names) and names[-1] == "kernel" and jnp.ndim(leaf) >= 2


def quantize(tree, weights: str):
  """The parameters of `tree` (an nnx.State or pure dict) in the format `weights`."""
  check_format(weights)
  if weights == "float32":
    return tree
  if weights == "bfloat16":
    return jax.tree.map(lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
  return jax.tree_util.tree_map_with_path(lambda p, x: quantize_kernel(x) if _is_kernel(p, x) else x, tree)


def _is_quantized(x) -> bool:
  return isinstance(x, Int8Weight)


def dequantize(tree, skip: str | None = None):
  """`tree` with every Int8Weight turned back into a dense kernel, except those under a
  key named `skip` (e.g. "blocks": the scanned layers dequantize their own slices)."""
  def restore(path, x):
    if not _is_quantized(x):
      return x
    if skip is not None and skip in _names(path):
      return x
    return x.dequantize()

  return jax.tree_util.tree_map_with_path(restore, tree, is_leaf=_is_quantized)


def weight_bytes(tree) -> int:
  """Bytes the arrays of `tree` hold (int8 values and their scales counted)."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
