"""Metric sinks: TensorBoard event files and `metrics.jsonl` (one JSON object per line,
with `step`), plus the MFU arithmetic."""

from __future__ import annotations

import json
import math
import os

import numpy as np

# Dense bf16 peak TFLOP/s per chip, by jax `device_kind`, for MFU.
PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100": 989.0, "NVIDIA H200": 989.0,
    "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100-SXM4-40GB": 312.0,
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5": 459.0, "TPU v5p": 459.0,
    "TPU v6 lite": 918.0, "TPU v6e": 918.0,
}


def peak_tflops(device_kind: str, override: float = 0.0) -> float | None:
  """The configured peak, else the table's, else None (MFU is then not reported)."""
  return override or PEAK_TFLOPS.get(device_kind)


def summarise(metrics: dict, task_names) -> dict:
  """Device metrics (fetched to host) -> flat floats, with per-task flow losses for the
  tasks present in the batch."""
  out = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
  sums, counts = np.asarray(metrics["task_loss_sum"]), np.asarray(metrics["task_count"])
  for name, s, n in zip(task_names, sums, counts):
    if n > 0:
      out[f"loss_flow/{name}"] = float(s / n)
  return out


def first_non_finite(scalars: dict) -> str | None:
  return next((k for k, v in scalars.items() if not math.isfinite(v)), None)


class MetricWriter:
  """Writes scalars to TensorBoard and to WORKDIR/metrics.jsonl (process 0 only)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    if enabled:
      from tensorboardX import SummaryWriter
      os.makedirs(workdir, exist_ok=True)
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    for key, value in scalars.items():
      self.tb.add_scalar(key, value, step)
    self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self.jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self.tb.close()
      self.jsonl.close()
