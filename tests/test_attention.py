"""The attention op: reference math, kernel dispatch and its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx

from conftest import rel_error
from sama_jax.models import SamaDiT
from sama_jax.models.attention import attention, check_implementation


def qkv(b=2, lq=37, lk=37, h=3, d=16, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.standard_normal((b, n, h, d)), dtype) for n in (lq, lk, lk)]


def numpy_attention(q, k, v):
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("lq,lk", [(37, 37), (5, 11)])
def test_xla_matches_float64_math(lq, lk):
  q, k, v = qkv(lq=lq, lk=lk)
  assert rel_error(attention(q, k, v, impl="xla"), numpy_attention(q, k, v)) < 1e-5


def test_splash_kernel_in_interpret_mode_matches_xla():
  """The TPU kernel run by the Pallas interpreter on CPU; lengths not multiples of the
  block are padded and the padded keys masked out."""
  q, k, v = qkv(b=1, lq=130, lk=70, h=2, d=128)
  out = attention(q, k, v, impl="splash", interpret=True)
  assert out.shape == q.shape
  assert rel_error(out, attention(q, k, v, impl="xla")) < 1e-4


def test_unknown_implementation_names_the_alternatives():
  with pytest.raises(ValueError, match=r"unknown attention implementation 'flash'.*\('xla', 'chunked', 'cudnn', 'splash'\)"):
    check_implementation("flash")


@pytest.mark.parametrize("impl,backend", [("cudnn", "cpu"), ("splash", "cpu"), ("cudnn", "tpu"), ("splash", "gpu")])
def test_unavailable_implementation_says_what_runs_here(impl, backend):
  with pytest.raises(ValueError, match=rf"'{impl}' needs a .* backend but JAX is running on '{backend}'; use one of"):
    check_implementation(impl, backend=backend)


def test_model_with_unavailable_kernel_fails_clearly(tiny_config):
  if jax.default_backend() == "gpu":
    pytest.skip("cudnn is available on this GPU")
  tiny_config.attention = "cudnn"
  model = SamaDiT(tiny_config, nnx.Rngs(0))
  with pytest.raises(ValueError, match="needs a GPU backend"):
    model(jnp.zeros((1, 1, 2, 2, 16)), jnp.zeros((1,)), jnp.zeros((1, 3, 32)))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU; on CPU this check is skipped")
def test_cudnn_matches_xla_on_gpu():
  q, k, v = qkv(b=2, lq=1000, lk=1000, h=4, d=128, dtype=jnp.bfloat16)
  ours = attention(q, k, v, impl="cudnn")
  ref = numpy_attention(q, k, v)
  err = rel_error(ours, ref)
  print(f"cudnn vs float64 reference: max rel error {err:.2e}; xla bf16: {rel_error(attention(q, k, v), ref):.2e}")
  assert err < 2e-2  # bf16 inputs and outputs: 8 mantissa bits


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU; on CPU this check is skipped")
def test_model_with_cudnn_matches_xla_on_gpu(tiny_config):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 5, 16, 16, 16)), jnp.float32)
  args = (x, jnp.asarray([100.0, 900.0]), jnp.asarray(rng.standard_normal((2, 7, 32)), jnp.float32))
  outputs = {}
  for impl in ("xla", "cudnn"):
    tiny_config.dtype, tiny_config.attention = "bfloat16", impl
    model = SamaDiT(tiny_config, nnx.Rngs(0))
    model.dit.head.proj_out.kernel[...] = jax.random.normal(jax.random.key(1), model.dit.head.proj_out.kernel.shape)
    outputs[impl] = model(*args, source=x)[0]
  err = rel_error(outputs["cudnn"], outputs["xla"])
  print(f"SamaDiT bf16, cudnn vs xla attention: max rel error {err:.2e}")
  assert err < 2e-2
