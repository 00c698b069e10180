"""Ulysses at sequence lengths no context degree divides: padded keys (`kv_length`) and the
model's padding of its token sequence (8 fake CPU devices).

Tolerances: 1e-5 relative where sharded and unsharded programs do the same float32 math at
full matmul precision (only summation orders differ); 1e-4 for the splash kernel, its own
tolerance in test_attention.py.
"""

import jax
import numpy as np
import pytest
from flax import linen as nn

from conftest import rel_error
from sama_jax.config import model_config
from sama_jax.models.attention import attention
from sama_jax.models.chunked_attention import chunked_attention
from sama_jax.parallel.mesh import make_mesh, mesh_config
from sama_jax.parallel.ulysses import ulysses_attention
from test_sama import batch, make_model
from test_ulysses import qkv, value_and_grads


def padded_vs_real(fn, q, k, v, n):
  """fn(q, k, v) on padded k, v (only the first n keys real) and attention on k, v[:, :n]:
  (outputs, grads) of each, through `value_and_grads`."""
  ours = value_and_grads(fn, q, k, v)
  ref = value_and_grads(lambda q, k, v: attention(q, k[:, :n], v[:, :n], impl="xla"), q, k, v)
  return ours, ref


@pytest.mark.parametrize("impl,block", [("xla", None), ("chunked", None), ("chunked", 8)],
                         ids=["xla", "chunked", "chunked_block8"])
def test_kv_length_equals_attention_on_the_real_keys_only(impl, block):
  """29 real keys of 40: block 8 puts the padding across two key blocks, one all padding."""
  q, k, v = qkv(lq=24, lk=40)
  fn = ((lambda q, k, v: attention(q, k, v, impl=impl, kv_length=29)) if block is None else
        (lambda q, k, v: chunked_attention(q, k, v, block=block, kv_length=29)))
  (out, grads), (ref, ref_grads) = padded_vs_real(jax.jit(fn), q, k, v, 29)
  assert rel_error(out, ref) < 1e-5
  for name, g, g_ref in zip("qkv", grads, ref_grads):
    assert rel_error(g, g_ref) < 1e-5, name
  for name, g in zip("kv", grads[1:]):  # padding keys get zero weight, so zero gradient
    np.testing.assert_array_equal(np.asarray(g[:, 29:]), 0.0, err_msg=name)


def test_kv_length_in_the_splash_kernel():
  """The TPU kernel in the Pallas interpreter; 128 is its head dim."""
  q, k, v = qkv(b=1, lq=40, lk=40, h=2, d=128)
  out = attention(q, k, v, impl="splash", interpret=True, kv_length=29)
  assert rel_error(out, attention(q, k[:, :29], v[:, :29], impl="xla")) < 1e-4


def test_kv_length_none_and_full_are_plain_attention():
  q, k, v = qkv(lq=24, lk=40)
  plain = np.asarray(attention(q, k, v))
  np.testing.assert_array_equal(np.asarray(attention(q, k, v, kv_length=None)), plain)
  assert rel_error(attention(q, k, v, kv_length=40), plain) < 1e-6
  assert rel_error(attention(q, k, v, kv_length=39), plain) > 1e-3  # ...and the mask bites


@pytest.mark.parametrize("kv_length", [0, 41, 2.5])
def test_kv_length_out_of_range_is_named(kv_length):
  with pytest.raises(ValueError, match=rf"kv_length={kv_length!r}; expected None or a static int from 1 to the 40 keys"):
    attention(*qkv(lk=40), kv_length=kv_length)


def test_ulysses_attention_passes_kv_length_to_every_device():
  """32 tokens over context=4, the last 3 padding: equals attention on the 29 real keys."""
  mesh = make_mesh(mesh_config(data=2, context=4))
  q, k, v = qkv(lq=32, lk=32)
  sharded = lambda q, k, v: ulysses_attention(q, k, v, mesh=mesh, kv_length=29)
  (out, grads), (ref, ref_grads) = padded_vs_real(jax.jit(sharded), q, k, v, 29)
  assert rel_error(out, ref) < 1e-5
  for name, g, g_ref in zip("qkv", grads, ref_grads):
    assert rel_error(g, g_ref) < 1e-5, name


def ulysses_config(tiny_config):
  return model_config(**{**tiny_config.to_dict(), "num_heads": 4, "sequence_parallel": "ulysses"})


def odd_inputs(config):
  """Source 2·2·2 + semantic 5 + target 2·2·2 = 21 tokens: odd, so no context degree > 1
  divides. (The SAMA forward and gradients at this length: tests/test_ulysses.py.)"""
  return batch(config, f=2, h=4, w=4, n_sem=5)


def test_assembly_pads_with_zero_tokens_and_identity_rope_only_on_a_context_mesh(tiny_config):
  config = ulysses_config(tiny_config)
  model = make_model(config)
  x = odd_inputs(config)
  assemble = jax.jit(lambda latents, source, semantic: model.assemble(latents, source, semantic))
  tokens, rope, groups = assemble(x["latents"], x["source"], x["semantic"])
  assert groups == (8, 5, 8) and tokens.shape[1] == 21 and rope[0].shape[0] == 21

  with jax.set_mesh(make_mesh(mesh_config(data=2, context=4))):
    padded, (cos, sin), padded_groups = assemble(x["latents"], x["source"], x["semantic"])
  assert padded_groups == groups and padded.shape[1] == 24 and cos.shape[0] == 24
  np.testing.assert_array_equal(np.asarray(padded[:, :21]), np.asarray(tokens))
  np.testing.assert_array_equal(np.asarray(padded[:, 21:]), 0.0)
  np.testing.assert_array_equal(np.asarray(cos[21:]), 1.0)
  np.testing.assert_array_equal(np.asarray(sin[21:]), 0.0)
  np.testing.assert_array_equal(np.asarray(cos[:21]), np.asarray(rope[0]))


def test_without_a_context_mesh_ulysses_is_bit_identical_to_no_sequence_parallelism(tiny_config):
  """No mesh, and a mesh whose context degree is 1: nothing is padded, nothing changes."""
  config = ulysses_config(tiny_config)
  plain = model_config(**{**config.to_dict(), "sequence_parallel": "none"})
  x = odd_inputs(config)
  ulysses_model, plain_model = make_model(config), make_model(plain)
  run = lambda m: jax.jit(lambda x: m(x["latents"], x["timestep"], x["text"], source=x["source"],
                                      semantic=x["semantic"]))(x)
  ref = run(plain_model)
  with jax.set_mesh(make_mesh(mesh_config(data=8, context=1))):
    on_data_mesh = run(ulysses_model)
  for a, b, c in zip(run(ulysses_model), on_data_mesh, ref):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    np.testing.assert_array_equal(np.asarray(b), np.asarray(c))


def test_plain_wan_with_an_odd_grid_on_context4_matches_unsharded(tiny_config):
  """WanDiT's own text-to-video call pads the same way: 1·3·3 = 9 tokens over context=4."""
  config = ulysses_config(tiny_config)
  dit = make_model(config).dit
  x = batch(config, f=1, h=6, w=6)
  fn = jax.jit(lambda latents, t, text: dit(latents, t, text))
  ref = fn(x["latents"], x["timestep"], x["text"])
  mc = mesh_config(data=2, context=4)
  with jax.set_mesh(make_mesh(mc)), nn.logical_axis_rules(mc.rules):
    out = fn(x["latents"], x["timestep"], x["text"])
  assert out.shape == ref.shape and rel_error(out, ref) < 1e-5
