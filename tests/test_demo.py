"""The built-in demo's smoke preset runs the whole method end to end (stage 1, zero-shot
evaluation, stage 2, evaluation, results and previews) in a fresh process; a stage stopped
early (SIGTERM) stops the demo instead of being scored."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, write_checkpoint


def test_smoke_demo_writes_results_and_previews(tmp_path):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-m", "sama_jax.demo", "--preset", "smoke", "--workdir", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  tables = results["tables"]
  assert list(tables) == ["identity (output = source)", "stage 1 only (zero-shot)", "SAMA: stage 1 + stage 2",
                          "SAMA, seen (shape, colour) pairs"]
  assert tables["SAMA, seen (shape, colour) pairs"]["all"]["count"] == 2
  assert tables["identity (output = source)"]["all"]["success"] == 0.0  # matched edits all need a change
  assert tables["identity (output = source)"]["all"]["count"] == 4
  report = open(tmp_path / "results.md").read()
  assert "| method |" in report and "pairs held out of stage 2's video edits" in report
  assert results["strict_split"] is False
  # Compiled programs are kept for stage 2 and reruns: stage 2 trains on stage 1's two
  # batch shapes (image pairs, clips) with stage 1's compiled steps (its learning rate is
  # an argument), so the cache holds two train steps, not four.
  cached = os.listdir(tmp_path / "xla_cache")
  assert len([name for name in cached if name.startswith("jit_train_step-")]) == 2, cached
  previews = sorted(os.listdir(tmp_path / "previews"))
  assert "clip00.png" in previews and "clip00.gif" in previews
  for stage in ("stage1", "stage2"):
    assert os.path.isdir(tmp_path / stage / "checkpoints") and os.path.isfile(tmp_path / stage / "metrics.jsonl")
  # The evaluation CLI scores any world workdir (here the smoke run's stage 2).
  result = subprocess.run([sys.executable, "-m", "sama_jax.eval.world", "--checkpoint", str(tmp_path / "stage2"),
                           "--clips", "2", "--steps", "2", "--split", "seen", "--json", str(tmp_path / "eval.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| identity (output = source) |" in result.stdout
  with open(tmp_path / "eval.json") as f:
    scored = json.load(f)
  assert scored["options"] == {"steps": 2} and scored["split"] == "seen" and len(scored["rows"]) == 2
  assert scored["tables"][str(tmp_path / "stage2")]["all"]["count"] == 2
  missing = subprocess.run([sys.executable, "-m", "sama_jax.eval.world", "--checkpoint", str(tmp_path / "nope")],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert missing.returncode != 0 and "does not exist" in missing.stderr


def test_a_preempted_stage_stops_the_demo_instead_of_being_scored(monkeypatch, tmp_path):
  """SIGTERM makes `train` save a checkpoint and return; the demo must then stop (a rerun
  resumes) rather than score and fine-tune a half-trained stage 1."""
  from sama_jax import demo
  from sama_jax.train.loop import train_to_end
  trained, loaded = [], []

  def preempted(config, workdir, init_from=None):  # saves a middle checkpoint and returns
    trained.append(workdir)
    write_checkpoint(workdir, config.train.total_steps // 2, config)

  monkeypatch.setattr("sama_jax.train.loop.train", preempted)
  monkeypatch.setattr("sama_jax.world_siglip.prepare", lambda config, workdir: None)
  monkeypatch.setattr("sama_jax.edit.load_bundle", loaded.append)
  with pytest.raises(SystemExit, match="stopped before step 12"):
    demo.main(["--preset", "smoke", "--workdir", str(tmp_path), "--no-xla-cache"])
  assert trained == [str(tmp_path / "stage1")] and loaded == []
  # A finished run is left as it is: its final checkpoint is there, so nothing trains.
  config = demo.demo_config("smoke").stage1
  write_checkpoint(tmp_path / "stage1", 12, config)
  assert train_to_end(config, str(tmp_path / "stage1")) == str(tmp_path / "stage1") and len(trained) == 1


def test_workers_reach_both_stages_data(monkeypatch, tmp_path):
  from sama_jax import demo
  seen = []

  def preempted(config, workdir, init_from=None):
    seen.append(config.data.num_workers)
    write_checkpoint(workdir, 1, config)

  monkeypatch.setattr("sama_jax.train.loop.train", preempted)
  monkeypatch.setattr("sama_jax.world_siglip.prepare", lambda config, workdir: None)
  with pytest.raises(SystemExit, match="stopped before step 12"):
    demo.main(["--preset", "smoke", "--workdir", str(tmp_path), "--no-xla-cache", "--workers", "3"])
  assert seen == [3]
  config = demo.demo_config("smoke", workers=2)
  assert (config.stage1.data.num_workers, config.stage2.data.num_workers) == (2, 2)
  assert demo.demo_config("smoke").stage2.data.num_workers == 0
  with pytest.raises(ValueError, match="workers=-1"):
    demo.demo_config("smoke", workers=-1)
