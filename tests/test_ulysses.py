"""Ulysses sequence-parallel attention over the `context` mesh axis (8 fake CPU devices).

Tolerances are 1e-5 relative: the sharded and unsharded programs do the same float32 math
at full matmul precision; only the summation order of the backward psums may differ.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from conftest import rel_error
from sama_jax.config import model_config
from sama_jax.models.attention import attention
from sama_jax.parallel.mesh import make_mesh, mesh_config
from sama_jax.parallel.ulysses import ulysses_attention
from sama_jax.train.config import train_config
from test_sama import make_model
from test_train_step import make_batch, run

MESHES = {"data2_context4": dict(data=2, context=4), "context8": dict(data=1, context=8),
          "fsdp2_context2_tensor2": dict(data=1, fsdp=2, context=2, tensor=2)}


def qkv(b=2, lq=32, lk=32, h=8, d=16, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(keys[0], (b, lq, h, d)), jax.random.normal(keys[1], (b, lk, h, d)),
          jax.random.normal(keys[2], (b, lk, h, d)))


def value_and_grads(fn, q, k, v):
  """fn's output and the gradient of a fixed random linear functional of it w.r.t. q, k, v."""
  w = jax.random.normal(jax.random.key(7), q.shape)
  out = fn(q, k, v)
  grads = jax.grad(lambda q, k, v: jnp.sum(w * fn(q, k, v)), argnums=(0, 1, 2))(q, k, v)
  return out, grads


@pytest.mark.parametrize("mesh_name,b,lk,kv_sharded", [
    ("data2_context4", 2, 32, True), ("context8", 2, 32, True), ("fsdp2_context2_tensor2", 2, 32, True),
    ("data2_context4", 2, 12, False), ("fsdp2_context2_tensor2", 2, 12, False),
    ("data2_context4", 1, 12, False)])
def test_matches_unsharded_attention_and_its_gradients(mesh_name, b, lk, kv_sharded):
  """Self-attention (k, v sequence-sharded) and cross-attention (k, v replicated, Lk != Lq);
  batch 1 does not divide over data=2 and is replicated."""
  mesh = make_mesh(mesh_config(**MESHES[mesh_name]))
  q, k, v = qkv(b=b, lk=lk)
  ref, ref_grads = value_and_grads(lambda q, k, v: attention(q, k, v, impl="xla"), q, k, v)
  sharded = lambda q, k, v: ulysses_attention(q, k, v, impl="xla", mesh=mesh, kv_sharded=kv_sharded)
  out, grads = jax.jit(lambda q, k, v: value_and_grads(sharded, q, k, v))(q, k, v)
  assert rel_error(out, ref) < 1e-5
  for name, g, g_ref in zip("qkv", grads, ref_grads):
    assert rel_error(g, g_ref) < 1e-5, name


@pytest.mark.parametrize("lk,kv_sharded", [(40, True), (24, False)], ids=["self", "cross"])
def test_splash_kernel_runs_inside_ulysses(lk, kv_sharded):
  """The TPU kernel (Pallas interpreter on CPU) on each device's heads; 128 is its head dim."""
  mesh = make_mesh(mesh_config(data=1, context=2), jax.devices()[:2])
  q, k, v = qkv(b=1, lq=40, lk=lk, h=2, d=128)
  out = jax.jit(lambda q, k, v: ulysses_attention(q, k, v, impl="splash", interpret=True, mesh=mesh,
                                                  kv_sharded=kv_sharded))(q, k, v)
  assert rel_error(out, attention(q, k, v, impl="xla")) < 1e-4  # the kernel's own tolerance (test_attention)


def test_current_mesh_is_used_and_output_stays_sequence_sharded():
  mesh = make_mesh(mesh_config(data=2, context=4))
  q, k, v = qkv()
  with jax.set_mesh(mesh):
    out = jax.jit(lambda q, k, v: ulysses_attention(q, k, v))(q, k, v)
  assert rel_error(out, attention(q, k, v)) < 1e-5
  assert out.sharding.shard_shape(out.shape) == (1, 8, 8, 16)  # batch / 2, sequence / 4


def test_compiled_program_moves_heads_with_all_to_all_not_all_gather():
  mesh = make_mesh(mesh_config(data=2, context=4))
  q, k, v = qkv()
  seq = NamedSharding(mesh, P(("data", "fsdp"), "context"))
  fn = jax.jit(lambda q, k, v: ulysses_attention(q, k, v, mesh=mesh), in_shardings=(seq,) * 3)
  hlo = fn.lower(q, k, v).compile().as_text()
  assert hlo.count("all-to-all") >= 4  # q, k, v there and the output back
  assert "all-gather" not in hlo


def test_without_a_mesh_it_is_plain_attention():
  q, k, v = qkv(lq=30, h=6)  # sizes no context degree > 1 could split: the mesh is not consulted
  np.testing.assert_array_equal(np.asarray(ulysses_attention(q, k, v)), np.asarray(attention(q, k, v)))


def test_heads_not_divisible_by_context_times_tensor_is_named():
  mesh = make_mesh(mesh_config(data=1, fsdp=2, context=2, tensor=2))
  with pytest.raises(ValueError, match=r"splits 6 heads over context=2 x tensor=2.*divisible by 4"):
    ulysses_attention(*qkv(h=6), mesh=mesh)


def test_sequence_not_divisible_by_context_is_named():
  mesh = make_mesh(mesh_config(data=2, context=4))
  with pytest.raises(ValueError, match=r"query sequence of 30 tokens over context=4.*divisible by 4"):
    ulysses_attention(*qkv(lq=30, lk=30), mesh=mesh)
  # Cross-attention keys are not split, so their length need not divide.
  q, k, v = qkv(lk=7)
  assert ulysses_attention(q, k, v, mesh=mesh, kv_sharded=False).shape == q.shape


def test_config_rejects_unknown_mode():
  with pytest.raises(ValueError, match=r"model.sequence_parallel='ring'; expected one of \('none', 'ulysses'\)"):
    model_config(sequence_parallel="ring")


def sama_inputs(config, b=2, seed=0, n_sem=4):
  """Target 2·2·2 + source 2·2·2 + 4 semantic = 20 tokens: divisible by context 2 and 4.
  n_sem=5 makes 21, which no context degree > 1 divides (the model pads it)."""
  rng = np.random.default_rng(seed)
  r = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  return dict(latents=r(b, 2, 4, 4, config.in_channels), timestep=jnp.asarray(rng.uniform(0, 1000, b), jnp.float32),
              text=r(b, 7, config.text_dim), source=r(b, 2, 4, 4, config.in_channels),
              semantic=r(b, n_sem, config.semantic_dim))


def sama_loss(graphdef, params, x):
  velocity, semantic_pred = nnx.merge(graphdef, params)(
      x["latents"], x["timestep"], x["text"], source=x["source"], semantic=x["semantic"])
  return jnp.mean(velocity ** 2) + jnp.mean(jnp.abs(semantic_pred)), (velocity, semantic_pred)


@pytest.mark.parametrize("n_sem", [4, 5], ids=["20_tokens", "21_tokens_padded_to_24"])
def test_sama_forward_and_gradients_match_the_unsharded_model(tiny_config, n_sem):
  """data=2, context=4 with the activation rules applied. Outside a mesh the Ulysses model
  runs plain attention, so the same model unsharded is the reference."""
  config = model_config(**{**tiny_config.to_dict(), "num_heads": 4, "sequence_parallel": "ulysses"})
  graphdef, params = nnx.split(make_model(config), nnx.Param)
  x = sama_inputs(config, n_sem=n_sem)
  grads_of = jax.jit(lambda params, x: jax.value_and_grad(sama_loss, argnums=1, has_aux=True)(graphdef, params, x))
  (_, ref_out), ref_grads = grads_of(params, x)

  mc = mesh_config(data=2, context=4)
  with jax.set_mesh(make_mesh(mc)), nn.logical_axis_rules(mc.rules):
    compiled = grads_of.lower(params, x).compile()
    (_, out), grads = compiled(params, x)
  assert "all-to-all" in compiled.as_text()
  for a, b in zip(out, ref_out):
    assert a.shape == b.shape and rel_error(a, b) < 1e-5
  flat, flat_ref = jax.tree.leaves_with_path(grads), jax.tree.leaves(ref_grads)
  assert len(flat) == len(flat_ref)
  for (path, g), g_ref in zip(flat, flat_ref):
    if np.abs(np.asarray(g_ref)).max() > 0:
      assert rel_error(g, g_ref) < 1e-5, jax.tree_util.keystr(path)


@pytest.mark.slow  # two train-state inits and step compiles (~30 s CPU); the model test above covers the default run
def test_train_steps_on_a_context_mesh_give_the_single_device_losses(tiny_config):
  tiny_config.num_heads = 4
  batch = make_batch()
  batch["semantic"] = batch["semantic"][:, :4]  # 8 source + 4 semantic + 12 target = 24 tokens
  tc = train_config(learning_rate=1e-3)
  _, single, _ = run(tiny_config, tc, (1, 1, 1, 1), steps=2, batch=batch)
  sp_config = model_config(**{**tiny_config.to_dict(), "sequence_parallel": "ulysses"})
  _, sharded, _ = run(sp_config, tc, (2, 1, 4, 1), steps=2, batch=batch)
  for a, b in zip(single, sharded):
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
  assert single[0]["loss"] != single[1]["loss"]
