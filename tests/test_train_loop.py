"""The training loop end to end: stages, handoff, crash safety, preemption, NaN stops and
multi-host runs. Runs use one batch shape (cube-inpainting clips, or video edits) so each
compiles once."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

from conftest import REPO, write_checkpoint
from sama_jax.config import load_config
from sama_jax.train import checkpoint as ckpt
from sama_jax.train.loop import train, train_to_end

STAGE1 = os.path.join(REPO, "configs", "stage1_tiny.py")
STAGE2 = os.path.join(REPO, "configs", "stage2_tiny.py")
# One batch shape: stage 1 = cube-inpainting clips only; small frames; no progress bar.
OVERRIDES = {"data.stage1.image_edit": 0.0, "data.stage1.clip": 1.0, "data.stage1_lead_in.share": 0.0,
             "data.pretext.mix.none": 0.0, "data.pretext.mix.speed": 0.0,
             "data.pretext.mix.tube": 0.0, "data.resolution": (16, 16), "data.num_frames": 5,
             "data.video_batch_size": 4, "run.progress_bar": False, "run.log_every": 1,
             "run.async_checkpoints": False}
# In-process runs see the 8 fake devices of conftest: a 3-axis mesh.
MESH = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": -1}


def small(path, steps, **extra):
  config = load_config(path)
  for key, value in {**OVERRIDES, **MESH, **extra}.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  config.train.total_steps = steps
  return config


# CLI runs test the loop's mechanics (resume, signals, processes), which need no width:
# a narrow DiT compiles and steps faster.
NARROW = {"model.dim": 64, "model.ffn_dim": 128, "model.num_heads": 2, "model.num_layers": 2,
          "model.freq_dim": 32, "model.semantic_hidden_dim": 32}
# The CLI runs of this module compile the same programs: one persistent compilation cache
# lets later runs skip the compile (seconds instead of ~20 s per run on 2 cores).
XLA_CACHE = {"JAX_COMPILATION_CACHE_DIR": tempfile.mkdtemp(prefix="sama_test_xla_cache_"),
             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def cli_flags(steps, **extra):
  flags = [f"--config.train.total_steps={steps}"]
  for key, value in {**OVERRIDES, **NARROW, **extra}.items():
    flags.append(f"--config.{key}={value}")
  return flags


def read_metrics(workdir):
  """{step: last logged metrics} (a resumed run logs the steps after its checkpoint again)."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      out[row["step"]] = row
  return out


@pytest.mark.slow  # two in-process stages (~100 s); handoff is also covered by test_lora and test_convert_cli
def test_stage1_then_stage2_learns_and_hands_over_parameters(tmp_path):
  s1 = str(tmp_path / "s1")
  train(small(STAGE1, 60, **{"train.learning_rate": 1e-3, "train.warmup_steps": 5}), s1)
  losses = [m["loss"] for _, m in sorted(read_metrics(s1).items())]
  assert len(losses) == 60 and np.mean(losses[-15:]) < 0.8 * np.mean(losses[:15]), losses
  assert all(k in read_metrics(s1)[60] for k in ("loss_flow/cube", "grad_norm", "learning_rate", "tokens_per_s"))

  # Stage 2 from stage 1's EMA parameters with a fresh optimizer; lr 0 keeps them as loaded.
  s2 = str(tmp_path / "s2")
  config2 = small(STAGE2, 1, **{"train.learning_rate": 0.0, "train.ema_decay": 0.0, "train.weight_decay": 0.0,
                                "data.stage2.image_edit": 0.0})
  train(config2, s2, init_from=s1)
  raw1 = ckpt.read_state(os.path.join(s1, "checkpoints"), 60)
  raw2 = ckpt.read_state(os.path.join(s2, "checkpoints"), 1)
  for a, b in zip(jax.tree.leaves(raw1["ema"]), jax.tree.leaves(raw2["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(raw2["step"]) == 1
  counts = [np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(raw2["opt_state"])[0]
            if "count" in jax.tree_util.keystr(p)]
  assert counts and all(int(c) == 1 for c in counts)  # the optimizer started fresh: one update


def test_non_finite_loss_stops_with_the_step_and_metric(tmp_path):
  config = small(STAGE1, 8, **{"train.learning_rate": 1e30, "train.grad_clip": 0.0, "train.warmup_steps": 0})
  with pytest.raises(FloatingPointError, match=r"step \d+: (loss|grad_norm)\S* = (nan|inf)"):
    train(config, str(tmp_path))


def test_channel_mode_with_shortened_speed_sources_is_refused_before_compiling(tmp_path):
  config = small(STAGE1, 1, **{"model.source_mode": "channel", "data.pretext.speed_mode": "subsample",
                                "data.pretext.mix.speed": 3.0})
  with pytest.raises(ValueError, match="speed_mode='time_warp'"):
    train(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


def test_a_bad_train_config_set_after_it_was_built_is_refused_before_anything_runs(tmp_path):
  config = small(STAGE1, 4, **{"train.schedule_restarts": (1.5,)})  # as a --config.train.x override sets it
  with pytest.raises(ValueError, match=r"train.schedule_restarts=\(1.5,\)"):
    train(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_resuming_with_another_held_out_split_is_refused(tmp_path):
  # A run whose image edits and clips showed the held-out pairs must not resume as a strict-split run.
  train(small(STAGE1, 1, **NARROW), str(tmp_path))
  strict = small(STAGE1, 2, **NARROW, **{"data.world.held_out_from": ("image_edit", "clip", "video_edit")})
  with pytest.raises(ValueError, match="another synthetic world.*held_out_from"):
    train(strict, str(tmp_path))
  assert ckpt.checkpoint_manager(os.path.join(tmp_path, "checkpoints"), async_save=False).latest_step() == 1


def test_train_to_end_reuses_only_a_run_of_the_same_recipe(monkeypatch, tmp_path):
  trained = []
  monkeypatch.setattr("sama_jax.train.loop.train", lambda config, workdir, init_from=None: trained.append(workdir))
  config = small(STAGE1, 4)
  write_checkpoint(tmp_path, 4, config)
  # Finished with this recipe: left as it is (where the SigLIP weights are read from may differ).
  same = config.copy_and_resolve_references()
  same.encoders.world_siglip_init = "/elsewhere/world_siglip"
  same.run.log_every = 7
  same.model.remat = "full"  # the same function, computed another way
  assert train_to_end(same, str(tmp_path)) == str(tmp_path) and trained == []
  # Finished with another recipe: neither reused nor trained over.
  other = config.copy_and_resolve_references()
  other.model.rope_theta = 10000.0
  with pytest.raises(ValueError, match=r"another recipe \(model.rope_theta: 100.0 -> 10000.0\)"):
    train_to_end(other, str(tmp_path))
  # Half done under a shorter schedule: resuming it longer would splice two schedules.
  longer = small(STAGE1, 8)
  with pytest.raises(ValueError, match="train.total_steps: 4 -> 8"):
    train_to_end(longer, str(tmp_path))
  assert trained == []


def devices(n):
  return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"}


def run_cli(workdir, flags, env=None):
  """The training CLI in a subprocess (2 CPU devices unless `env` says otherwise); its
  output goes to WORKDIR.log (a pipe could fill up and stall it)."""
  log = open(f"{workdir}.log", "a")
  process = subprocess.Popen([sys.executable, "-m", "sama_jax.train", f"--config={STAGE1}", f"--workdir={workdir}",
                              *flags], cwd=REPO, env={**os.environ, **XLA_CACHE, **devices(2), **(env or {})},
                             stdout=log, stderr=subprocess.STDOUT)
  process.log = f"{workdir}.log"
  return process


def tail(process, n=3000):
  return open(process.log).read()[-n:]


def finish(process, timeout=600):
  assert process.wait(timeout=timeout) == 0, tail(process)


def wait_for_step(workdir, step, process, timeout=300):
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(path) and any(json.loads(l)["step"] >= step for l in open(path) if l.strip()):
      return
    if process.poll() is not None:
      raise AssertionError(f"run ended early: {tail(process)}")
    time.sleep(0.05)
  raise AssertionError("run too slow")


@pytest.mark.slow  # three CLI runs (~100 s); test_sigterm_saves_and_exits stays in the default run
def test_sigkill_and_resume_reproduce_the_uninterrupted_run(tmp_path):
  flags = cli_flags(24, **{"run.checkpoint_every": 4})
  whole = str(tmp_path / "whole")
  finish(run_cli(whole, flags))
  broken = str(tmp_path / "broken")
  process = run_cli(broken, flags)
  wait_for_step(broken, 6, process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = max(read_metrics(broken))
  assert killed_at < 24, "the run finished before it was killed"
  finish(run_cli(broken, flags))  # resumes from its newest checkpoint
  a, b = read_metrics(whole), read_metrics(broken)
  assert sorted(a) == sorted(b) == list(range(1, 25))
  for step in a:
    assert a[step]["loss"] == b[step]["loss"], step  # bit for bit, data order included


def test_sigterm_saves_and_exits(tmp_path):
  workdir = str(tmp_path / "run")
  process = run_cli(workdir, cli_flags(10_000, **{"run.checkpoint_every": 100_000}))
  wait_for_step(workdir, 3, process)
  process.send_signal(signal.SIGTERM)
  finish(process, timeout=120)
  manager = ckpt.checkpoint_manager(os.path.join(workdir, "checkpoints"), async_save=False)
  assert manager.latest_step() is not None and manager.latest_step() >= 3


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # three processes (~130 s); test_convert_multiprocess keeps a 2-process gloo run in the default run
def test_two_processes_match_one_process(tmp_path):
  """2 processes x 2 CPU devices (gloo collectives) vs 1 process x 4 devices: same losses,
  one consistent checkpoint."""
  flags = cli_flags(3, **{"run.checkpoint_every": 3})
  single = str(tmp_path / "single")
  finish(run_cli(single, flags, env=devices(4)))
  multi = str(tmp_path / "multi")
  port = free_port()
  procs = [run_cli(multi, flags + ["--config.run.distributed=True", f"--config.run.coordinator_address=localhost:{port}",
                                   "--config.run.num_processes=2", f"--config.run.process_id={i}",
                                   "--config.run.cpu_collectives=gloo"], env=devices(2)) for i in range(2)]
  codes = [p.wait(timeout=600) for p in procs]
  assert codes == [0, 0], [tail(p) for p in procs]
  a, b = read_metrics(single), read_metrics(multi)
  assert sorted(a) == sorted(b) == [1, 2, 3]
  for step in a:
    assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5)
  manager = ckpt.checkpoint_manager(os.path.join(multi, "checkpoints"), async_save=False)
  assert manager.all_steps() == [3]
  restored = ckpt.read_state(os.path.join(multi, "checkpoints"), 3)
  reference = ckpt.read_state(os.path.join(single, "checkpoints"), 3)
  for x, y in zip(jax.tree.leaves(restored["params"]), jax.tree.leaves(reference["params"])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
