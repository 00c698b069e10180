"""Ulysses sequence-parallel attention (DeepSpeed-Ulysses) over the `context` mesh axis.

Outside attention every token-wise op (norms, MLPs, modulation) is local, so activations
stay sharded over the sequence: [B, L/c, H, D] per device for a context degree c.
Attention needs every key, so around it two all-to-alls swap which axis is split:

  q, k, v [B, L/c, H/t, D] --all_to_all--> [B, L, H/(c·t), D]   (gather sequence, scatter heads)
  local attention over the whole sequence for H/(c·t) heads
  out     [B, L, H/(c·t), D] --all_to_all--> [B, L/c, H/t, D]   (back)

Each device moves 4/c of its q, k, v, out activations instead of gathering all keys, and
runs any attention kernel (xla, chunked, cudnn, splash) unchanged on its heads.

Cross-attention keys and values (text) are not sequence-sharded: they are replicated over
`context`, so each device slices its own heads locally and only q goes through the
all-to-alls.

The sequence length must divide by c. SAMA's sequence, [source ; semantic ; target]
tokens, rarely does (2·21·30·52 + 65 = 65,585 = 5·13·1009), so the model pads it: with
`model.sequence_parallel = "ulysses"` it appends zero tokens (identity RoPE) up to a
multiple of `padded_multiple()` when assembling the sequence, passes `kv_length` = the
real length so self-attention gives the pad keys zero weight, and drops the pad outputs.
Called directly, `ulysses_attention` still needs a divisible length.
"""

from __future__ import annotations

import math

import jax
from jax.sharding import PartitionSpec as P

from sama_jax.models.attention import attention

BATCH_AXES = ("data", "fsdp")  # DEFAULT_RULES: activation_batch
HEAD_AXIS = "tensor"  # DEFAULT_RULES: activation_heads


def context_degree(mesh, axis: str = "context") -> int:
  """How many devices `mesh` (a Mesh, an AbstractMesh or None) splits `axis` over."""
  if mesh is None or mesh.empty or axis not in mesh.axis_names:
    return 1
  return mesh.shape[axis]


def padded_multiple(sequence_parallel: str, mesh=None, axis: str = "context") -> int:
  """What the model's token sequence must be padded to a multiple of: the `axis` degree of
  `mesh` (default: the current mesh, read at trace time) under Ulysses, else 1."""
  if sequence_parallel != "ulysses":
    return 1
  return context_degree(jax.sharding.get_abstract_mesh() if mesh is None else mesh, axis)


def ulysses_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, impl: str = "xla",
                      mesh=None, axis: str = "context", kv_sharded: bool = True,
                      interpret: bool = False, kv_length: int | None = None) -> jax.Array:
  """Attention with the sequence of q (and of k, v when kv_sharded) split over `axis`.

  q: [B, Lq, H, D]; k, v: [B, Lk, H, D] -> [B, Lq, H, D], equal to
  `attention(q, k, v, kv_length=kv_length)`. mesh: default the current mesh
  (`jax.set_mesh`); with none, or a context degree of 1, this is plain `attention`.
  kv_sharded: False for cross-attention, whose k, v are replicated over `axis`. Batch is
  split over data/fsdp when it divides, heads over tensor. kv_length: only the first
  kv_length keys (of the whole, gathered sequence) are real; see `attention`.
  """
  mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
  c = context_degree(mesh, axis)
  if c == 1:
    return attention(q, k, v, impl=impl, interpret=interpret, kv_length=kv_length)

  b, lq, h, _ = q.shape
  lk = k.shape[1]
  head_axis = HEAD_AXIS if HEAD_AXIS in mesh.axis_names and HEAD_AXIS != axis else None
  t = mesh.shape[head_axis] if head_axis else 1
  if h % (c * t):
    raise ValueError(f"Ulysses attention splits {h} heads over {axis}={c} x {HEAD_AXIS}={t} "
                     f"devices; num_heads must be divisible by {c * t}")
  for name, length in (("query", lq),) + ((("key", lk),) if kv_sharded else ()):
    if length % c:
      raise ValueError(f"Ulysses attention splits the {name} sequence of {length} tokens over "
                       f"{axis}={c} devices; the length must be divisible by {c} (for SAMA: "
                       f"source + semantic + target tokens)")
  batch_axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names and a != axis)
  if b % math.prod(mesh.shape[a] for a in batch_axes):
    batch_axes = ()  # e.g. batch 1 at inference: replicate rather than fail
  batch_spec = batch_axes or None
  local_heads = h // (c * t)

  def local(q, k, v):
    """Per device: q [b, Lq/c, H/t, D]; k, v [b, Lk/c or Lk, H/t, D]."""
    gather_seq = lambda x: jax.lax.all_to_all(x, axis, split_axis=2, concat_axis=1, tiled=True)
    q = gather_seq(q)
    if kv_sharded:
      k, v = gather_seq(k), gather_seq(v)
    else:
      start = jax.lax.axis_index(axis) * local_heads
      k, v = (jax.lax.dynamic_slice_in_dim(x, start, local_heads, axis=2) for x in (k, v))
    out = attention(q, k, v, impl=impl, interpret=interpret, kv_length=kv_length)  # [b, Lq, H/(c·t), D]
    return jax.lax.all_to_all(out, axis, split_axis=1, concat_axis=2, tiled=True)

  seq = P(batch_spec, axis, head_axis, None)
  kv = seq if kv_sharded else P(batch_spec, None, head_axis, None)
  # check_vma=False: Pallas kernels (splash) give outputs without varying-axis types, which
  # the check rejects. tests/test_ulysses.py checks the gradients without it, replicated
  # k, v and replicated batch included.
  return jax.shard_map(local, mesh=mesh, in_specs=(seq, kv, kv), out_specs=seq,
                       check_vma=False)(q, k, v)
