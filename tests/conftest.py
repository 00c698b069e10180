"""Test setup: JAX on CPU with float32 matmuls at full precision, and shared helpers."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Eight fake CPU devices, so mesh and sharding tests run without accelerators. Arrays not
# placed on a mesh live on device 0, so single-device tests are unaffected.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rel_error(ours, ref) -> float:
  """max |ours - ref| / max |ref|: the parity measure every parity test states."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.fixture
def tiny_config():
  from sama_jax.config import load_config
  return load_config(os.path.join(REPO, "configs", "tiny.py")).model


def write_checkpoint(workdir, step, config):
  """A checkpoint of `step` in WORKDIR/checkpoints carrying `config` and a placeholder state:
  what `train_to_end` reads to tell a finished run of the same recipe."""
  from sama_jax.train import checkpoint as ckpt
  manager = ckpt.checkpoint_manager(os.path.join(workdir, "checkpoints"), async_save=False)
  ckpt.save(manager, step, {"step": np.asarray(step, np.int32)}, config.to_dict(), None)
  manager.close()
