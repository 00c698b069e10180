"""Editing on a device mesh and with bfloat16 / int8 weights (8 fake CPU devices).

Tolerances: a sharded edit does the same float32 math as the one-device edit, in other
summation orders, over 2 Euler steps: 1e-4 relative on the latents. Quantized weights are
compared with the dense weights they stand for (1e-5) and, for the size of their effect,
with float32 (bounded, and nonzero so the comparison is not vacuous).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from conftest import rel_error
from sama_jax.config import model_config
from sama_jax.convert import save_torch_dit
from sama_jax.edit import edit, edit_config, edit_latents, load_bundle, main, parse_mesh
from sama_jax.encoders import encoders_config
from sama_jax.models import SamaDiT
from sama_jax.models.quant import Int8Weight, dequantize, quantize, quantize_kernel, weight_bytes
from sama_jax.parallel.mesh import mesh_config
from test_edit import small_clip

# 4 heads so that context x tensor = 2 x 2 divides them.
MODEL = dict(dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32, freq_dim=32, in_channels=48,
             out_channels=48, semantic_dim=48, semantic_hidden_dim=32, num_semantic_tokens=5)


def config():
  c = ml_collections.ConfigDict()
  c.model = model_config(**MODEL)
  c.encoders = encoders_config(text_len=16)
  c.edit = edit_config(area=32 * 64, steps=2)
  return c


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  folder = tmp_path_factory.mktemp("sharded")
  model = SamaDiT(config().model, nnx.Rngs(0))
  model.dit.head.proj_out.kernel[...] = 0.05 * jax.random.normal(jax.random.key(0), model.dit.head.proj_out.kernel.shape)
  save_torch_dit(model, config().model, str(folder / "sama.safetensors"), layout="official")
  return str(folder / "sama.safetensors")


def features(bundle, seed=0):
  """Source latents [1, 9, 8, 16, 48] and text [2, 16, 32]: 9·4·8 = 288 source + 5
  semantic + 288 target = 581 tokens, which context 2 does not divide (padded to 582)."""
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal((1, 9, 8, 16, 48)), jnp.float32),
          jnp.asarray(rng.standard_normal((2, 16, 32)), jnp.float32))


@pytest.mark.parametrize("degrees", [dict(fsdp=2, context=2, tensor=2), dict(fsdp=8), dict(context=4, fsdp=2)],
                         ids=["fsdp2_context2_tensor2", "fsdp8", "context4_fsdp2"])
def test_edit_on_a_mesh_matches_one_device(checkpoint, degrees):
  one = load_bundle(checkpoint, config())
  sharded = load_bundle(checkpoint, config(), mesh=mesh_config(data=1, **degrees))
  assert len(sharded.mesh.devices.flat) == 8
  params = jax.tree.leaves(nnx.state(sharded.model))
  assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated for x in params)
  if degrees.get("context", 1) > 1:
    assert sharded.config.model.sequence_parallel == "ulysses"
  source, text = features(one)
  steps = []
  ref = edit_latents(one, source, text)
  out = edit_latents(sharded, source, text, progress=steps.append)
  assert out.shape == ref.shape and rel_error(out, ref) < 1e-4
  assert len(steps) == 2  # the progress callback runs once per step, not once per device


def test_sharded_edit_of_a_video_end_to_end(checkpoint, tmp_path):
  from sama_jax.data.video import read_video
  frames = read_video(small_clip(tmp_path / "a.mp4"))[0]
  ref = edit(load_bundle(checkpoint, config()), frames, "make it blue")
  out = edit(load_bundle(checkpoint, config(), mesh=parse_mesh("fsdp=2,context=4")), frames, "make it blue")
  assert out.shape == ref.shape == (9, 32, 64, 3)
  assert np.abs(out.astype(int) - ref).max() <= 1  # uint8 truncation of nearly equal floats


def test_parse_mesh():
  c = parse_mesh("fsdp=2, context=-1")
  assert (c.data, c.fsdp, c.context, c.tensor) == (1, 2, -1, 1)
  for bad in ("fsdp2", "pipeline=2", "fsdp=x"):
    with pytest.raises(ValueError, match="expected comma-separated AXIS=N"):
      parse_mesh(bad)


def test_int8_kernel_rounding_is_within_half_a_step_per_output_channel():
  w = jax.random.normal(jax.random.key(0), (3, 40, 24)) * jnp.linspace(0.01, 3.0, 24)
  w = w.at[1, :, 5].set(0.0)  # an all-zero column keeps a finite scale
  q = quantize_kernel(w)
  assert q.q.dtype == jnp.int8 and q.q.shape == w.shape and q.scale.shape == (3, 1, 24)
  err = np.abs(np.asarray(q.dequantize() - w))
  assert (err <= np.asarray(q.scale) / 2 + 1e-7).all()
  assert np.asarray(q.q[1, :, 5] == 0).all() and np.isfinite(np.asarray(q.scale)).all()
  assert np.abs(np.asarray(q.q)).max() == 127  # absmax maps to the end of the range


def test_quantize_formats_and_their_sizes():
  state = nnx.state(SamaDiT(model_config(**MODEL), nnx.Rngs(0)), nnx.Param)
  full = weight_bytes(state)
  half = quantize(state, "bfloat16")
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(half)) and weight_bytes(half) == full // 2
  q8 = quantize(state, "int8")
  kernels = [x for x in jax.tree.leaves(q8, is_leaf=lambda x: isinstance(x, Int8Weight)) if isinstance(x, Int8Weight)]
  assert kernels and kernels[0].q.dtype == jnp.int8
  assert weight_bytes(q8) < 0.4 * full  # kernels hold almost all the weights
  assert quantize(state, "float32") is state
  with pytest.raises(ValueError, match="weights='int4'; expected one of"):
    quantize(state, "int4")


def test_int8_blocks_dequantize_inside_the_scan_like_dense_weights(checkpoint):
  """The sampler keeps the stacked blocks int8 and dequantizes one layer per scan step: the
  edit equals one with the dense dequantized weights, and differs a little from float32."""
  q8 = load_bundle(checkpoint, config(), weights="int8")
  dense = load_bundle(checkpoint, config())
  nnx.update(dense.model, dequantize(nnx.state(q8.model)))
  f32 = load_bundle(checkpoint, config())
  source, text = features(q8)
  out, ref, base = (edit_latents(b, source, text) for b in (q8, dense, f32))
  assert rel_error(out, ref) < 1e-5
  assert 1e-6 < rel_error(out, base) < 5e-2


def test_int8_sampler_holds_a_quarter_of_the_weights(checkpoint):
  """Compiled argument bytes of the edit: the int8 blocks go in as int8."""
  from sama_jax.edit import _make_sampler
  sizes = {}
  for weights in ("float32", "int8"):
    bundle = load_bundle(checkpoint, config(), weights=weights)
    source, text = features(bundle)
    run = _make_sampler(bundle, 2, 5.0, 5.0)
    noise = jnp.zeros_like(source)
    sem = jnp.zeros((1, 5, 48))
    stats = run.lower(nnx.state(bundle.model), text, source, noise, sem).compile().memory_analysis()
    sizes[weights] = stats.argument_size_in_bytes - sum(x.nbytes for x in (text, source, noise, sem))
  assert sizes["int8"] < 0.4 * sizes["float32"]


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_cli_edits_with_low_precision_weights_on_a_mesh(checkpoint, tmp_path, weights):
  from sama_jax.data.video import read_video
  cfg = tmp_path / "config.py"
  cfg.write_text(f'''
import ml_collections
from sama_jax.config import model_config
from sama_jax.edit import edit_config
from sama_jax.encoders import encoders_config

def get_config():
  c = ml_collections.ConfigDict()
  c.model = model_config(**{MODEL!r})
  c.encoders = encoders_config(text_len=16)
  c.edit = edit_config(area=32 * 64, steps=2)
  return c
''')
  out = str(tmp_path / "out.mp4")
  code = main(["--checkpoint", checkpoint, "--config", str(cfg), "--video", small_clip(tmp_path / "a.mp4"),
               "--instruction", "make it blue", "--out", out, "--mesh", "fsdp=4,tensor=2", "--weights", weights])
  assert code == 0 and read_video(out)[0].shape == (9, 32, 64, 3)


def test_bad_weights_and_mesh_are_one_line_errors(checkpoint, tmp_path, capsys):
  args = ["--checkpoint", checkpoint, "--video", "x.mp4", "--instruction", "x", "--out", str(tmp_path / "o.mp4")]
  assert main(args + ["--weights", "int4"]) == 2
  assert "weights='int4'; expected one of" in capsys.readouterr().err
  assert main(args + ["--mesh", "fsdp=3"]) == 2
  assert "needs 3 devices; there are 8" in capsys.readouterr().err
