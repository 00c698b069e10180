"""The precompute command (sama_jax.precompute) and its record format / reader
(sama_jax.data.precomputed): records match a direct encode, shards split the input in
order, a crash loses only the shard being written, bad records are skipped and counted,
bad command lines exit 2 in one line. Tiny world data: 16x16 pixels, 5 frames, 10 records."""

import csv
import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO
from sama_jax import precompute as P
from sama_jax.data import shard_writer
from sama_jax.config import load_config
from sama_jax.data.examples import load_example, stack_batch
from sama_jax.data.precomputed import from_record, precomputed_source, to_record
from sama_jax.data.records import decode_record, encode_record
from sama_jax.data.sources import ArrayRecordSource
from sama_jax.data.video import write_video
from sama_jax.encoders import build_encoders, host_arrays, make_encode_fn

STAGE1_TINY = os.path.join(REPO, "configs", "stage1_tiny.py")
CONFIG_FILE = f"""
from sama_jax.config import load_config

def get_config(arg=None):
  c = load_config({STAGE1_TINY!r})
  c.data.resolution, c.data.num_frames = (16, 16), 5
  for block in ("image_edits", "clips", "video_edits"):
    c.data[block].world_size = 10
  return c
"""


def tiny_config():
  c = load_config(STAGE1_TINY)
  c.data.resolution, c.data.num_frames = (16, 16), 5
  for block in ("image_edits", "clips", "video_edits"):
    c.data[block].world_size = 10
  return c


@pytest.fixture(scope="module")
def encoders():
  return build_encoders(tiny_config().encoders)


def run(config, kind, out, encoders, **options):
  return P.precompute(config, kind, str(out), encoders=encoders, progress=False, **options)


def direct_encode(config, kind, indices, encoders) -> list:
  """Records `indices`, each prepared and encoded alone (a batch of one) as training would."""
  data, encode = config.data, make_encode_fn(encoders)
  encoded = []
  for index in indices:
    example = P.prepare_example(P.kind_source(data, kind), index, kind, P.frame_spec(data),
                                P.task_spec(data, kind), data.seed)
    arrays = host_arrays(encoders, stack_batch([{k: v for k, v in example.items() if k != "id"}]))
    encoded.append({k: v[0] for k, v in jax.device_get(encode(arrays)).items()})
  return encoded


def shard_ids(path) -> list:
  source = ArrayRecordSource([str(path)])
  return [source[i]["id"] for i in range(len(source))]


# ---------------------------------------------------------------------------------------
# The record format.


def fake_encoded(rng, tokens=7, text_len=12):
  text = rng.normal(size=(text_len, 8)).astype(np.float32)
  text[tokens:] = 0.0
  return {"latents": rng.normal(size=(2, 3, 3, 4)).astype(np.float32), "text": text,
          "source": rng.normal(size=(2, 3, 3, 4)).astype(np.float32),
          "semantic": rng.normal(size=(5, 6)).astype(np.float32), "task": np.int32(5)}


def test_record_round_trips_float32_exactly_and_drops_text_padding():
  encoded = fake_encoded(np.random.default_rng(0))
  record = to_record(encoded, text_tokens=7, instruction="make it red", example_id="a.mp4")
  assert record["text"].shape == (7, 8)  # the zero rows are not stored
  back = from_record(decode_record(encode_record(record)))
  for key in encoded:
    np.testing.assert_array_equal(back[key], encoded[key])
  assert back["instruction"] == "make it red" and back["id"] == "a.mp4"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_records_store_half_the_bytes_and_stay_close(dtype):
  encoded = fake_encoded(np.random.default_rng(1), tokens=12)
  full = to_record(encoded, text_tokens=12, instruction="x", example_id="a")
  half = to_record(encoded, text_tokens=12, instruction="x", example_id="a", dtype=dtype)
  for key in ("latents", "text", "source_latents", "semantic"):
    assert half[key].nbytes * 2 == full[key].nbytes
  back = from_record(decode_record(encode_record(half)))
  # bfloat16 keeps 8 significant bits (relative error <= 2^-9), float16 11 bits.
  for key in ("latents", "text", "source", "semantic"):
    assert back[key].dtype == np.float32
    np.testing.assert_allclose(back[key], encoded[key], rtol=2.0**-8, atol=0)


def test_float16_overflow_is_an_error_naming_the_field():
  encoded = fake_encoded(np.random.default_rng(2))
  encoded["latents"][0, 0, 0, 0] = 1e5
  with pytest.raises(ValueError, match="latents overflows float16"):
    to_record(encoded, text_tokens=7, instruction="x", example_id="a", dtype="float16")


def test_a_record_that_is_not_precomputed_reads_as_skipped():
  skipped = from_record({"target": np.zeros((1, 2, 2, 3), np.uint8), "text": "x", "id": "raw"})
  assert skipped.reason == "bad_record" and "not a precomputed record" in skipped.detail


# ---------------------------------------------------------------------------------------
# The command.


@pytest.mark.parametrize("kind", ["image_edit", "video_edit"])
def test_records_match_a_direct_encode(kind, encoders, tmp_path):
  config = tiny_config()
  summary = run(config, kind, tmp_path, encoders, shard_size=4)
  assert summary["written"] == 10 and summary["skipped"] == {}
  source = precomputed_source(str(tmp_path))
  assert len(source) == 10
  indices = (0, 5, 9)  # first, middle and last shard (a short, padded batch)
  for index, direct in zip(indices, direct_encode(config, kind, indices, encoders)):
    stored = source[index]
    assert set(direct) <= set(stored) and "source" in stored and "semantic" in stored
    assert stored["id"] == f"world/{kind}/seed0/{index}"
    # Same computation in a batch of 4 or 8 instead of 1: equal up to float32 reordering.
    for key in ("latents", "source", "text", "semantic"):
      np.testing.assert_allclose(stored[key], direct[key], rtol=1e-5, atol=1e-5, err_msg=key)
    assert stored["task"] == direct["task"]


def test_shards_hold_consecutive_input_records(encoders, tmp_path):
  summary = run(tiny_config(), "image_edit", tmp_path, encoders, shard_size=4, limit=9)
  names = [f"image_edit-0000{k}-of-00003.array_record" for k in range(3)]
  assert summary["shards"] == names and summary["records"] == 9 and summary["written"] == 9
  assert sorted(os.listdir(tmp_path)) == sorted(names + ["progress.json", "summary.json"])
  ids = [shard_ids(tmp_path / name) for name in names]
  assert ids == [[f"world/image_edit/seed0/{i}" for i in range(k * 4, min(k * 4 + 4, 9))] for k in range(3)]


class CrashingWriter:
  """ArrayRecordWriter that dies (as a killed process would) after `budget` records."""
  budget = 0
  real = shard_writer.ArrayRecordWriter

  def __init__(self, path, options):
    self._writer = self.real(path, options)

  def write(self, data):
    if CrashingWriter.budget == 0:
      raise RuntimeError("simulated crash")
    CrashingWriter.budget -= 1
    self._writer.write(data)

  def close(self):
    self._writer.close()


def test_a_crash_loses_only_the_shard_being_written(encoders, tmp_path, monkeypatch):
  config = tiny_config()
  whole = run(config, "video_edit", tmp_path / "whole", encoders, shard_size=4)
  monkeypatch.setattr(shard_writer, "ArrayRecordWriter", CrashingWriter)
  CrashingWriter.budget = 6  # shard 0 (4 records) and half of shard 1
  with pytest.raises(RuntimeError, match="simulated crash"):
    run(config, "video_edit", tmp_path / "resumed", encoders, shard_size=4)
  progress = json.loads((tmp_path / "resumed" / "progress.json").read_text())
  assert list(progress["shards"]) == [whole["shards"][0]]
  assert not (tmp_path / "resumed" / "summary.json").exists()
  assert not (tmp_path / "resumed" / whole["shards"][1]).exists()  # only its .tmp

  CrashingWriter.budget = 6  # the rerun needs 6 records: shards 1 and 2, not shard 0
  resumed = run(config, "video_edit", tmp_path / "resumed", encoders, shard_size=4)
  assert CrashingWriter.budget == 0
  assert {k: v for k, v in resumed.items() if k != "seconds_this_run"} == \
      {k: v for k, v in whole.items() if k != "seconds_this_run"}
  assert sorted(os.listdir(tmp_path / "resumed")) == sorted(os.listdir(tmp_path / "whole"))
  for name in whole["shards"]:
    a, b = (ArrayRecordSource([str(tmp_path / run_dir / name)]) for run_dir in ("whole", "resumed"))
    assert len(a) == len(b)
    for i in range(len(a)):
      ra, rb = a[i], b[i]
      assert ra.keys() == rb.keys()
      for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=f"{name}[{i}].{key}")


def test_a_rerun_with_other_settings_is_refused(encoders, tmp_path):
  config = tiny_config()
  run(config, "image_edit", tmp_path, encoders, shard_size=4, limit=4)
  with pytest.raises(ValueError, match="other settings.*num_records: 4 -> 5"):
    run(config, "image_edit", tmp_path, encoders, shard_size=4, limit=5)
  with pytest.raises(ValueError, match="other settings.*kind"):
    run(config, "video_edit", tmp_path, encoders, shard_size=4, limit=4)


def small_video(path, seed, frames=5) -> str:
  rng = np.random.default_rng(seed)
  write_video(str(path), rng.integers(0, 255, size=(frames, 16, 16, 3), dtype=np.uint8), fps=8)
  return os.path.basename(path)


def test_a_corrupt_video_is_skipped_and_counted(encoders, tmp_path):
  rows = [(small_video(tmp_path / "t0.mp4", 0), small_video(tmp_path / "s0.mp4", 1), "make it red"),
          ("broken.mp4", small_video(tmp_path / "s1.mp4", 2), "make it blue"),
          (small_video(tmp_path / "t2.mp4", 3), small_video(tmp_path / "s2.mp4", 4), "make it green")]
  (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 8)
  with open(tmp_path / "edits.csv", "w", newline="") as f:
    csv.writer(f).writerows([("video", "source_video", "prompt")] + rows)
  config = tiny_config()
  config.data.video_edits.format, config.data.video_edits.path = "manifest", str(tmp_path / "edits.csv")
  out = tmp_path / "out"
  summary = run(config, "video_edit", out, encoders, shard_size=2)
  assert summary["written"] == 2 and summary["records"] == 3 and summary["skipped"] == {"corrupt": 1}
  assert summary["skipped_examples"]["corrupt"] == [str(tmp_path / "broken.mp4")]
  assert json.loads((out / "summary.json").read_text())["skipped"] == {"corrupt": 1}
  prefix = config.data.video_edit_prefix
  assert [precomputed_source(str(out))[i]["instruction"] for i in range(2)] == [prefix + "make it red",
                                                                               prefix + "make it green"]


def test_clip_records_are_decoded_frames_the_raw_pipeline_reads(tmp_path):
  config = tiny_config()
  summary = P.precompute(config, "clip", str(tmp_path), limit=3, progress=False)  # no encoders needed
  source, data = ArrayRecordSource(str(tmp_path / "clip-*.array_record")), config.data
  assert summary["written"] == len(source) == 3
  frames = P.frame_spec(data)
  for index in range(3):
    read = load_example(source[index], "clip", frames)
    direct = P.prepare_example(P.kind_source(data, "clip"), index, "clip", frames, P.task_spec(data, "clip"), 0)
    np.testing.assert_array_equal(read["target"], direct["target"])
    assert read["target"].shape == (5, 16, 16, 3) and read["text"] == direct["text"]


# ---------------------------------------------------------------------------------------
# The command line.


@pytest.mark.parametrize("case, message", [
    ("missing_config", "does not exist"),
    ("unknown_kind", "invalid choice: 'audio'"),
    ("no_out", "--out"),
    ("model_only_config", r"has no \.data"),
])
def test_bad_command_lines_exit_2_in_one_line(case, message, tmp_path, capsys):
  args = {"--config": STAGE1_TINY, "--kind": "image_edit", "--out": str(tmp_path / "out")}
  if case == "missing_config":
    args["--config"] = str(tmp_path / "none.py")
  elif case == "unknown_kind":
    args["--kind"] = "audio"
  elif case == "no_out":
    del args["--out"]
  else:
    args["--config"] = os.path.join(REPO, "configs", "tiny.py")
  code = P.main([x for pair in args.items() for x in pair])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert len(err.splitlines()) == 1 and err.startswith("error:"), err
  assert __import__("re").search(message, err), err
  assert not glob.glob(str(tmp_path / "out" / "*.array_record"))


def test_the_module_runs_and_stores_bfloat16(encoders, tmp_path):
  (tmp_path / "config.py").write_text(CONFIG_FILE)
  out = tmp_path / "out"
  result = subprocess.run([sys.executable, "-m", "sama_jax.precompute", "--config", str(tmp_path / "config.py"),
                           "--kind", "image_edit", "--out", str(out), "--limit", "3", "--dtype", "bfloat16",
                           "--no-progress"], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr
  assert "wrote 3 of 3 records to 1 shards" in result.stdout
  stored, direct = precomputed_source(str(out))[2], direct_encode(tiny_config(), "image_edit", [2], encoders)[0]
  for key in ("latents", "text", "semantic"):  # bfloat16: 8 significant bits
    np.testing.assert_allclose(stored[key], direct[key], rtol=2.0**-8, atol=1e-6, err_msg=key)
