"""LoRA fine-tuning: the adapter algebra, the trainer path (only adapters trained, saved,
resumed, merged for inference) and export to diffusers / DiffSynth LoRA files."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from conftest import REPO, rel_error
from sama_jax.config import load_config
from sama_jax.lora import A, B, adapter_leaves, apply_lora, init_lora, lora_config, merge_lora
from sama_jax.models import SamaDiT
from sama_jax.parallel.mesh import make_mesh, mesh_config
from sama_jax.parallel.sharding import global_batch
from sama_jax.train import checkpoint as ckpt
from sama_jax.train.config import train_config
from sama_jax.train.state import create_train_state
from sama_jax.train.step import jit_train_step
from test_train_step import make_batch

ATTN_FFN = [f"{m}.{p}" for m in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out")] + [
    "ffn.proj_in", "ffn.proj_out"]


@pytest.fixture(scope="module")
def tiny():
  """(the tiny model config, random parameters of it), built once for the module."""
  config = load_config(os.path.join(REPO, "configs", "tiny.py")).model
  return config, nnx.to_pure_dict(nnx.state(SamaDiT(config, nnx.Rngs(0)), nnx.Param))


def randomised(lora, seed=1, std=0.3):
  """The adapters with B (zero at init) drawn at random, so they change the model."""
  rng = np.random.default_rng(seed)
  leaves = adapter_leaves(lora)
  for adapter in leaves.values():
    adapter[B] = jnp.asarray(rng.standard_normal(adapter[B].shape).astype(np.float32) * std)
  return lora


def flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_default_targets_are_attention_and_ffn_kernels_with_stacked_shapes(tiny):
  tiny_config, params = tiny
  lora = init_lora(params, lora_config(rank=4), jax.random.key(0))
  leaves = adapter_leaves(lora)
  assert sorted(leaves) == sorted(f"dit.blocks.{m}.kernel" for m in ATTN_FFN)
  d, ffn, layers = tiny_config.dim, tiny_config.ffn_dim, tiny_config.num_layers
  assert leaves["dit.blocks.ffn.proj_in.kernel"][A].shape == (layers, d, 4)
  assert leaves["dit.blocks.ffn.proj_in.kernel"][B].shape == (layers, 4, ffn)
  assert not np.any(np.asarray(leaves["dit.blocks.attn1.to_q.kernel"][B]))
  assert np.std(np.asarray(leaves["dit.blocks.attn1.to_q.kernel"][A])) > 0


def test_initial_lora_model_equals_the_base_exactly(tiny):
  _, params = tiny
  merged = apply_lora(params, init_lora(params, lora_config(rank=4), jax.random.key(0)), lora_config(rank=4))
  before, after = flat(params), flat(merged)
  assert before.keys() == after.keys()
  for k in before:
    np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def test_apply_lora_adds_the_scaled_product_and_merge_lora_agrees(tiny):
  c = lora_config(rank=4, alpha=8.0)  # scale 2
  _, params = tiny
  lora = randomised(init_lora(params, c, jax.random.key(0)))
  merged = flat(apply_lora(params, lora, c))
  w = np.asarray(params["dit"]["blocks"]["ffn"]["proj_out"]["kernel"])
  ad = adapter_leaves(lora)["dit.blocks.ffn.proj_out.kernel"]
  want = w + 2.0 * np.stack([np.asarray(ad[A][i]) @ np.asarray(ad[B][i]) for i in range(w.shape[0])])
  np.testing.assert_allclose(merged["['dit']['blocks']['ffn']['proj_out']['kernel']"], want, rtol=1e-6, atol=1e-6)
  untouched = "['dit']['blocks']['ffn']['proj_out']['bias']"
  np.testing.assert_array_equal(merged[untouched], flat(params)[untouched])
  donated = jax.tree.map(jnp.copy, params)
  for k, v in flat(merge_lora(donated, lora, c)).items():
    np.testing.assert_array_equal(v, merged[k], err_msg=k)


@pytest.mark.parametrize("overrides,match", [
    (dict(rank=4, targets=r"dit\.blocks\.attn1\.to_q\.bias"), "linear kernels only"),
    (dict(rank=4, targets=r"nothing"), "matches no parameter"),
    (dict(rank=100), "exceeds"),
])
def test_bad_targets_are_named(tiny, overrides, match):
  with pytest.raises(ValueError, match=match):
    init_lora(tiny[1], lora_config(**overrides), jax.random.key(0))


def test_negative_rank_is_refused():
  with pytest.raises(ValueError, match="lora.rank=-1"):
    lora_config(rank=-1)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
  """Three steps of rank-4 LoRA training (alpha 8, EMA 0.5) through the trainer's state
  and step, saved as a trainer workdir. Returns (workdir, initial state, final state,
  shardings, losses)."""
  model = load_config(os.path.join(REPO, "configs", "tiny.py")).model
  tc, c = train_config(learning_rate=1e-2, ema_decay=0.5), lora_config(rank=4, alpha=8.0)
  mc = mesh_config(data=1)
  mesh = make_mesh(mc, jax.devices()[:1])
  workdir = str(tmp_path_factory.mktemp("lora_run"))
  with jax.set_mesh(mesh), nn.logical_axis_rules(mc.rules):
    graphdef, optimizer, state, shardings = create_train_state(model, tc, mesh, mc.rules, lora=c)
    initial = jax.tree.map(np.asarray, state)
    step = jit_train_step(graphdef, optimizer, tc, shardings, mesh, c)
    batch = global_batch(make_batch(b=4), mesh)
    losses = []
    for _ in range(3):
      state, metrics = step(state, batch, jax.random.key(1), np.float32(tc.learning_rate))
      losses.append(float(metrics["loss"]))
    manager = ckpt.checkpoint_manager(os.path.join(workdir, "checkpoints"), async_save=False)
    ckpt.save(manager, 3, state, {"model": model.to_dict(), "train": tc.to_dict(), "lora": c.to_dict()}, None)
    manager.wait_until_finished()
  return workdir, initial, jax.tree.map(np.asarray, state), shardings, losses


def test_only_adapters_have_optimizer_state_and_ema(lora_run):
  _, initial, _, _, _ = lora_run
  adapters, base = flat(initial["params"]), flat(initial["base"])
  # AdamW's two moments for every adapter leaf and nothing for the base (plus scalar counts).
  adapter_bytes = sum(x.nbytes for x in adapters.values())
  opt_leaves = [x for x in jax.tree.leaves(initial["opt_state"]) if x.ndim]
  assert len(opt_leaves) == 2 * len(adapters)
  assert sum(x.nbytes for x in opt_leaves) == 2 * adapter_bytes
  assert adapter_bytes < 0.2 * sum(x.nbytes for x in base.values())
  assert jax.tree.structure(initial["ema"]) == jax.tree.structure(initial["params"])


def test_steps_move_the_adapters_and_never_the_base(lora_run):
  _, initial, final, _, losses = lora_run
  for k, v in flat(final["base"]).items():
    np.testing.assert_array_equal(v, flat(initial["base"])[k], err_msg=k)
  before = flat(initial["params"])
  moved = [k for k, v in flat(final["params"]).items() if not np.array_equal(v, before[k])]
  assert len(moved) == len(before)  # every A and B moved (B away from zero)
  assert len(set(losses)) == 3


def test_checkpoint_round_trip_resumes_the_lora_state(lora_run):
  workdir, _, final, shardings, _ = lora_run
  manager = ckpt.checkpoint_manager(os.path.join(workdir, "checkpoints"), async_save=False)
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), final)
  restored, config, _ = ckpt.restore(manager, like, shardings)
  assert set(restored) == {"step", "params", "opt_state", "ema", "base"} and config["lora"]["rank"] == 4
  want = flat(final)
  for k, v in flat(restored).items():
    np.testing.assert_array_equal(np.asarray(v), want[k], err_msg=k)


def test_restore_params_and_full_export_give_the_merged_model(lora_run, tmp_path):
  from sama_jax.config import model_config
  from sama_jax.convert import load_torch_dit
  from sama_jax.convert.__main__ import main

  workdir, _, final, _, _ = lora_run
  run_dir = os.path.join(workdir, "checkpoints")
  c, mc = lora_config(rank=4, alpha=8.0), model_config(**ckpt.read_config(run_dir)["model"])
  like = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: SamaDiT(mc, nnx.Rngs(0))), nnx.Param))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  merged = {key: flat(apply_lora(final["base"], final[key], c)) for key in ("ema", "params")}
  for use_ema, key in ((True, "ema"), (False, "params")):
    got = ckpt.restore_params(run_dir, like, jax.tree.map(lambda _: device, like), use_ema=use_ema)
    for k, v in flat(got).items():
      np.testing.assert_array_equal(np.asarray(v), merged[key][k], err_msg=k)
  out = str(tmp_path / "merged.safetensors")  # to-torch exports the EMA adapters merged
  assert main(["to-torch", "--checkpoint", workdir, "--out", out, "--layout", "official"]) == 0
  exported, _ = load_torch_dit(out, mc)
  for k, v in flat(nnx.to_pure_dict(nnx.state(exported, nnx.Param))).items():
    np.testing.assert_array_equal(np.asarray(v), merged["ema"][k], err_msg=k)


def test_lora_shardings_follow_their_kernels(tiny):
  from sama_jax.lora import lora_shardings
  from sama_jax.train.state import param_shardings

  tiny_config, params = tiny
  mc = mesh_config(data=2, fsdp=2, tensor=2)
  mesh = make_mesh(mc, jax.devices())
  with jax.set_mesh(mesh), nn.logical_axis_rules(mc.rules):
    p_shard = param_shardings(tiny_config, mesh, mc.rules)
  lora = jax.eval_shape(lambda: init_lora(params, lora_config(rank=4), jax.random.key(0)))
  s = lora_shardings(p_shard, lora)["dit"]["blocks"]["attn1"]["to_q"]["kernel"]
  kernel = tuple(p_shard["dit"]["blocks"]["attn1"]["to_q"]["kernel"].spec)
  assert tuple(s[A].spec) == (*kernel[:2], None) and tuple(s[B].spec) == (kernel[0], None, kernel[2])
  assert any(kernel)  # the tiny model's q kernel is sharded on this mesh


def test_official_export_has_exactly_the_diffsynth_keys(lora_run, tmp_path):
  from safetensors.numpy import load_file

  from sama_jax.convert.__main__ import main

  workdir = lora_run[0]
  out = str(tmp_path / "lora.safetensors")
  assert main(["to-torch", "--checkpoint", workdir, "--out", out, "--layout", "official", "--lora-only"]) == 0
  tensors = load_file(out)
  modules = [f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"] + ["ffn.0", "ffn.2"]
  want = {f"diffusion_model.blocks.{i}.{m}.{ab}.weight" for i in range(2) for m in modules
          for ab in ("lora_A", "lora_B")}
  assert set(tensors) == want
  assert tensors["diffusion_model.blocks.1.ffn.0.lora_A.weight"].shape == (4, 64)
  assert tensors["diffusion_model.blocks.1.ffn.0.lora_B.weight"].shape == (128, 4)
  assert main(["to-torch", "--checkpoint", workdir, "--out", out, "--layout", "official", "--lora-only"]) == 2


def test_lora_only_export_needs_a_lora_run(tmp_path, capsys):
  from sama_jax.convert.__main__ import main

  assert main(["to-torch", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "x.safetensors"),
               "--layout", "diffusers", "--lora-only"]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_lora_rank_is_a_command_line_override():
  from absl import flags
  from ml_collections import config_flags

  for name in ("stage1_tiny", "stage2_tiny", "stage1_wan1_3b", "stage2_wan14b"):
    argv = ["train", f"--config={os.path.join(REPO, 'configs', name + '.py')}", "--config.lora.rank=8"]
    values = flags.FlagValues()  # as sama_jax/train/__main__.py defines it; overrides are read from argv
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    assert values.config.lora.rank == 8, name


@pytest.mark.slow  # three trainer runs (~3 min on 2 CPU cores); the tests above cover state, step and restore
def test_trainer_loop_trains_resumes_edits_and_hands_over_a_lora_run(tmp_path):
  from sama_jax.edit import load_bundle
  from sama_jax.train.loop import train
  from test_train_loop import STAGE1, small

  tiny = {"model.dim": 64, "model.ffn_dim": 128, "model.num_heads": 2, "model.num_layers": 2,
          "model.semantic_hidden_dim": 32, "lora.rank": 4, "lora.alpha": 8.0, "train.learning_rate": 1e-2,
          "train.warmup_steps": 0, "train.ema_decay": 0.5, "run.checkpoint_every": 1}
  workdir = str(tmp_path / "lora")
  run_dir = os.path.join(workdir, "checkpoints")
  train(small(STAGE1, 2, **tiny), workdir)  # on 8 fake devices: data 2, fsdp 2, tensor 2
  first = ckpt.read_state(run_dir, 2)
  train(small(STAGE1, 3, **tiny), workdir)  # resumes from step 2
  last = ckpt.read_state(run_dir, 3)
  assert int(last["step"]) == 3 and set(last) == {"step", "params", "opt_state", "ema", "base"}
  for k, v in flat(last["base"]).items():
    np.testing.assert_array_equal(v, flat(first["base"])[k], err_msg=k)
  assert any(not np.array_equal(v, flat(first["params"])[k]) for k, v in flat(last["params"]).items())

  merged = flat(apply_lora(last["base"], last["ema"], lora_config(rank=4, alpha=8.0)))
  # The bundle merges with the jitted `merge_lora` on sharded arrays, this test eagerly on
  # host arrays: XLA may round the product and sum differently (a last-bit difference,
  # seen on this CPU), so the check is to 1e-6; the raw adapters' merge is far outside it.
  raw = flat(apply_lora(last["base"], last["params"], lora_config(rank=4, alpha=8.0)))
  assert max(np.abs(raw[k] - merged[k]).max() for k in merged) > 1e-4
  bundle = load_bundle(workdir)  # EMA adapters merged into the base
  for k, v in flat(nnx.to_pure_dict(nnx.state(bundle.model, nnx.Param))).items():
    np.testing.assert_allclose(v, merged[k], rtol=1e-6, atol=1e-7, err_msg=k)

  # A new LoRA stage from the LoRA run starts from its merged model, with fresh adapters.
  second = str(tmp_path / "second")
  train(small(STAGE1, 1, **{**tiny, "train.learning_rate": 0.0}), second, init_from=workdir)
  handed = ckpt.read_state(os.path.join(second, "checkpoints"), 1)
  for k, v in flat(handed["base"]).items():
    np.testing.assert_allclose(v, merged[k], rtol=1e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("layout", ["diffusers", "official"])
def test_exported_lora_in_diffusers_matches_our_merged_model(layout, tmp_path):
  """diffusers + PEFT run the adapters unmerged (x W + s (x A) B); ours on merged kernels.
  Tolerance 1e-4 relative: float32 with different summation orders."""
  pytest.importorskip("peft")
  pytest.importorskip("torch")
  from torch_wan import run_diffusers, tiny_diffusers_wan
  from test_dit_parity import inputs
  from sama_jax.convert import load_torch_dit
  from sama_jax.convert.lora import lora_tensors
  from sama_jax.convert.safetensors_io import write_file
  from diffusers.loaders import WanLoraLoaderMixin

  torch_model = tiny_diffusers_wan(seed=3)
  torch_model.save_pretrained(tmp_path / "wan", safe_serialization=True)
  model, config = load_torch_dit(str(tmp_path / "wan"))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  c = lora_config(rank=4, alpha=2.0)  # scale 0.5, folded into lora_B
  lora = randomised(init_lora(params, c, jax.random.key(0)), std=0.5)
  path = str(tmp_path / "lora.safetensors")
  write_file(lora_tensors(lora, c, layout), path)

  latents, timestep, text = inputs(2, 3, 6, 10)
  graphdef = nnx.graphdef(model)
  ours = np.asarray(nnx.merge(graphdef, apply_lora(params, lora, c))(latents, timestep, text)[0])
  base = run_diffusers(torch_model, latents, timestep, text)
  state_dict = WanLoraLoaderMixin.lora_state_dict(path) if layout == "official" else path
  torch_model.load_lora_adapter(state_dict, prefix="transformer")
  theirs = run_diffusers(torch_model, latents, timestep, text)
  assert rel_error(base, ours) > 1e-2  # the adapters matter
  assert rel_error(ours, theirs) <= 1e-4
