"""Blockwise ("flash-style") attention in pure JAX: memory O(block²) instead of O(L²).

Queries are cut into blocks of `block` rows (lax.map); for each, a lax.scan walks the key
blocks keeping the running maximum, normaliser and weighted sum in float32 (the online
softmax of Milakov & Gimelshein 2018 / FlashAttention). Both the query-block body and
each key step are wrapped in jax.checkpoint, so the backward recomputes a block's logits
instead of storing the [block, block] probabilities of every step: it keeps O(L·D) per
head, never O(L²). Runs on every backend; it is the stand-in for
fused kernels where none compiles (CPU, memory analysis).

Lengths need not divide the block: queries are zero-padded and the padded rows sliced
off; padded keys get a -inf logit bias, so they carry exactly zero weight. The same bias
keeps out the caller's own padding keys (`kv_length`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange


def _pad_to_blocks(x: jax.Array, block: int) -> jax.Array:
  """x: [B, L, H, D] -> [N, B, block, H, D] with L zero-padded to N·block."""
  pad = -x.shape[1] % block
  x = jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
  return rearrange(x, "b (n l) h d -> n b l h d", l=block)


def _key_step(carry, key_block, *, q: jax.Array):
  """One online-softmax update of a query block by a key block.

  carry: (m [B, H, bq], s [B, H, bq], acc [B, bq, H, D]) float32 running max, normaliser, sum.
  key_block: (k [B, bk, H, D], v [B, bk, H, D], bias [bk] float32: 0 real, -inf padding).
  """
  m, s, acc = carry
  k, v, bias = key_block
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) + bias
  m_new = jnp.maximum(m, logits.max(axis=-1))
  correction = jnp.exp(m - m_new)
  p = jnp.exp(logits - m_new[..., None])
  s = s * correction + p.sum(axis=-1)
  pv = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
  acc = acc * rearrange(correction, "b h q -> b q h 1") + pv
  return (m_new, s, acc), None


@functools.partial(jax.jit, static_argnames=("block", "kv_length"))
def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, block: int = 512,
                      kv_length: int | None = None) -> jax.Array:
  """q: [B, Lq, H, D], k, v: [B, Lk, H, D] -> [B, Lq, H, D] in q.dtype; equals xla_attention.

  Blocks are min(block, L) long, so short sequences (cross-attention to text) are one block.
  kv_length: only the first kv_length keys are real (None: all Lk).
  """
  if block <= 0:
    raise ValueError(f"chunked attention block={block}; expected a positive number of tokens")
  b, lq, h, d = q.shape
  lk = k.shape[1]
  bq, bk = min(block, lq), min(block, lk)
  q_blocks = _pad_to_blocks(q * np.asarray(1.0 / np.sqrt(d), q.dtype), bq)
  k_blocks, v_blocks = _pad_to_blocks(k, bk), _pad_to_blocks(v, bk)
  positions = jnp.arange(k_blocks.shape[0] * bk).reshape(-1, bk)
  real = lk if kv_length is None else kv_length
  bias = jnp.where(positions < real, 0.0, -jnp.inf).astype(jnp.float32)  # [Nk, bk]

  @jax.checkpoint
  def query_block(qb):
    step = jax.checkpoint(functools.partial(_key_step, q=qb))
    init = (jnp.full((b, h, bq), -jnp.inf, jnp.float32), jnp.zeros((b, h, bq), jnp.float32),
            jnp.zeros((b, bq, h, d), jnp.float32))
    (_, s, acc), _ = jax.lax.scan(step, init, (k_blocks, v_blocks, bias))
    return acc / rearrange(s, "b h q -> b q h 1")

  out = jax.lax.map(query_block, q_blocks)  # [Nq, B, bq, H, D]
  return rearrange(out, "n b l h d -> b (n l) h d")[:, :lq].astype(q.dtype)
