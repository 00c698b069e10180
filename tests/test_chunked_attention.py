"""Blockwise attention equals the einsum reference and needs far less memory.

Tolerance 1e-5 (relative to the largest value, float32 at highest matmul precision): the
online softmax reorders the sums, nothing else differs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import rel_error

from sama_jax.models.attention import attention, xla_attention
from sama_jax.models.chunked_attention import chunked_attention

# (Lq, Lk, block): self-attention divisible and not, cross-attention to a short text,
# and a block longer than both lengths.
SHAPES = [(64, 64, 16), (70, 70, 16), (45, 13, 8), (37, 29, 512)]


def qkv(lq, lk, b=2, h=3, d=8, seed=0):
  rng = np.random.default_rng(seed)
  r = lambda *s: jnp.asarray(rng.standard_normal(s) * 2.0, jnp.float32)
  return r(b, lq, h, d), r(b, lk, h, d), r(b, lk, h, d)


@pytest.mark.parametrize("lq, lk, block", SHAPES)
def test_forward_equals_xla_attention(lq, lk, block):
  q, k, v = qkv(lq, lk)
  ours = chunked_attention(q, k, v, block=block)
  assert ours.shape == q.shape
  assert rel_error(ours, xla_attention(q, k, v)) < 1e-5


@pytest.mark.parametrize("lq, lk, block", SHAPES[1:3])
def test_gradients_equal_xla_attention(lq, lk, block):
  q, k, v = qkv(lq, lk, seed=1)
  w = jnp.asarray(np.random.default_rng(2).standard_normal(q.shape), jnp.float32)
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * w)
  ours = jax.grad(loss(lambda *a: chunked_attention(*a, block=block)), argnums=(0, 1, 2))(q, k, v)
  ref = jax.grad(loss(xla_attention), argnums=(0, 1, 2))(q, k, v)
  for name, a, b in zip("qkv", ours, ref):
    assert rel_error(a, b) < 1e-5, name


def test_bfloat16_inputs_keep_dtype_and_stay_close():
  q, k, v = (x.astype(jnp.bfloat16) for x in qkv(40, 40))
  out = chunked_attention(q, k, v, block=16)
  assert out.dtype == jnp.bfloat16
  assert rel_error(out, xla_attention(q, k, v)) < 2e-2  # bf16 has 8 mantissa bits


def test_dispatch_runs_chunked_on_cpu():
  q, k, v = qkv(20, 20)
  assert rel_error(attention(q, k, v, impl="chunked"), xla_attention(q, k, v)) < 1e-5


def test_nonpositive_block_is_rejected():
  q, k, v = qkv(8, 8)
  with pytest.raises(ValueError, match="block=0"):
    chunked_attention(q, k, v, block=0)


def temp_bytes(fn, *shapes):
  return fn.lower(*shapes).compile().memory_analysis().temp_size_in_bytes


def test_forward_temp_memory_is_far_below_xla_attention():
  # L = 4096 with 2 heads: xla materialises [1, 2, 4096, 4096] float32 logits (128 MiB);
  # blocks of 256 need [1, 2, 256, 256] per step.
  x = jax.ShapeDtypeStruct((1, 4096, 2, 32), jnp.float32)
  chunked = temp_bytes(jax.jit(lambda q, k, v: chunked_attention(q, k, v, block=256)), x, x, x)
  xla = temp_bytes(jax.jit(xla_attention), x, x, x)
  assert chunked < xla / 4, (chunked, xla)


def test_sama_model_with_chunked_attention_equals_xla(tiny_config):
  from flax import nnx
  from sama_jax.models import SamaDiT
  rng = np.random.default_rng(3)
  r = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  # 432 target + 432 source + 5 semantic tokens: two 512-blocks, the second one padded.
  args = (r(1, 3, 24, 24, 16), jnp.asarray([300.0]), r(1, 7, 32))
  kw = dict(source=r(1, 3, 24, 24, 16), semantic=r(1, 5, 48))
  outs = {}
  for impl in ("xla", "chunked"):
    config = tiny_config.copy_and_resolve_references()
    config.attention = impl
    model = SamaDiT(config, nnx.Rngs(0))
    head = model.dit.head.proj_out.kernel  # zero at init, which would hide any difference
    head[...] = 0.1 * jax.random.normal(jax.random.key(1), head.shape)
    outs[impl] = model(*args, **kw)
  for ours, ref in zip(outs["chunked"], outs["xla"]):
    assert rel_error(ours, ref) < 1e-5
