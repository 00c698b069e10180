"""Flow-matching schedule and losses against the numbers in SAMA_METHOD.md and a NumPy
re-derivation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sama_jax.diffusion import flow, schedule


def test_sampling_timesteps_match_the_released_scheduler():
  t = 1000 * schedule.sampling_sigmas(50, 5.0)
  np.testing.assert_allclose(t[:3], [1000.0, 995.935, 991.736], atol=1e-3)
  np.testing.assert_allclose(t[-4:], [241.935, 172.414, 92.593, 0.0], atol=1e-3)
  assert len(t) == 51 and np.all(np.diff(t) < 0)


def test_training_weight_shape_from_the_method_notes():
  sigmas = schedule.training_sigmas(5.0)
  w = schedule.training_weights(sigmas)
  t = 1000 * sigmas
  assert len(t) == 1000 and t[0] == 1000.0
  assert w[0] == 0.0  # t = 1000 is the farthest level from 500
  assert w.max() == pytest.approx(2.076, abs=2e-3)
  assert w[-1] == pytest.approx(0.032, abs=2e-3) and t[-1] == pytest.approx(4.98, abs=0.01)
  assert w.mean() == pytest.approx(1.0)
  assert np.mean(t > 500) == pytest.approx(0.83, abs=0.01)  # the shift favours high noise


def test_one_level_per_batch_or_per_example():
  sig, w = schedule.sample_training_sigmas(jax.random.key(0), 8)
  assert np.unique(np.asarray(sig)).size == 1
  sig, w = schedule.sample_training_sigmas(jax.random.key(0), 64, per_sample=True)
  assert np.unique(np.asarray(sig)).size > 30
  levels = schedule.training_sigmas()
  weights = schedule.training_weights(levels)
  for s, weight in zip(np.asarray(sig), np.asarray(w)):
    level = np.argmin(np.abs(levels - s))
    assert abs(levels[level] - s) < 1e-6 and weight == pytest.approx(weights[level], rel=1e-5)


def test_interpolation_and_target_convention():
  rng = np.random.default_rng(0)
  x0, eps = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
  sigma = np.array([0.0, 1.0])
  xt = np.asarray(flow.interpolate(jnp.asarray(x0), jnp.asarray(eps), jnp.asarray(sigma)))
  np.testing.assert_allclose(xt[0], x0[0], rtol=1e-6)  # σ = 0 is data
  np.testing.assert_allclose(xt[1], eps[1], rtol=1e-6)  # σ = 1 is noise
  # One Euler step x ← x + v·Δσ with the true velocity lands exactly on the line.
  s = np.array([0.7, 0.3])
  x = np.asarray(flow.interpolate(jnp.asarray(x0), jnp.asarray(eps), jnp.asarray(s)))
  v = np.asarray(flow.velocity_target(jnp.asarray(x0), jnp.asarray(eps)))
  np.testing.assert_allclose(x + v * (-s)[:, None, None], x0, atol=1e-5)


def test_losses_against_numpy():
  rng = np.random.default_rng(1)
  v, x0, eps = (rng.standard_normal((3, 2, 4, 4, 5)) for _ in range(3))
  w = np.array([0.5, 1.0, 2.0])
  expected = np.mean(np.mean(((v - (eps - x0)) ** 2).reshape(3, -1), axis=1) * w)
  assert float(flow.flow_loss(*(jnp.asarray(a) for a in (v, x0, eps, w)))) == pytest.approx(expected, rel=1e-5)
  p, s0, es = (rng.standard_normal((3, 65, 8)) for _ in range(3))
  assert float(flow.semantic_loss(jnp.asarray(p), jnp.asarray(s0), jnp.asarray(es))) == pytest.approx(
      np.mean(np.abs(p - (es - s0))), rel=1e-5)
  assert float(flow.semantic_loss(jnp.asarray(p), jnp.asarray(s0), jnp.asarray(es), "x0_l1")) == pytest.approx(
      np.mean(np.abs(p - s0)), rel=1e-5)
  with pytest.raises(ValueError, match="expected one of"):
    flow.semantic_loss(jnp.asarray(p), jnp.asarray(s0), jnp.asarray(es), "eps")


def test_euler_with_the_exact_velocity_lands_on_the_data():
  """For data concentrated at x0 the true velocity at x is (x − x0)/σ; Euler on any level
  grid then reaches x0 exactly (the path is a straight line)."""
  from sama_jax.diffusion.sampler import euler_sample
  rng = np.random.default_rng(0)
  x0 = jnp.asarray(rng.standard_normal((2, 3, 4, 4, 5)), jnp.float32)
  s0 = jnp.asarray(rng.standard_normal((2, 6, 7)), jnp.float32)

  def oracle(x, t, text, s):
    sigma = (t / 1000.0)[:, None, None, None, None]
    n = x.shape[0] // x0.shape[0]  # doubled batch under guidance
    vs = None if s is None else (s - jnp.concatenate([s0] * n)) / sigma[..., 0, 0]
    return (x - jnp.concatenate([x0] * n)) / sigma, vs

  text = jnp.zeros((2, 4, 8))
  calls = []
  sample = jax.jit(lambda noise, s: euler_sample(oracle, noise, text, text, s, steps=7, shift=5.0,
                                                  guidance=3.0, progress=lambda i: calls.append(int(i))))
  out = sample(jnp.asarray(rng.standard_normal(x0.shape), jnp.float32),
               jnp.asarray(rng.standard_normal(s0.shape), jnp.float32))
  np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=1e-4)
  jax.effects_barrier()
  assert sorted(calls) == list(range(7))


def test_guidance_is_text_only_and_linear():
  from sama_jax.diffusion.sampler import guided_velocity
  text, neg = jnp.ones((1, 2, 3)), jnp.zeros((1, 2, 3))
  fn = lambda x, t, c, s: (x * 0 + c.sum(axis=(1, 2))[:, None], None)  # positive: 6, negative: 0
  v, vs = guided_velocity(fn, jnp.zeros((1, 4)), None, jnp.zeros((1,)), text, neg, 5.0)
  np.testing.assert_allclose(np.asarray(v), 30.0)  # 0 + 5·(6 − 0)
  assert vs is None
  v1, _ = guided_velocity(fn, jnp.zeros((1, 4)), None, jnp.zeros((1,)), text, neg, 1.0)
  np.testing.assert_allclose(np.asarray(v1), 6.0)  # scale 1: the positive branch alone


def test_two_scale_guidance_matches_the_released_formula():
  """v = v_IT + s_I·(v_IT − v_0T) + s_T·(v_IT − v_I0) with s_T = scale − 1 (SAMA_METHOD.md §4.7),
  checked in NumPy for the latents and the semantic tokens; s_I = 0 is text-only guidance."""
  from sama_jax.diffusion.sampler import guided_velocity
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 5)), jnp.float32)
  s = jnp.asarray(rng.standard_normal((2, 3)), jnp.float32)
  text = jnp.asarray(rng.standard_normal((2, 4, 6)), jnp.float32)
  neg = jnp.asarray(rng.standard_normal((2, 4, 6)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((6,)), jnp.float32)

  def with_source(x, t, c, s):  # any function of the text and the state
    return jnp.sin(x) + c.mean(axis=1) @ w[:, None], jnp.cos(s) * c.sum(axis=(1, 2))[:, None]

  def without_source(x, t, c, s):
    return 0.5 * x - 1.0, 2.0 * s

  v_it, s_it = (np.asarray(a) for a in with_source(x, None, text, s))
  v_i0, s_i0 = (np.asarray(a) for a in with_source(x, None, neg, s))
  v_0t, s_0t = (np.asarray(a) for a in without_source(x, None, text, s))
  for scale, s_i in ((5.0, 2.0), (1.0, 3.0), (4.0, 0.0)):
    v, vs = guided_velocity(with_source, x, s, jnp.zeros((2,)), text, neg, scale, s_i, without_source)
    np.testing.assert_allclose(np.asarray(v), v_it + s_i * (v_it - v_0t) + (scale - 1) * (v_it - v_i0), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(vs), s_it + s_i * (s_it - s_0t) + (scale - 1) * (s_it - s_i0), rtol=1e-5,
                               atol=1e-5)
  with pytest.raises(ValueError, match="no_source_fn"):
    guided_velocity(with_source, x, s, jnp.zeros((2,)), text, neg, 5.0, 1.0)


def test_euler_with_a_perfect_x0_predictor_lands_on_the_data():
  """An x0-predicting model that always outputs the data: `velocity_from_x0` gives the
  exact straight-line velocity, and the sampler ends at x0 for any grid (shift 1, 50 steps
  reaches σ = 0.02, below the training floor)."""
  from sama_jax.diffusion.sampler import euler_sample
  rng = np.random.default_rng(1)
  x0 = jnp.asarray(rng.standard_normal((1, 2, 4, 4, 3)), jnp.float32)

  def model(x, t, text, s):
    n = x.shape[0] // x0.shape[0]
    return flow.velocity_from_x0(jnp.concatenate([x0] * n), x, t / 1000.0), None

  text = jnp.zeros((1, 4, 8))
  for steps, shift in ((1, 3.0), (5, 3.0), (50, 1.0)):
    out = euler_sample(model, jnp.asarray(rng.standard_normal(x0.shape), jnp.float32), text, text,
                       steps=steps, shift=shift, guidance=4.0)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=1e-4)
