"""Checkpoint interchange for the DiT: round trips, sharding, SAMA modules, errors."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from torch_wan import official_state_dict, sama_extra_tensors, tiny_diffusers_wan  # noqa: E402

from sama_jax.config import model_config  # noqa: E402
from sama_jax.convert import infer_config, load_torch_dit, save_torch_dit  # noqa: E402
from sama_jax.convert.safetensors_io import write_file  # noqa: E402
from sama_jax.models import SamaDiT  # noqa: E402


def params_of(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def assert_same_params(a, b):
  flat_a, flat_b = jax.tree.leaves_with_path(params_of(a)), jax.tree.leaves_with_path(params_of(b))
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.fixture
def wan_folder(tmp_path):
  model = tiny_diffusers_wan(seed=5)
  model.save_pretrained(tmp_path / "wan", safe_serialization=True)
  return model, str(tmp_path / "wan")


def test_save_diffusers_reloads_identical_in_diffusers(wan_folder, tmp_path):
  from diffusers import WanTransformer3DModel

  torch_model, folder = wan_folder
  model, config = load_torch_dit(folder)
  save_torch_dit(model, config, str(tmp_path / "out"))
  reloaded = WanTransformer3DModel.from_pretrained(str(tmp_path / "out"))
  original, again = torch_model.state_dict(), reloaded.state_dict()
  assert original.keys() == again.keys()
  for name in original:
    assert torch.equal(original[name], again[name]), name


def test_sama_modules_round_trip_in_both_layouts(tiny_config, tmp_path):
  model = SamaDiT(tiny_config, nnx.Rngs(3))
  model.segment_embedding[...] = np.arange(3 * 64, dtype=np.float32).reshape(3, 64)
  for layout, out in (("diffusers", tmp_path / "d"), ("official", tmp_path / "o.safetensors")):
    save_torch_dit(model, tiny_config, str(out), layout=layout)
    reloaded, config = load_torch_dit(str(out), tiny_config)
    assert_same_params(model, reloaded)
  # diffusers' config.json records SAMA's options, so no config is needed to reload.
  reloaded, config = load_torch_dit(str(tmp_path / "d"))
  assert config == tiny_config
  assert_same_params(model, reloaded)


def test_sharded_save_writes_index_and_reloads(tiny_config, tmp_path):
  model = SamaDiT(tiny_config, nnx.Rngs(0))
  files = save_torch_dit(model, tiny_config, str(tmp_path), max_shard_bytes=100_000)
  shards = [os.path.basename(p) for p in files if not p.endswith("sama_modules.safetensors")]
  assert len(shards) > 1 and len(files) == len(shards) + 1  # SAMA's modules in their own file
  with open(tmp_path / "diffusion_pytorch_model.safetensors.index.json") as f:
    assert set(json.load(f)["weight_map"].values()) == set(shards)
  reloaded, _ = load_torch_dit(str(tmp_path))
  assert_same_params(model, reloaded)


def test_bfloat16_export_loads_into_float32(tiny_config, tmp_path):
  model = SamaDiT(tiny_config, nnx.Rngs(0))
  save_torch_dit(model, tiny_config, str(tmp_path / "m.safetensors"), layout="official", dtype="bfloat16")
  reloaded, _ = load_torch_dit(str(tmp_path / "m.safetensors"), tiny_config)
  a = np.asarray(model.dit.blocks.ffn.proj_in.kernel[...])
  b = np.asarray(reloaded.dit.blocks.ffn.proj_in.kernel[...])
  assert b.dtype == np.float32
  np.testing.assert_allclose(b, a, rtol=2 ** -8)


@pytest.mark.parametrize("field, value, message", [("prediction", "x0", "velocity"),
                                                    ("source_skip", True, "source_skip"),
                                                    ("scale_input", True, "scale_input"),
                                                    ("rope_theta", 100.0, "rope_theta")])
def test_models_torch_cannot_run_are_not_exported(tiny_config, tmp_path, field, value, message):
  config = tiny_config.copy_and_resolve_references()
  config[field] = value
  with pytest.raises(ValueError, match=message):
    save_torch_dit(SamaDiT(config, nnx.Rngs(0)), config, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_plain_wan_gets_fresh_sama_modules_with_zero_type_embedding(wan_folder):
  _, folder = wan_folder
  model, config = load_torch_dit(folder)
  assert np.all(np.asarray(model.segment_embedding[...]) == 0)
  assert config.semantic_dim == 1152  # SAMA's defaults where the checkpoint says nothing
  assert model.semantic_head.proj.kernel.shape == (config.dim, 1152)


def test_channel_mode_widens_a_plain_patch_embedding(wan_folder):
  torch_model, folder = wan_folder
  config = infer_config(folder)
  config.source_mode = "channel"
  model, _ = load_torch_dit(folder, config)
  old = torch_model.patch_embedding.weight.detach().numpy()  # [D, 16, 1, 2, 2]
  kernel = np.asarray(model.dit.patch_embedding.kernel[...]).reshape(1, 2, 2, 32, -1)
  np.testing.assert_allclose(kernel[..., :16, :], kernel[..., 16:, :])  # "copy"
  np.testing.assert_allclose(kernel[0, :, :, :16].transpose(3, 2, 0, 1), old[:, :, 0] * np.sqrt(0.5), rtol=1e-6)
  zeros, _ = load_torch_dit(folder, config, widen="zeros")
  assert np.all(np.asarray(zeros.dit.patch_embedding.kernel[...]).reshape(4, 32, -1)[:, 16:] == 0)


def test_missing_path_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_torch_dit(str(tmp_path / "nothing"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="holds none of"):
    load_torch_dit(str(tmp_path / "empty"))


def test_unknown_tensor_is_an_error(tmp_path):
  tensors = official_state_dict(tiny_diffusers_wan())
  tensors["img_emb.proj.0.weight"] = np.zeros((4, 4), np.float32)  # an image-to-video Wan
  write_file(tensors, str(tmp_path / "i2v.safetensors"))
  with pytest.raises(ValueError, match="img_emb.proj.0.weight"):
    load_torch_dit(str(tmp_path / "i2v.safetensors"), infer_config(str(tmp_path / "i2v.safetensors"), num_heads=2))


def test_config_that_disagrees_with_the_checkpoint_names_the_tensor(wan_folder):
  _, folder = wan_folder
  config = infer_config(folder)
  config.ffn_dim = 96
  with pytest.raises(ValueError, match=r"'blocks.0.ffn.net.0.proj.weight' has shape"):
    load_torch_dit(folder, config)
  config = infer_config(folder)
  config.num_layers = 3
  with pytest.raises(KeyError, match="lacks 'blocks.2"):
    load_torch_dit(folder, config)


def test_not_a_wan_checkpoint(tmp_path):
  write_file({"foo.weight": np.zeros(3, np.float32)}, str(tmp_path / "x.safetensors"))
  with pytest.raises(ValueError, match="neither a diffusers WanTransformer3DModel"):
    load_torch_dit(str(tmp_path / "x.safetensors"))


def test_official_width_without_head_count_asks_for_it(tmp_path):
  tensors = official_state_dict(tiny_diffusers_wan())
  tensors.update(sama_extra_tensors(64, 40, 24))
  write_file(tensors, str(tmp_path / "s.safetensors"))
  with pytest.raises(ValueError, match="num_heads"):
    load_torch_dit(str(tmp_path / "s.safetensors"))


def test_published_configs_convert_shapes(tmp_path):
  """The 14B shapes: SAMA adds 12,355,968 parameters (SAMA_METHOD.md §2.1)."""
  from sama_jax.config import load_config
  from conftest import REPO

  config = load_config(os.path.join(REPO, "configs", "wan14b.py")).model
  abstract = nnx.eval_shape(lambda: SamaDiT(config, nnx.Rngs(0)))
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  state = nnx.state(abstract, nnx.Param)
  extras = count(state["segment_embedding"]) + count(state["siglip_feat_mlp"]) + count(state["semantic_head"])
  assert extras == 12_355_968
  assert model_config().dim == 1536
