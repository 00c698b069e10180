"""The jitted train step under device meshes, the optimizer options and checkpoints."""

import os

import jax
import numpy as np
import pytest
from flax import linen as nn

from conftest import REPO
from sama_jax.config import load_config
from sama_jax.parallel.mesh import make_mesh, mesh_config
from sama_jax.parallel.sharding import global_batch
from sama_jax.train import checkpoint as ckpt
from sama_jax.train.config import train_config
from sama_jax.train.optimizer import learning_rate_table, make_optimizer
from sama_jax.train.state import create_train_state
from sama_jax.train.step import jit_train_step, make_train_step


def make_batch(b=8, seed=0, source=True, semantic=True):
  rng = np.random.default_rng(seed)
  r = lambda *s: rng.standard_normal(s).astype(np.float32)
  batch = {"latents": r(b, 3, 4, 4, 16), "text": r(b, 7, 32), "task": (np.arange(b) % 6).astype(np.int32)}
  if source:
    batch["source"] = r(b, 2, 4, 4, 16)
  if semantic:
    batch["semantic"] = r(b, 5, 48)
  return batch


def run(model_config, tc, degrees, steps=3, batch=None, state_hook=None):
  mc = mesh_config(**dict(zip(("data", "fsdp", "context", "tensor"), degrees)))
  mesh = make_mesh(mc, jax.devices()[:int(np.prod(degrees))])
  batch = make_batch() if batch is None else batch
  with jax.set_mesh(mesh), nn.logical_axis_rules(mc.rules):
    graphdef, optimizer, state, shardings = create_train_state(model_config, tc, mesh, mc.rules)
    step = jit_train_step(graphdef, optimizer, tc, shardings, mesh)
    history, rates = [], learning_rate_table(tc)
    for i in range(steps):
      state, metrics = step(state, global_batch(batch, mesh), jax.random.key(1), rates[min(i, len(rates) - 1)])
      history.append(jax.device_get(metrics))
  return state, history, shardings


@pytest.fixture(scope="module")
def single_device_losses():
  """The one-device reference for the mesh cases, computed once (configs/tiny.py, as the
  tiny_config fixture)."""
  config = load_config(os.path.join(REPO, "configs", "tiny.py")).model
  return run(config, train_config(learning_rate=1e-3), (1, 1, 1, 1))[1]


# (2, 2, 1, 2) and (1, 2, 2, 2) use every axis between them; the pure data / data x fsdp
# meshes run with -m slow.
@pytest.mark.parametrize("degrees", [pytest.param((8, 1, 1, 1), marks=pytest.mark.slow),
                                     pytest.param((2, 4, 1, 1), marks=pytest.mark.slow),
                                     (2, 2, 1, 2), (1, 2, 2, 2)])
def test_meshes_give_the_single_device_losses(tiny_config, single_device_losses, degrees):
  tc = train_config(learning_rate=1e-3)
  single = single_device_losses
  state, sharded, shardings = run(tiny_config, tc, degrees)
  for a, b in zip(single, sharded):
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
  assert single[0]["loss"] != single[2]["loss"]  # the steps did change the model
  kernel = state["params"]["dit"]["blocks"]["ffn"]["proj_in"]["kernel"]
  assert kernel.sharding == shardings["params"]["dit"]["blocks"]["ffn"]["proj_in"]["kernel"]


def test_metrics_report_each_part_and_task(tiny_config):
  tc = train_config(learning_rate=1e-3)
  _, history, _ = run(tiny_config, tc, (1, 1, 1, 1), steps=1)
  m = history[0]
  assert m["loss"] == pytest.approx(m["loss_flow"] + 0.1 * m["loss_semantic"], rel=1e-5)
  np.testing.assert_array_equal(m["task_count"], [2, 2, 1, 1, 1, 1])
  assert m["task_loss_sum"].sum() / 8 == pytest.approx(m["loss_flow"], rel=1e-5)
  assert m["grad_norm"] > 0 and m["learning_rate"] == pytest.approx(1e-3)


def test_no_semantic_tokens_means_no_semantic_loss(tiny_config):
  _, history, _ = run(tiny_config, train_config(), (1, 1, 1, 1), steps=1, batch=make_batch(semantic=False, source=False))
  assert history[0]["loss_semantic"] == 0 and history[0]["loss"] == history[0]["loss_flow"]


def test_loss_falls_when_fitting_one_batch(tiny_config):
  tc = train_config(learning_rate=3e-3, ema_decay=0.0, per_sample_timesteps=True, loss_weighting=False)
  _, history, _ = run(tiny_config, tc, (1, 1, 1, 1), steps=40, batch=make_batch(b=4))
  first, last = np.mean([h["loss"] for h in history[:5]]), np.mean([h["loss"] for h in history[-5:]])
  assert last < 0.9 * first, (first, last)


def test_frozen_parameters_do_not_move_and_ema_follows(tiny_config):
  tc = train_config(learning_rate=1e-2, trainable=r"(semantic_head|siglip_feat_mlp)\..*", ema_decay=0.5)
  mc = mesh_config(data=1)
  mesh = make_mesh(mc, jax.devices()[:1])
  graphdef, optimizer, state, _ = create_train_state(tiny_config, tc, mesh, mc.rules)
  before = jax.device_get(state["params"])
  new, _ = jax.jit(make_train_step(graphdef, optimizer, tc))(state, make_batch(), jax.random.key(0),
                                                               learning_rate_table(tc)[0])
  after = jax.device_get(new["params"])
  np.testing.assert_array_equal(after["dit"]["blocks"]["ffn"]["proj_in"]["kernel"],
                                before["dit"]["blocks"]["ffn"]["proj_in"]["kernel"])
  assert np.abs(after["semantic_head"]["proj"]["kernel"] - before["semantic_head"]["proj"]["kernel"]).max() > 0
  ema = jax.device_get(new["ema"])["semantic_head"]["proj"]["kernel"]
  np.testing.assert_allclose(ema, 0.5 * before["semantic_head"]["proj"]["kernel"]
                             + 0.5 * after["semantic_head"]["proj"]["kernel"], rtol=1e-6)


def test_gradient_accumulation_updates_every_k_micro_steps(tiny_config):
  tc = train_config(learning_rate=1e-2, grad_accum=2, ema_decay=0.0)
  mc = mesh_config(data=1)
  graphdef, optimizer, state, _ = create_train_state(tiny_config, tc, make_mesh(mc, jax.devices()[:1]), mc.rules)
  step = jax.jit(make_train_step(graphdef, optimizer, tc))
  kernel = lambda s: np.asarray(s["params"]["dit"]["blocks"]["ffn"]["proj_in"]["kernel"])
  k0 = kernel(state)
  rate = learning_rate_table(tc)[0]
  state, _ = step(state, make_batch(seed=1), jax.random.key(0), rate)
  np.testing.assert_array_equal(kernel(state), k0)  # first micro-step: gradients only accumulate
  state, _ = step(state, make_batch(seed=2), jax.random.key(0), rate)
  assert np.abs(kernel(state) - k0).max() > 0


def test_trainable_pattern_that_matches_nothing_is_an_error(tiny_config):
  mc = mesh_config(data=1)
  with pytest.raises(ValueError, match="matches no parameter"):
    create_train_state(tiny_config, train_config(trainable="encoder.*"), make_mesh(mc, jax.devices()[:1]), mc.rules)


def test_checkpoint_round_trip_restores_sharded_state_and_ema_params(tiny_config, tmp_path):
  tc = train_config(learning_rate=1e-3)
  state, _, shardings = run(tiny_config, tc, (2, 2, 1, 2), steps=1)
  manager = ckpt.checkpoint_manager(str(tmp_path))
  ckpt.save(manager, 1, state, {"note": "tiny"}, {"position": 7})
  manager.wait_until_finished()
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  restored, config, data = ckpt.restore(manager, like, shardings)
  assert config == {"note": "tiny"} and data == {"position": 7}
  for a, b, s in zip(jax.tree.leaves(state), jax.tree.leaves(restored), jax.tree.leaves(shardings)):
    assert b.sharding == s
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  ema = ckpt.restore_params(str(tmp_path), like["params"], shardings["params"], use_ema=True)
  for a, b in zip(jax.tree.leaves(state["ema"]), jax.tree.leaves(ema)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_mesh_degrees_are_named():
  with pytest.raises(ValueError, match="needs 16 devices; there are 8"):
    make_mesh(mesh_config(data=4, fsdp=4))
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    make_mesh(mesh_config(data=-1, fsdp=-1))
  with pytest.raises(ValueError, match="not divisible by 3"):
    make_mesh(mesh_config(data=-1, fsdp=3))


class _X0Oracle:
  """Stands in for an x0-predicting SamaDiT: returns the clean latents / tokens plus `delta`."""

  def __init__(self, x0, s0, delta):
    import ml_collections
    self.config = ml_collections.ConfigDict({"prediction": "x0"})
    self.x0, self.s0, self.delta = x0, s0, delta

  def __call__(self, x_t, t, text, *, source=None, semantic=None):
    return self.x0 + self.delta, self.s0 + self.delta


@pytest.mark.parametrize("floor", [None, 0.3])
@pytest.mark.parametrize("semantic_target", ["velocity", "x0_l1"])
def test_x0_prediction_loss_is_the_x0_error_over_the_held_sigma(semantic_target, floor):
  """For prediction="x0" the flow loss is mean((x̂0 − x0)² / max(σ, floor)²), floor 0.05 by
  default (train.x0_sigma_floor): zero for a perfect prediction, δ²·mean(1/held²) for one
  off by δ; the semantic L1 likewise."""
  import jax.numpy as jnp

  from sama_jax.diffusion.flow import X0_SIGMA_MIN
  from sama_jax.diffusion.schedule import sample_training_sigmas
  from sama_jax.train.step import compute_loss
  rng = np.random.default_rng(0)
  x0 = jnp.asarray(rng.standard_normal((6, 2, 4, 4, 3)), jnp.float32)
  s0 = jnp.asarray(rng.standard_normal((6, 5, 7)), jnp.float32)
  batch = {"latents": x0, "semantic": s0, "text": jnp.zeros((6, 3, 8))}
  c = train_config(per_sample_timesteps=True, loss_weighting=False, timestep_shift=3.0,
                   semantic_target=semantic_target, **({} if floor is None else {"x0_sigma_floor": floor}))
  key = jax.random.key(3)
  sigma, _ = sample_training_sigmas(jax.random.split(key, 3)[0], 6, 3.0, True, False)
  held = np.maximum(np.asarray(sigma), X0_SIGMA_MIN if floor is None else floor)
  assert (floor is None) or (np.asarray(sigma) < floor).any()  # the floor is exercised
  _, exact = compute_loss(_X0Oracle(x0, s0, 0.0), batch, key, c)
  assert float(exact["loss_flow"]) < 1e-10 and float(exact["loss_semantic"]) < 1e-5
  _, off = compute_loss(_X0Oracle(x0, s0, 0.1), batch, key, c)
  np.testing.assert_allclose(float(off["loss_flow"]), np.mean(0.01 / held ** 2), rtol=1e-4)
  expected_sem = np.mean(0.1 / held) if semantic_target == "velocity" else 0.1
  np.testing.assert_allclose(float(off["loss_semantic"]), expected_sem, rtol=1e-4)


@pytest.mark.parametrize("edit_weight", [0.0, 4.0])
def test_edit_weight_scales_the_loss_where_the_target_differs_from_the_source(edit_weight):
  """train.edit_weight: the error on latents the edit changes (|x0 − source| > 0.05) counts
  1 + edit_weight times; elsewhere, and with no source, once."""
  import jax.numpy as jnp

  from sama_jax.train.step import compute_loss
  rng = np.random.default_rng(1)
  x0 = jnp.asarray(rng.standard_normal((4, 2, 4, 4, 3)), jnp.float32)
  changed = np.zeros(x0.shape, bool)
  changed[:, :, :2, :1] = True  # 1/8 of every example
  source = jnp.where(jnp.asarray(changed), x0 + 0.5, x0 + 0.01)  # 0.01: under the threshold
  c = train_config(per_sample_timesteps=True, loss_weighting=False, x0_sigma_floor=1.0, edit_weight=edit_weight)
  oracle = _X0Oracle(x0, jnp.zeros((4, 1, 1)), 0.1)
  key = jax.random.key(0)
  _, plain = compute_loss(oracle, {"latents": x0, "text": jnp.zeros((4, 3, 8))}, key, c)
  _, weighted = compute_loss(oracle, {"latents": x0, "source": source, "text": jnp.zeros((4, 3, 8))}, key, c)
  np.testing.assert_allclose(float(plain["loss_flow"]), 0.01, rtol=1e-4)
  np.testing.assert_allclose(float(weighted["loss_flow"]), 0.01 * (1 + edit_weight / 8), rtol=1e-4)


def test_area_normalised_edit_weight_gives_each_edit_the_same_weight_whatever_its_size():
  """train.edit_area_norm: an example's loss is copy error + edit_weight · (mean error over
  its edited latents), so an edit of 1/32 of the latents counts as much as one of 1/2."""
  import jax.numpy as jnp

  from sama_jax.train.step import compute_loss, edit_weights
  rng = np.random.default_rng(2)
  x0 = jnp.asarray(rng.standard_normal((2, 1, 4, 4, 2)), jnp.float32)  # 32 latents per example
  changed = np.zeros(x0.shape, bool)
  changed[0, 0, 0, 0, 0] = True  # example 0: 1 of 32 latents edited
  changed[1, 0, :2] = True  # example 1: 16 of 32
  source = jnp.where(jnp.asarray(changed), x0 + 0.5, x0)
  w = np.asarray(edit_weights(x0, source, 3.0, area_normalised=True))
  np.testing.assert_allclose(w[0][changed[0]], 1 + 3.0 * 32)
  np.testing.assert_allclose(w[1][changed[1]], 1 + 3.0 * 2)
  np.testing.assert_allclose(w[~changed], 1.0)
  np.testing.assert_allclose(np.asarray(edit_weights(x0, x0, 3.0, area_normalised=True)), 1.0)  # no edit
  # Through the loss: an error only on the edited latents gives both examples the same edit term.
  c = train_config(per_sample_timesteps=True, loss_weighting=False, x0_sigma_floor=1.0, edit_weight=3.0,
                   edit_area_norm=True)
  pred = jnp.where(jnp.asarray(changed), x0 + 0.1, x0)
  batch = {"latents": x0, "source": source, "text": jnp.zeros((2, 3, 8))}
  _, aux = compute_loss(_X0Oracle(pred, jnp.zeros((2, 1, 1)), 0.0), batch, jax.random.key(0), c)
  # Per example: copy term (the 0.01 error averaged over all 32 latents: 1/32 or 16/32 of
  # it) + edit term 3 x 0.01 in both; i.e. (1 + 3·32)·0.01 on 1 of 32, (1 + 3·2)·0.01 on 16 of 32.
  np.testing.assert_allclose(float(aux["loss_flow"]), 0.5 * (97 / 32 + 7 / 2) * 0.01, rtol=1e-4)


def test_task_weights_scale_each_tasks_share_of_the_flow_loss_and_leave_its_metric_alone():
  """train.task_weights: an example of a named task counts with its weight in the flow loss
  (the one the gradient sees); tasks not named count once; per-task metrics stay unweighted."""
  import jax.numpy as jnp

  from sama_jax.train.step import compute_loss
  rng = np.random.default_rng(4)
  x0 = jnp.asarray(rng.standard_normal((4, 1, 4, 4, 3)), jnp.float32)
  names = ("t2v", "cube", "speed", "tube", "image_edit", "video_edit")
  batch = {"latents": x0, "text": jnp.zeros((4, 3, 8)),
           "task": jnp.asarray([names.index(t) for t in ("cube", "cube", "image_edit", "tube")], jnp.int32)}
  oracle = _X0Oracle(x0, jnp.zeros((4, 1, 1)), 0.1)  # squared error 0.01 on every example
  common = dict(per_sample_timesteps=True, loss_weighting=False, x0_sigma_floor=1.0)
  _, plain = compute_loss(oracle, batch, jax.random.key(0), train_config(**common))
  _, weighted = compute_loss(oracle, batch, jax.random.key(0),
                             train_config(task_weights={"cube": 0.25, "image_edit": 2.0}, **common))
  np.testing.assert_allclose(float(plain["loss_flow"]), 0.01, rtol=1e-4)
  np.testing.assert_allclose(float(weighted["loss_flow"]), 0.01 * (0.25 + 0.25 + 2.0 + 1.0) / 4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(weighted["task_loss_sum"]), np.asarray(plain["task_loss_sum"]), rtol=1e-5)


@pytest.mark.parametrize("weights, message", [({"pretext": 0.1}, "names \\['pretext'\\]"),
                                              ({"cube": -1.0}, "must be >= 0")])
def test_bad_task_weights_are_named(weights, message):
  with pytest.raises(ValueError, match=f"train.task_weights.*{message}"):
    train_config(task_weights=weights)


def test_learning_rate_schedule_warms_up_then_decays_and_restarts_where_told():
  from sama_jax.train.optimizer import learning_rate_schedule
  one = learning_rate_schedule(train_config(learning_rate=1.0, warmup_steps=10, schedule="cosine", total_steps=110))
  np.testing.assert_allclose([float(one(s)) for s in (0, 5, 10, 60, 110)], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  cycles = learning_rate_schedule(train_config(learning_rate=1.0, warmup_steps=10, schedule="cosine",
                                               total_steps=1000, schedule_restarts=(0.2,)))
  # Cycle 1: steps 0-199 (warmup 10, cosine over 190); cycle 2: steps 200-999 (warmup 10, cosine over 790).
  expected = {0: 0.0, 10: 1.0, 105: 0.5, 199: 0.5 * (1 + np.cos(np.pi * 189 / 190)),
              200: 0.0, 205: 0.5, 210: 1.0, 605: 0.5, 1000: 0.0}
  np.testing.assert_allclose([float(cycles(s)) for s in expected], list(expected.values()), atol=1e-6)


def test_learning_rate_table_follows_the_schedule_per_update():
  from sama_jax.train.optimizer import learning_rate_schedule
  tc = train_config(learning_rate=1.0, warmup_steps=4, schedule="linear", total_steps=24, grad_accum=3)
  table = learning_rate_table(tc)
  schedule = learning_rate_schedule(tc)
  assert table.shape == (24,) and table.dtype == np.float32
  np.testing.assert_allclose(table, [float(schedule(s // 3)) for s in range(24)], rtol=1e-6)
  assert table[0] == table[2] == 0.0 and table[3] == pytest.approx(0.25)  # 3 micro-steps per update


def test_optimizer_at_rate_one_scaled_is_adamw_at_that_rate():
  """make_optimizer runs AdamW at rate 1 and the step scales its updates: bit for bit
  optax's AdamW (clipping and weight decay included) at the step's rate."""
  import optax
  tc = train_config(learning_rate=3e-3, weight_decay=0.01, grad_clip=1.0)
  rng = np.random.default_rng(0)
  params = {"a": rng.standard_normal((4, 3)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
  ours, ref = make_optimizer(tc, params), optax.chain(optax.clip_by_global_norm(tc.grad_clip),
                                                     optax.adamw(tc.learning_rate, b1=tc.b1, b2=tc.b2, eps=tc.eps,
                                                                 weight_decay=tc.weight_decay))
  s_ours, s_ref = ours.init(params), ref.init(params)
  for i in range(3):
    grads = jax.tree.map(lambda p: 3.0 * rng.standard_normal(p.shape).astype(np.float32), params)
    u_ours, s_ours = ours.update(grads, s_ours, params)
    u_ref, s_ref = ref.update(grads, s_ref, params)
    for k in params:
      np.testing.assert_array_equal(np.float32(tc.learning_rate) * u_ours[k], u_ref[k])


def test_runs_that_differ_in_schedule_compile_one_program(tiny_config):
  """Rate, warmup, decay, length and restarts are not in the train step's program, so
  stage 2 (and the science table's runs with stage 1's loss) reuse stage 1's compiled step."""
  mc = mesh_config(data=1)
  mesh = make_mesh(mc, jax.devices()[:1])
  first = train_config(learning_rate=1e-3, warmup_steps=100, schedule="cosine", total_steps=400,
                       schedule_restarts=(0.1,))
  second = train_config(learning_rate=1e-4, warmup_steps=10, schedule="linear", total_steps=50)
  texts = []
  for tc in (first, second):
    graphdef, optimizer, state, _ = create_train_state(tiny_config, tc, mesh, mc.rules)
    step = jax.jit(make_train_step(graphdef, optimizer, tc))
    texts.append(step.lower(state, make_batch(), jax.random.key(0), learning_rate_table(tc)[0]).as_text())
  assert texts[0] == texts[1]


@pytest.mark.parametrize("restarts", [(0.0,), (1.0,), (0.5, 0.2), (0.3, 0.3)])
def test_bad_schedule_restarts_are_named(restarts):
  with pytest.raises(ValueError, match=r"train.schedule_restarts=.*increasing fractions of the run in \(0, 1\)"):
    train_config(schedule_restarts=restarts)


@pytest.mark.parametrize("field, value", [("schedule", "step"), ("grad_accum", 0), ("ema_decay", 1.0),
                                          ("x0_sigma_floor", 0.0), ("edit_weight", -1.0)])
def test_bad_train_config_values_are_named(field, value):
  with pytest.raises(ValueError, match=f"train.{field}="):
    train_config(**{field: value})
