"""Multi-head attention op with kernel dispatch.

`attention(q, k, v, impl=...)` computes softmax(q kᵀ / sqrt(D)) v with float32 softmax
statistics, no mask (SAMA attends bidirectionally over the whole sequence; the umT5
padding positions take part in cross-attention, SAMA_METHOD.md §6.4). The one exception is
`kv_length`: only the first kv_length keys are real, the rest are padding appended so a
sequence divides over the context mesh axis (parallel/ulysses.py), and get zero weight.

Implementations:
  xla     einsum reference; runs everywhere (CPU tests).
  chunked blockwise online-softmax attention in pure JAX (chunked_attention.py): runs
          everywhere with O(block²) memory instead of O(L²); the portable long-sequence path.
  cudnn   `jax.nn.dot_product_attention(implementation="cudnn")`: fused flash attention on
          NVIDIA GPUs (bf16/fp16 inputs).
  splash  Pallas splash attention for TPU (`interpret=True` runs it on CPU for tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sama_jax.models.chunked_attention import chunked_attention

IMPLEMENTATIONS = ("xla", "chunked", "cudnn", "splash")
_BACKEND_OF = {"cudnn": "gpu", "splash": "tpu"}


def check_implementation(impl: str, backend: str | None = None, interpret: bool = False) -> None:
  """Raises ValueError if `impl` is unknown or cannot run on `backend` (default: JAX's)."""
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {impl!r}; choose one of {IMPLEMENTATIONS}")
  backend = backend or jax.default_backend()
  needed = _BACKEND_OF.get(impl)
  if needed and backend != needed and not (impl == "splash" and interpret):
    others = [i for i in IMPLEMENTATIONS if _BACKEND_OF.get(i) in (None, backend)]
    raise ValueError(
        f"attention implementation {impl!r} needs a {needed.upper()} backend but JAX is running on "
        f"{backend!r}; use one of {others} here (config field model.attention)")


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, impl: str = "xla",
              interpret: bool = False, kv_length: int | None = None) -> jax.Array:
  """q: [B, Lq, H, D], k, v: [B, Lk, H, D] -> [B, Lq, H, D] in q.dtype.

  kv_length: a static int, 1 <= kv_length <= Lk: keys from kv_length on are padding and get
  exactly zero weight, so the result equals attention(q, k[:, :kv_length], v[:, :kv_length]).
  None: every key is real.
  """
  check_implementation(impl, interpret=interpret)
  check_kv_length(kv_length, k.shape[1])
  if impl == "xla":
    return xla_attention(q, k, v, kv_length=kv_length)
  if impl == "chunked":
    return chunked_attention(q, k, v, kv_length=kv_length)
  if impl == "cudnn":
    lengths = None if kv_length is None else jnp.full((q.shape[0],), kv_length, jnp.int32)
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
  return splash_attention(q, k, v, interpret=interpret, kv_length=kv_length)


def check_kv_length(kv_length: int | None, num_keys: int) -> None:
  """Raises ValueError unless kv_length is None or a Python int in [1, num_keys]."""
  if kv_length is None:
    return
  if not isinstance(kv_length, (int, np.integer)) or not 1 <= kv_length <= num_keys:
    raise ValueError(f"attention kv_length={kv_length!r}; expected None or a static int from 1 to "
                     f"the {num_keys} keys given (the number of real, unpadded keys)")


def key_bias(num_keys: int, kv_length: int) -> jax.Array:
  """[num_keys] float32: 0 for the first kv_length (real) keys, -inf for the padding after."""
  return jnp.where(jnp.arange(num_keys) < kv_length, 0.0, -jnp.inf).astype(jnp.float32)


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                  kv_length: int | None = None) -> jax.Array:
  """Reference attention: float32 logits and softmax, matmuls in the input dtype."""
  scale = 1.0 / np.sqrt(q.shape[-1])
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  if kv_length is not None:
    logits = logits + key_bias(k.shape[1], kv_length)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32).astype(q.dtype)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


@functools.partial(jax.jit, static_argnames=("interpret", "block", "kv_length"))
def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, interpret: bool = False,
                     block: int = 128, kv_length: int | None = None) -> jax.Array:
  """Pallas splash attention. Lengths are padded to `block`; padded keys (those from
  kv_length on, and the block padding) are kept out by segment ids (0 = real, 1 = padding),
  so the result equals unpadded attention."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  b, lq, h, d = q.shape
  lk = k.shape[1]
  pq, pk = _round_up(lq, block), _round_up(lk, block)
  pad = lambda x, n: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0)))
  # Splash takes [H, L, D] per example and applies no scale of its own.
  qh = jnp.moveaxis(pad(q * (1.0 / np.sqrt(d)).astype(q.dtype), pq), 2, 1)
  kh, vh = (jnp.moveaxis(pad(x, pk), 2, 1) for x in (k, v))
  mask = sm.MultiHeadMask([sm.FullMask((pq, pk)) for _ in range(h)])
  sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                        block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block,
                        block_kv_dq=block)
  kernel = sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                              interpret=interpret)
  segments = sk.SegmentIds(q=(jnp.arange(pq) >= lq).astype(jnp.int32),
                           kv=(jnp.arange(pk) >= (lk if kv_length is None else kv_length)).astype(jnp.int32))
  out = jax.vmap(lambda a, b_, c: kernel(a, b_, c, segment_ids=segments))(qh, kh, vh)
  return jnp.moveaxis(out, 1, 2)[:, :lq].astype(q.dtype)
