"""SAMA's conditioning on top of the Wan DiT (SAMA_METHOD.md §2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sama_jax.config import model_config
from sama_jax.models import SamaDiT
from sama_jax.models.rope import grid_rope


def make_model(config, seed=0, randomize_segments=True):
  model = SamaDiT(config, nnx.Rngs(seed))
  # A trained head and type embedding are non-zero; zero init would hide routing mistakes.
  state = nnx.state(model.dit.head, nnx.Param)
  keys = jax.random.split(jax.random.key(seed + 1), 2)
  model.dit.head.proj_out.kernel[...] = 0.1 * jax.random.normal(keys[0], state["proj_out"]["kernel"].shape)
  if randomize_segments:
    model.segment_embedding[...] = 0.5 * jax.random.normal(keys[1], model.segment_embedding.shape)
  return model


def batch(config, b=2, f=3, h=4, w=6, fs=None, n_sem=5, seed=0):
  rng = np.random.default_rng(seed)
  r = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  return dict(latents=r(b, f, h, w, config.in_channels), timestep=jnp.asarray(rng.uniform(0, 1000, b), jnp.float32),
              text=r(b, 7, config.text_dim), source=r(b, fs or f, h, w, config.in_channels),
              semantic=r(b, n_sem, config.semantic_dim))


def test_reduces_to_plain_wan_when_unused(tiny_config):
  model = make_model(tiny_config, randomize_segments=False)  # type embedding at its zero init
  x = batch(tiny_config)
  plain = model.dit(x["latents"], x["timestep"], x["text"])
  sama, semantic_pred = model(x["latents"], x["timestep"], x["text"])
  assert semantic_pred is None
  np.testing.assert_array_equal(np.asarray(sama), np.asarray(plain))
  # ...and the check can fail (a constant offset would vanish in LayerNorm, so a random one).
  model.segment_embedding[...] = jax.random.normal(jax.random.key(0), model.segment_embedding.shape)
  shifted, _ = model(x["latents"], x["timestep"], x["text"])
  assert np.abs(np.asarray(shifted) - np.asarray(plain)).max() > 1e-3


def test_semantic_head_shape_and_gradients_reach_every_sama_module(tiny_config):
  model = make_model(tiny_config)
  x = batch(tiny_config, n_sem=tiny_config.num_semantic_tokens)
  graphdef, params = nnx.split(model, nnx.Param)

  def loss(params, which):
    velocity, semantic_pred = nnx.merge(graphdef, params)(
        x["latents"], x["timestep"], x["text"], source=x["source"], semantic=x["semantic"])
    assert semantic_pred.shape == (2, tiny_config.num_semantic_tokens, tiny_config.semantic_dim)
    return jnp.mean(jnp.abs(semantic_pred)) if which == "semantic" else jnp.mean(velocity ** 2)

  norm = lambda tree: float(sum(jnp.sum(jnp.abs(a)) for a in jax.tree.leaves(tree)))
  grad = jax.jit(jax.grad(loss), static_argnums=1)  # one compile beats op-by-op dispatch
  g_sem = grad(params, "semantic")
  for module in ("semantic_head", "siglip_feat_mlp", "segment_embedding"):
    assert norm(g_sem[module]) > 0, module
  assert norm(g_sem["dit"]["blocks"]) > 0  # the semantic loss trains the backbone
  g_vel = grad(params, "velocity")
  assert norm(g_vel["siglip_feat_mlp"]) > 0  # semantic tokens condition the video through attention
  assert norm(g_vel["semantic_head"]) == 0  # the head sees only semantic slots


def test_segment_embedding_changes_only_its_group(tiny_config):
  model = make_model(tiny_config)
  x = batch(tiny_config, fs=5)
  before, _, (ns, nm, nt) = model.assemble(x["latents"], x["source"], x["semantic"])
  assert (ns, nm, nt) == (5 * 2 * 3, 5, 3 * 2 * 3)
  groups = {0: slice(0, ns), 1: slice(ns, ns + nm), 2: slice(ns + nm, ns + nm + nt)}
  for segment, changed in groups.items():
    model.segment_embedding[segment] = model.segment_embedding[segment] + 1.0
    after, _, _ = model.assemble(x["latents"], x["source"], x["semantic"])
    delta = np.abs(np.asarray(after - before)).max(axis=(0, 2))
    np.testing.assert_allclose(delta[changed], 1.0, rtol=1e-5)
    assert np.all(np.delete(delta, np.arange(delta.size)[changed]) == 0)
    before = after


def test_positions_same_shifted_and_zero(tiny_config):
  head_dim = tiny_config.dim // tiny_config.num_heads
  x = batch(tiny_config)
  grid = (3, 2, 3)
  target = grid_rope(grid, head_dim, 1024, 10000.0)
  _, (cos, sin), (ns, nm, nt) = make_model(tiny_config).assemble(x["latents"], x["source"], x["semantic"])
  np.testing.assert_array_equal(cos[:ns], target[0])  # source shares the target's positions
  np.testing.assert_array_equal(sin[:ns], target[1])
  np.testing.assert_array_equal(cos[ns + nm:], target[0])
  assert np.all(np.asarray(cos[ns:ns + nm]) == 0) and np.all(np.asarray(sin[ns:ns + nm]) == 0)

  tiny_config.source_rope, tiny_config.semantic_rope = "shifted", "identity"
  _, (cos, sin), _ = make_model(tiny_config).assemble(x["latents"], x["source"], x["semantic"])
  shifted = grid_rope(grid, head_dim, 1024, 10000.0, offset=grid)  # starts after the target grid
  np.testing.assert_array_equal(cos[:ns], shifted[0])
  np.testing.assert_array_equal(sin[:ns], shifted[1])
  assert np.all(np.asarray(cos[ns:ns + nm]) == 1) and np.all(np.asarray(sin[ns:ns + nm]) == 0)


def test_semantic_tokens_carry_no_position(tiny_config):
  """Zero rotation: permuting the semantic tokens permutes their predictions and leaves
  the velocity unchanged."""
  model = make_model(tiny_config)
  x = batch(tiny_config)
  perm = np.array([3, 0, 4, 1, 2])
  v1, s1 = model(x["latents"], x["timestep"], x["text"], source=x["source"], semantic=x["semantic"])
  v2, s2 = model(x["latents"], x["timestep"], x["text"], source=x["source"], semantic=x["semantic"][:, perm])
  np.testing.assert_allclose(np.asarray(s2), np.asarray(s1)[:, perm], atol=1e-5)
  np.testing.assert_allclose(np.asarray(v2), np.asarray(v1), atol=1e-5)


def test_source_shorter_than_target_and_source_matters(tiny_config):
  """Speed-perturbed sources have fewer frames; token mode takes any Fs."""
  model = make_model(tiny_config)
  x = batch(tiny_config, f=5, fs=3)
  v, _ = model(x["latents"], x["timestep"], x["text"], source=x["source"])
  assert v.shape == x["latents"].shape
  v_other, _ = model(x["latents"], x["timestep"], x["text"], source=x["source"] + 1.0)
  assert np.abs(np.asarray(v - v_other)).max() > 1e-4


def test_channel_mode(tiny_config):
  tiny_config.source_mode = "channel"
  model = make_model(tiny_config)
  assert model.dit.patch_embedding.kernel.shape == (2 * 4 * tiny_config.in_channels, tiny_config.dim)
  x = batch(tiny_config)
  v, s = model(x["latents"], x["timestep"], x["text"], source=x["source"], semantic=x["semantic"])
  assert v.shape == x["latents"].shape and s.shape == x["semantic"].shape
  _, _, (ns, nm, nt) = model.assemble(x["latents"], x["source"], x["semantic"])
  assert (ns, nm, nt) == (0, 5, 18)  # no source tokens in channel mode
  with pytest.raises(ValueError, match="channel mode"):
    model(x["latents"], x["timestep"], x["text"], source=x["source"][:, :1])


@pytest.mark.parametrize("field,bad,message", [
    ("latents", lambda x: x[..., :3], r"latents has shape \(2, 3, 4, 6, 3\); expected \[B, F, H, W, 16\]"),
    ("latents", lambda x: x[:, :, :3], "divisible by the patch size"),
    ("timestep", lambda t: t[:1], r"timestep has shape \(1,\); expected \[2\]"),
    ("text", lambda c: c[..., :5], r"expected \[2, L, 32\]"),
    ("source", lambda s: s[..., :8], r"source has shape .*; expected \[2, Fs, Hs, Ws, 16\]"),
    ("semantic", lambda s: s[..., :7], r"expected \[2, N, 48\]"),
])
def test_bad_shapes_raise_clear_errors(tiny_config, field, bad, message):
  model = make_model(tiny_config)
  x = batch(tiny_config)
  x[field] = bad(x[field])
  with pytest.raises(ValueError, match=message):
    model(x["latents"], x["timestep"], x["text"], source=x["source"], semantic=x["semantic"])


def test_bf16_compute_stays_close_to_float32(tiny_config):
  model32 = make_model(tiny_config)
  tiny_config.dtype = "bfloat16"
  model16 = make_model(tiny_config)  # same seed: same float32 master weights
  x = batch(tiny_config)
  args = (x["latents"], x["timestep"], x["text"])
  v32, s32 = model32(*args, source=x["source"], semantic=x["semantic"])
  v16, s16 = model16(*args, source=x["source"], semantic=x["semantic"])
  assert v16.dtype == jnp.float32 and s16.dtype == jnp.float32  # outputs leave in float32
  err = float(jnp.abs(v16 - v32).max() / jnp.abs(v32).max())
  assert 0 < err < 5e-2, err


@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
def test_remat_policies_keep_gradients(tiny_config, remat):
  x = batch(tiny_config)

  def grads(config):
    graphdef, params = nnx.split(make_model(config), nnx.Param)
    f = lambda p: jnp.mean(nnx.merge(graphdef, p)(x["latents"], x["timestep"], x["text"], source=x["source"])[0] ** 2)
    return jax.jit(jax.grad(f))(params)

  reference = grads(tiny_config)
  tiny_config.remat = remat
  for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(grads(tiny_config))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_bad_config_values_are_named():
  with pytest.raises(ValueError, match=r"model.source_mode='tokens'; expected one of"):
    model_config(source_mode="tokens")
  with pytest.raises(ValueError, match="not divisible by model.num_heads"):
    model_config(dim=100, num_heads=3)
  with pytest.raises(ValueError, match=r"model.remat='some'"):
    SamaDiT(model_config(dim=64, num_heads=2, num_layers=1, ffn_dim=32, remat="some"), nnx.Rngs(0))(
        jnp.zeros((1, 1, 2, 2, 16)), jnp.zeros((1,)), jnp.zeros((1, 3, 4096)))


def test_bf16_timestep_rounding_matches_the_released_pipeline(tiny_config):
  """With timestep_bf16, t is rounded to bf16 before the sinusoid: 500.9 embeds as 500."""
  x = batch(tiny_config)
  t_near = jnp.asarray([500.9, 10.01], jnp.float32)
  t_round = t_near.astype(jnp.bfloat16).astype(jnp.float32)
  assert float(t_round[0]) == 500.0
  for flag, same in ((True, True), (False, False)):
    tiny_config.timestep_bf16 = flag
    model = make_model(tiny_config)
    a, _ = model(x["latents"], t_near, x["text"])
    b, _ = model(x["latents"], t_round, x["text"])
    assert bool(jnp.array_equal(a, b)) == same


def test_velocity_is_the_head_output_for_velocity_prediction(tiny_config):
  model = make_model(tiny_config)
  x = batch(tiny_config)
  kw = dict(source=x["source"], semantic=x["semantic"])
  v, vs = model.velocity(x["latents"], x["timestep"], x["text"], **kw)
  out, sem = model(x["latents"], x["timestep"], x["text"], **kw)
  np.testing.assert_array_equal(np.asarray(v), np.asarray(out))
  np.testing.assert_array_equal(np.asarray(vs), np.asarray(sem))


def test_x0_prediction_turns_the_head_output_into_a_velocity(tiny_config):
  """prediction="x0": v = (x_σ − x̂0) / σ for latents and semantic tokens alike, σ = t / 1000;
  the same weights give the raw head output from `__call__`."""
  config = tiny_config.copy_and_resolve_references()
  config.prediction = "x0"
  model = make_model(config)
  x = batch(config)
  x["timestep"] = jnp.asarray([700.0, 10.0])
  kw = dict(source=x["source"], semantic=x["semantic"])
  v, vs = model.velocity(x["latents"], x["timestep"], x["text"], **kw)
  out, sem = model(x["latents"], x["timestep"], x["text"], **kw)
  sigma = np.asarray(x["timestep"]) / 1000.0
  np.testing.assert_allclose(np.asarray(v), (np.asarray(x["latents"]) - np.asarray(out)) / sigma[:, None, None, None, None],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(vs), (np.asarray(x["semantic"]) - np.asarray(sem)) / sigma[:, None, None],
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="prediction"):
    model_config(prediction="eps")


@pytest.mark.parametrize("source_mode", ["token", "channel"])
@pytest.mark.parametrize("prediction, sign", [("x0", 1.0), ("velocity", -1.0)])
def test_source_skip_adds_the_source_to_the_head_output(tiny_config, source_mode, prediction, sign):
  """source_skip: x̂0 = source + head, or v̂ = head − source, where the source has the
  latents' shape; nothing is added without a source or with a source of another length."""
  config = tiny_config.copy_and_resolve_references()
  config.update(source_mode=source_mode, prediction=prediction)
  plain = make_model(config.copy_and_resolve_references())
  config.source_skip = True
  skip = make_model(config)
  x = batch(config)
  kw = dict(source=x["source"], semantic=x["semantic"])
  out, sem = skip(x["latents"], x["timestep"], x["text"], **kw)
  ref, ref_sem = plain(x["latents"], x["timestep"], x["text"], **kw)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref) + sign * np.asarray(x["source"]), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(sem), np.asarray(ref_sem))
  without, _ = skip(x["latents"], x["timestep"], x["text"])
  np.testing.assert_array_equal(np.asarray(without), np.asarray(plain(x["latents"], x["timestep"], x["text"])[0]))
  if source_mode == "token":  # a speed-perturbed (shorter) source has no frame-aligned skip
    short = batch(config, f=5, fs=3)
    a, _ = skip(short["latents"], short["timestep"], short["text"], source=short["source"])
    b, _ = plain(short["latents"], short["timestep"], short["text"], source=short["source"])
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("source_mode", ["token", "channel"])
def test_scale_input_feeds_the_blocks_one_minus_sigma_times_the_noisy_input(tiny_config, source_mode):
  """scale_input: the model at σ = t/1000 sees (1 − σ)·x_σ for the latents and the noisy
  semantic tokens (the clean source unscaled), so at σ = 1 it cannot see the noise; the
  velocity it returns is still (x_σ − x̂0) / σ of the unscaled input."""
  config = tiny_config.copy_and_resolve_references()
  config.update(source_mode=source_mode, prediction="x0")
  plain = make_model(config.copy_and_resolve_references())
  config.scale_input = True
  scaled = make_model(config)
  x = batch(config)
  scale = 1.0 - np.asarray(x["timestep"]) / 1000.0
  out, sem = scaled(x["latents"], x["timestep"], x["text"], source=x["source"], semantic=x["semantic"])
  ref, ref_sem = plain(x["latents"] * scale[:, None, None, None, None], x["timestep"], x["text"], source=x["source"],
                       semantic=x["semantic"] * scale[:, None, None])
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(sem), np.asarray(ref_sem), rtol=1e-5, atol=1e-5)
  # Not the same as feeding the input unscaled (the check above has teeth).
  unscaled, _ = plain(x["latents"], x["timestep"], x["text"], source=x["source"], semantic=x["semantic"])
  assert np.abs(np.asarray(unscaled) - np.asarray(ref)).max() > 1e-3
  # At σ = 1 the noisy input is invisible.
  one = jnp.full_like(x["timestep"], 1000.0)
  a, _ = scaled(x["latents"], one, x["text"], source=x["source"])
  b, _ = scaled(2.0 * x["latents"] + 1.0, one, x["text"], source=x["source"])
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  v, _ = scaled.velocity(x["latents"], x["timestep"], x["text"], source=x["source"])
  sigma = np.asarray(x["timestep"])[:, None, None, None, None] / 1000.0
  x0, _ = scaled(x["latents"], x["timestep"], x["text"], source=x["source"])
  np.testing.assert_allclose(np.asarray(v), (np.asarray(x["latents"]) - np.asarray(x0)) / sigma, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="scale_input=True needs model.prediction='x0'"):
    model_config(scale_input=True)


def test_source_skip_with_a_silent_head_copies_the_source(tiny_config):
  """An x0 model with the skip and a zero head predicts the source at every level, so its
  flow velocity carries any x_σ to the source: the Euler sampler returns the source."""
  from sama_jax.diffusion.sampler import euler_sample
  config = tiny_config.copy_and_resolve_references()
  config.update(prediction="x0", source_skip=True)
  model = make_model(config)
  model.dit.head.proj_out.kernel[...] = jnp.zeros_like(model.dit.head.proj_out.kernel[...])
  model.dit.head.proj_out.bias[...] = jnp.zeros_like(model.dit.head.proj_out.bias[...])
  x = batch(config)
  noise = jax.random.normal(jax.random.key(3), x["latents"].shape)
  velocity = lambda latents, t, text, s: model.velocity(latents, t, text, source=x["source"], semantic=s)
  out = euler_sample(velocity, noise, x["text"], x["text"], steps=5, shift=3.0, guidance=1.0)
  np.testing.assert_allclose(np.asarray(out), np.asarray(x["source"]), rtol=1e-4, atol=1e-4)
