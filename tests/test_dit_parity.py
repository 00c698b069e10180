"""The JAX DiT equals diffusers' WanTransformer3DModel on the same random weights.

Tolerance: max |ours - ref| / max |ref| <= 1e-4 in float32. Both sides run float32 with
full-precision matmuls; what differs is summation order and the sinusoid/RoPE arithmetic
(float64 tables in both), which stays orders of magnitude below 1e-4 at these sizes.
"""

import jax
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from conftest import rel_error  # noqa: E402
from torch_wan import official_state_dict, run_diffusers, sama_extra_tensors, tiny_diffusers_wan  # noqa: E402

from sama_jax.convert import infer_config, load_torch_dit  # noqa: E402
from sama_jax.convert.safetensors_io import write_file  # noqa: E402

TOL = 1e-4


def inputs(batch, frames, height, width, text_len=7, text_dim=32, channels=16, seed=0):
  rng = np.random.default_rng(seed)
  latents = rng.standard_normal((batch, frames, height, width, channels)).astype(np.float32)
  timestep = rng.uniform(0, 1000, size=(batch,)).astype(np.float32)
  text = rng.standard_normal((batch, text_len, text_dim)).astype(np.float32)
  return latents, timestep, text


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  model = tiny_diffusers_wan()
  folder = tmp_path_factory.mktemp("wan_diffusers")
  model.save_pretrained(folder, safe_serialization=True)
  return model, str(folder)


@pytest.mark.parametrize("batch,frames,height,width", [
    (1, 1, 4, 4),    # an image: one latent frame
    (2, 3, 6, 10),   # batch 2, odd frame count, non-square
    (1, 5, 8, 6),    # taller than wide
    (3, 2, 2, 14),   # batch 3, wide strip
])
def test_diffusers_folder_matches_reference(reference, batch, frames, height, width):
  torch_model, folder = reference
  model, config = load_torch_dit(folder)
  latents, timestep, text = inputs(batch, frames, height, width)
  ref = run_diffusers(torch_model, latents, timestep, text)
  ours, _ = jax.jit(lambda x, t, c: model(x, t, c))(latents, timestep, text)
  assert ours.shape == ref.shape
  assert rel_error(ours, ref) <= TOL


def test_other_head_dim_and_loop_execution(tmp_path):
  """head_dim 24 splits RoPE 8:8:8; layers run as a Python loop instead of a scan."""
  torch_model = tiny_diffusers_wan(seed=3, heads=3, head_dim=24, layers=3, ffn=96, text_dim=20, freq_dim=16)
  torch_model.save_pretrained(tmp_path, safe_serialization=True)
  model, config = load_torch_dit(str(tmp_path))
  assert (config.num_heads, config.dim, config.num_layers) == (3, 72, 3)
  config.scan_layers = False
  latents, timestep, text = inputs(2, 3, 4, 6, text_len=5, text_dim=20)
  ref = run_diffusers(torch_model, latents, timestep, text)
  ours, _ = model(latents, timestep, text)
  assert rel_error(ours, ref) <= TOL


def test_official_layout_matches_reference(tmp_path):
  """Original-Wan names (renamed by the test's own table) plus SAMA's released module
  names: every key is used and the backbone output equals diffusers'."""
  torch_model = tiny_diffusers_wan(seed=1)
  tensors = official_state_dict(torch_model)
  tensors.update(sama_extra_tensors(dim=64, semantic_dim=40, hidden=24))
  path = str(tmp_path / "sama.safetensors")
  write_file(tensors, path)
  config = infer_config(path, num_heads=2)  # the official naming does not record heads
  assert (config.dim, config.num_layers, config.ffn_dim, config.text_dim) == (64, 2, 128, 32)
  assert (config.semantic_dim, config.semantic_hidden_dim) == (40, 24)
  model, config = load_torch_dit(path, config)  # raises if any tensor is left unused
  np.testing.assert_array_equal(np.asarray(model.segment_embedding[...]), tensors["segment_embedding.weight"])
  np.testing.assert_array_equal(np.asarray(model.siglip_feat_mlp.fc1.kernel[...]),
                                tensors["siglip_feat_mlp.fc1.weight"].T)
  # With the segment embedding zeroed, no source and no semantic tokens: plain Wan.
  model.segment_embedding[...] = model.segment_embedding[...] * 0
  latents, timestep, text = inputs(2, 3, 4, 6)
  ref = run_diffusers(torch_model, latents, timestep, text)
  ours, _ = model(latents, timestep, text)
  assert rel_error(ours, ref) <= TOL
