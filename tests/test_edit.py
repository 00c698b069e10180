"""Editing end to end: library function and CLI, trainer and PyTorch checkpoints, errors."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from conftest import REPO
from sama_jax.config import model_config
from sama_jax.convert import save_torch_dit
from sama_jax.data.video import read_video, write_video
from sama_jax.edit import edit, edit_config, load_bundle, main
from sama_jax.encoders import encoders_config
from sama_jax.models import SamaDiT

VIDEOS = os.path.join(REPO, "..", "shared", "testdata", "videos")
CLIPS = {"add-02-source.mp4": (49, 24.0), "highlight-07-source.mp4": (37, 20.0), "highlight-09-source.mp4": (49, 24.0)}

CONFIG_FILE = '''
import ml_collections
from sama_jax.config import model_config
from sama_jax.edit import edit_config
from sama_jax.encoders import encoders_config

def get_config():
  c = ml_collections.ConfigDict()
  c.model = model_config(**{model})
  c.encoders = encoders_config(text_len=16)
  c.edit = edit_config(area=32 * 64, steps=2)
  return c
'''
MODEL = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, freq_dim=32, in_channels=48,
             out_channels=48, semantic_dim=48, semantic_hidden_dim=32, num_semantic_tokens=5)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
  """A tiny random SAMA DiT saved in the official naming, and a config file for it."""
  folder = tmp_path_factory.mktemp("official")
  config = model_config(**MODEL)
  model = SamaDiT(config, nnx.Rngs(0))
  model.dit.head.proj_out.kernel[...] = 0.05 * jax.random.normal(jax.random.key(0), model.dit.head.proj_out.kernel.shape)
  save_torch_dit(model, config, str(folder / "sama.safetensors"), layout="official")
  (folder / "config.py").write_text(CONFIG_FILE.replace("{model}", repr(MODEL)))
  return str(folder / "sama.safetensors"), str(folder / "config.py")


def small_clip(path, frames=9, size=(64, 32), fps=12.0):
  rng = np.random.default_rng(0)
  write_video(str(path), rng.integers(0, 255, (frames, size[1], size[0], 3), dtype=np.uint8), fps)
  return str(path)


@pytest.mark.skipif(not os.path.isdir(VIDEOS), reason="../shared/testdata/videos is absent")
@pytest.mark.parametrize("name", sorted(CLIPS))
def test_real_clips_edit_end_to_end_through_the_cli(official, tmp_path, name):
  checkpoint, config = official
  out, preview = str(tmp_path / "out.mp4"), str(tmp_path / "strip.png")
  code = main(["--checkpoint", checkpoint, "--config", config, "--video", os.path.join(VIDEOS, name),
               "--instruction", "make the car red", "--out", out, "--preview", preview])
  assert code == 0
  frames, fps = read_video(out)
  assert (len(frames), fps) == CLIPS[name]  # the source's frame count (padding trimmed) and fps
  assert frames.shape[1:] == (32, 64, 3)  # the 2:1 bucket of the configured area
  from PIL import Image
  assert Image.open(preview).size == (6 * 64, 2 * 32)


def test_same_seed_same_edit_and_seed_matters(official, tmp_path):
  checkpoint, config = official
  from sama_jax.config import load_config
  bundle = load_bundle(checkpoint, load_config(config))
  frames = read_video(small_clip(tmp_path / "a.mp4"))[0]
  a, b = edit(bundle, frames, "make it blue"), edit(bundle, frames, "make it blue")
  c = edit(bundle, frames, "make it blue", seed=1)
  np.testing.assert_array_equal(a, b)
  assert np.abs(a.astype(int) - c).max() > 0
  assert a.shape == (9, 32, 64, 3)


def test_precomputed_features_edit_like_live_encoders(official, tmp_path):
  """edit_latents on features encoded beforehand (as precompute stores them) gives the
  latents that edit() decodes: the same pixels."""
  checkpoint, config = official
  from sama_jax.config import load_config
  from sama_jax.edit import edit_latents, prepare_source
  from sama_jax.encoders import frames_to_unit
  from sama_jax.models.text import encode_text
  bundle = load_bundle(checkpoint, load_config(config))
  frames = read_video(small_clip(tmp_path / "a.mp4"))[0]
  enc, c = bundle.encoders, bundle.config.edit
  source, real = prepare_source(frames, c)
  latents = np.asarray(enc.codec.encode(frames_to_unit(jax.numpy.asarray(source[None]))))  # stored, reloaded
  text = np.asarray(encode_text(enc.tokenizer, enc.text_encoder, [c.prompt_prefix + "make it blue",
                                                                   c.negative_prompt], enc.text_len))
  out = edit_latents(bundle, latents, text)
  pixels = np.asarray(jax.numpy.clip((enc.codec.decode(out)[0] + 1) * 127.5, 0, 255)).astype(np.uint8)[:real]
  # Eager vs jitted text encoding differ in float rounding, which uint8 truncation can turn
  # into one level on a pixel.
  live = edit(bundle, frames, "make it blue")
  assert pixels.shape == live.shape and np.abs(pixels.astype(int) - live).max() <= 1
  assert np.mean(pixels != live) < 1e-3
  with pytest.raises(ValueError, match="text embeddings have shape"):
    edit_latents(bundle, latents, text[:1])


def test_source_guidance_adds_the_source_free_pass(official, tmp_path):
  checkpoint, config = official
  from sama_jax.config import load_config
  bundle = load_bundle(checkpoint, load_config(config))
  frames = read_video(small_clip(tmp_path / "a.mp4"))[0]
  text_only = edit(bundle, frames, "make it blue")
  assert np.array_equal(text_only, edit(bundle, frames, "make it blue", guidance_source=0.0))
  two_scale = edit(bundle, frames, "make it blue", guidance_source=2.0)
  assert two_scale.shape == text_only.shape and np.abs(two_scale.astype(int) - text_only).max() > 0
  with pytest.raises(ValueError, match="guidance_source=-1"):
    edit(bundle, frames, "make it blue", guidance_source=-1.0)


def test_trainer_checkpoint_loads_with_its_config_and_ema(tmp_path):
  from sama_jax.parallel.mesh import make_mesh, mesh_config
  from sama_jax.train import checkpoint as ckpt
  from sama_jax.train.config import train_config
  from sama_jax.train.state import create_train_state

  config = ml_collections.ConfigDict()
  config.model = model_config(**MODEL)
  # A world SigLIP that is no longer there: editing does not need it.
  config.encoders = encoders_config(text_len=16, world_siglip_init=str(tmp_path / "moved" / "world_siglip"))
  config.edit = edit_config(area=32 * 64, steps=2)
  mc = mesh_config(data=1)
  _, _, state, _ = create_train_state(config.model, train_config(), make_mesh(mc, jax.devices()[:1]), mc.rules)
  state["ema"] = jax.tree.map(lambda x: x + 1.0, state["ema"])  # tell EMA and raw parameters apart
  manager = ckpt.checkpoint_manager(str(tmp_path / "run" / "checkpoints"))
  ckpt.save(manager, 7, state, config.to_dict(), {})
  manager.wait_until_finished()
  bundle = load_bundle(str(tmp_path / "run"))
  np.testing.assert_array_equal(np.asarray(bundle.model.segment_embedding[...]),
                                np.asarray(state["ema"]["segment_embedding"]))
  raw = load_bundle(str(tmp_path / "run"), use_ema=False)
  np.testing.assert_array_equal(np.asarray(raw.model.segment_embedding[...]), np.asarray(state["params"]["segment_embedding"]))
  assert bundle.config.edit.steps == 2
  assert bundle.encoders.siglip is None and bundle.config.encoders.world_siglip_init.endswith("moved/world_siglip")
  out = edit(bundle, read_video(small_clip(tmp_path / "a.mp4"))[0], "remove the blue square")
  assert out.shape == (9, 32, 64, 3)


@pytest.mark.parametrize("case,message", [
    ("missing", "does not exist"),
    ("not_video", "not a video|invalid|cannot"),
    ("short", "video has 3 frames; SAMA needs at least 5"),
    ("empty", "the instruction is empty"),
    ("huge", "above the configured maximum"),
])
def test_bad_input_is_one_line_and_exit_code_2(official, tmp_path, capsys, case, message):
  checkpoint, config = official
  video, instruction = small_clip(tmp_path / "ok.mp4"), "make it red"
  extra = []
  if case == "missing":
    video = str(tmp_path / "nope.mp4")
  elif case == "not_video":
    video = str(tmp_path / "text.mp4")
    open(video, "w").write("hello")
  elif case == "short":
    video = small_clip(tmp_path / "short.mp4", frames=3)
  elif case == "empty":
    instruction = "   "
  elif case == "huge":
    video = small_clip(tmp_path / "big.mp4", size=(128, 64))
    config_text = open(config).read().replace("steps=2)", "steps=2, max_input_pixels=4096)")
    config = str(tmp_path / "config.py")
    open(config, "w").write(config_text)
  code = main(["--checkpoint", checkpoint, "--config", config, "--video", video, "--instruction", instruction,
               "--out", str(tmp_path / "o.mp4")] + extra)
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert len(err.splitlines()) == 1 and err.startswith("error:")
  import re
  assert re.search(message, err, re.IGNORECASE), err


def test_batch_manifest_reports_failures_and_goes_on(official, tmp_path, capsys):
  checkpoint, config = official
  good = small_clip(tmp_path / "good.mp4")
  jobs = [{"video": good, "instruction": "make it red", "out": str(tmp_path / "1.mp4")},
          {"video": str(tmp_path / "missing.mp4"), "instruction": "x", "out": str(tmp_path / "2.mp4")},
          {"video": good, "instruction": "remove it", "out": str(tmp_path / "3.mp4")}]
  manifest = tmp_path / "jobs.jsonl"
  manifest.write_text("\n".join(json.dumps(j) for j in jobs) + "\nnot json\n")
  code = main(["--checkpoint", checkpoint, "--config", config, "--batch", str(manifest)])
  out = capsys.readouterr().out
  assert code == 1
  assert "edited 2 of 4 videos" in out and "line 2" in out and "line 4" in out
  assert os.path.isfile(tmp_path / "1.mp4") and os.path.isfile(tmp_path / "3.mp4")


def test_cli_process_exits_2_without_traceback(tmp_path):
  result = subprocess.run([sys.executable, "-m", "sama_jax.edit", "--checkpoint", str(tmp_path / "none"),
                           "--video", "v.mp4", "--instruction", "x", "--out", "o.mp4"],
                          capture_output=True, text=True, cwd=REPO)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr and result.stderr.startswith("error:")
