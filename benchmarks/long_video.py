"""Long-video editing: joint windows with blended velocities vs windows edited apart.

    python benchmarks/long_video.py --checkpoint runs/demo/stage2 --clips 32
    python benchmarks/long_video.py --random --clips 3 --steps 4    # smoke run, random weights

Edits held-out synthetic-world clips 4x the training length (33 frames of 32x32 for the
demo model, trained at 9) three ways:
  joint windows      edit(..., max_window_frames=W): one source encoding, every sampler
                     step runs the model on overlapping windows (continuous temporal
                     RoPE) and blends their velocities into one latent, decoded once;
  independent        each W-frame window encoded, edited, decoded on its own, the
                     windows cross-faded in pixel space with the same triangular weights;
  whole clip         the plain edit of all frames at once (positions beyond training).
Prints a Markdown table of edit success, preservation PSNR, motion error and flicker
(sama_jax.data.synthetic_metrics) and colour drift: the RGB distance between the mean
colour of the edited region (ground-truth masks) over the first window's frames and over
the last window's. The ground truth's own drift is the floor (gradient backgrounds
differ across the frame). Nothing is asserted.
"""

import argparse
import math
import os
import time

import numpy as np

from sama_jax.data.synthetic_metrics import evaluate_edit, summarise
from sama_jax.diffusion.windows import blend_weights, overlap_frames, window_starts
from sama_jax.edit import EditBundle, edit, load_bundle
from sama_jax.eval.world import eval_cases

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_bundle() -> EditBundle:
  """The demo model's config (configs/stage1_tiny.py) with random weights, the output
  head included (it starts at zero, which would make every method return the noise)."""
  import jax
  from flax import nnx

  from sama_jax.config import load_config
  from sama_jax.encoders import build_encoders
  from sama_jax.models import SamaDiT

  config = load_config(os.path.join(REPO, "configs", "stage1_tiny.py"))
  model = SamaDiT(config.model, nnx.Rngs(0))
  kernel = model.dit.head.proj_out.kernel
  kernel[...] = 0.05 * jax.random.normal(jax.random.key(0), kernel.shape, kernel.dtype)
  return EditBundle(model, build_encoders(config.encoders), config)


def independent_windows(bundle, frames: np.ndarray, instruction: str, window: int, overlap: float,
                        **options) -> np.ndarray:
  """Each window edited on its own, cross-faded in the overlaps: uint8 [T, H, W, 3]."""
  t = len(frames)
  starts = window_starts(t, window, overlap_frames(window, overlap))
  weights = blend_weights(starts, window, t)
  out = None
  for s, w in zip(starts, weights):
    edited = edit(bundle, frames[s:s + window], instruction, **options).astype(np.float32)
    if out is None:
      out = np.zeros((t,) + edited.shape[1:], np.float32)
    out[s:s + window] += w[:, None, None, None] * edited
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def edited_mask(edit_, truth) -> np.ndarray | None:
  """bool [T, H, W]: the pixels whose colour the edit sets (None for unmatched edits)."""
  background = truth.visible.sum(axis=1) < 1e-4
  if edit_.kind in ("recolour", "replace", "add"):
    return truth.visible[:, edit_.target] >= 0.99
  if edit_.kind == "remove":
    return (truth.source_visible[:, edit_.target] >= 0.99) & background
  if edit_.kind == "background":
    return background
  return None


def colour_drift(frames: np.ndarray, mask: np.ndarray | None, window: int) -> float:
  """|mean RGB of the masked pixels in the first `window` frames - in the last ones|."""
  if mask is None or not mask[:window].any() or not mask[-window:].any():
    return math.nan
  first = frames[:window][mask[:window]].astype(np.float64).mean(axis=0)
  last = frames[-window:][mask[-window:]].astype(np.float64).mean(axis=0)
  return float(np.linalg.norm(first - last))


def nanmean(values) -> float:
  values = [v for v in values if not math.isnan(v)]
  return float(np.mean(values)) if values else math.nan


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--checkpoint", help="trainer workdir, e.g. runs/demo/stage2")
  p.add_argument("--random", action="store_true", help="the demo config with random weights (smoke run)")
  p.add_argument("--clips", type=int, default=32)
  p.add_argument("--seed", type=int, default=1000, help="first held-out world seed (eval uses 1000)")
  p.add_argument("--frames", type=int, default=33, help="clip length (4k+1); 4x the demo's 9")
  p.add_argument("--window", type=int, default=9, help="frames per window: the training length")
  p.add_argument("--overlap", type=float, default=0.25, help="share of a window shared with the next")
  p.add_argument("--height", type=int, default=32)
  p.add_argument("--width", type=int, default=32)
  p.add_argument("--steps", type=int, help="sampler steps (default: the checkpoint's edit config)")
  a = p.parse_args()
  if bool(a.checkpoint) == a.random:
    p.error("give --checkpoint WORKDIR or --random")
  bundle = random_bundle() if a.random else load_bundle(a.checkpoint)
  options = {"steps": a.steps} if a.steps else {}
  options.update(max_frames=a.frames, window_overlap=a.overlap)
  methods = {
      "joint windows (blended velocities)":
          lambda f, i: edit(bundle, f, i, max_window_frames=a.window, **options),
      "independent windows (cross-faded)":
          lambda f, i: independent_windows(bundle, f, i, a.window, a.overlap, **options),
      "whole clip at once": lambda f, i: edit(bundle, f, i, **options),
  }
  rows = {name: [] for name in methods}
  drifts = {name: [] for name in [*methods, "ground truth"]}
  seconds = {name: 0.0 for name in methods}
  for n, (scene, edit_, truth) in enumerate(eval_cases(a.clips, a.seed, frames=a.frames, height=a.height, width=a.width)):
    mask = edited_mask(edit_, truth)
    drifts["ground truth"].append(colour_drift(truth.frames, mask, a.window))
    for name, editor in methods.items():
      start = time.perf_counter()
      pred = editor(truth.source_frames, edit_.instruction)
      seconds[name] += time.perf_counter() - start
      if pred.shape != truth.frames.shape:
        raise ValueError(f"{name} returned {pred.shape}; expected {truth.frames.shape}")
      rows[name].append(evaluate_edit(pred, scene, edit_))
      drifts[name].append(colour_drift(pred, mask, a.window))
    print(f"clip {n + 1}/{a.clips}: {edit_.kind}: {edit_.instruction}", flush=True)

  fmt = lambda v: "n/a" if math.isnan(v) else f"{v:.2f}"
  source = "random weights" if a.random else a.checkpoint
  print(f"\n{a.clips} clips of {a.frames}x{a.height}x{a.width}, windows of {a.window} frames "
        f"(overlap {a.overlap:g}), {source}\n")
  print("| method | success | PSNR dB | motion err px | flicker | colour drift first->last window | s per clip |")
  print("|---|---|---|---|---|---|---|")
  for name in methods:
    t = summarise(rows[name])["all"]
    print(f"| {name} | {100 * t['success']:.0f}% | {fmt(t['psnr'])} | {fmt(t['motion_error'])} | "
          f"{fmt(t['flicker'])} | {fmt(nanmean(drifts[name]))} | {seconds[name] / a.clips:.1f} |")
  print(f"| ground truth | 100% | - | - | - | {fmt(nanmean(drifts['ground truth']))} | - |")


if __name__ == "__main__":
  main()
