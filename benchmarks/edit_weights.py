"""Quality cost of low-precision editing weights on the synthetic world.

    python -m sama_jax.demo                                  # trains runs/demo/stage{1,2}
    python benchmarks/edit_weights.py --checkpoint runs/demo/stage2 [--clips 48]

Edits the world's held-out clips with the same trained model stored as float32, bfloat16
and int8 (weight-only, `edit --weights`), and prints per format: the world's scores
(edit success, preservation PSNR against the ground truth, flicker), the PSNR of the
edited frames against the float32 model's edit of the same clip (how far the rounding
moves the output; inf = identical), and the DiT's weight bytes.
"""

import argparse
import os

import numpy as np
from flax import nnx

from sama_jax.edit import edit, load_bundle
from sama_jax.eval.world import evaluate, trained_world
from sama_jax.models.quant import WEIGHT_FORMATS, weight_bytes


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", default=os.path.join("runs", "demo", "stage2"), help="trainer workdir")
  p.add_argument("--clips", type=int, default=48)
  p.add_argument("--seed", type=int, default=1000, help="held-out world seed (the demo's)")
  a = p.parse_args()
  world = trained_world(a.checkpoint)
  outputs, rows = {}, []
  for weights in WEIGHT_FORMATS:
    bundle = load_bundle(a.checkpoint, weights=weights)
    edits = []

    def editor(frames, instruction, bundle=bundle, edits=edits):
      edits.append(edit(bundle, frames, instruction))
      return edits[-1]

    _, table, _ = evaluate(editor, num_clips=a.clips, seed=a.seed, desc=weights, **world)
    outputs[weights] = edits
    agreement = np.mean([psnr(x, y) for x, y in zip(edits, outputs["float32"])])
    rows.append((weights, table["all"], agreement, weight_bytes(nnx.state(bundle.model)) / 2 ** 20))

  print(f"\n{a.clips} held-out world clips, {a.checkpoint}")
  print("| weights | all success | PSNR dB (vs truth) | flicker | PSNR dB vs float32 edit | DiT MiB |")
  print("|---|---|---|---|---|---|")
  for weights, t, agreement, mib in rows:
    print(f"| {weights} | {100 * t['success']:.0f}% | {t['psnr']:.2f} | {t['flicker']:.2f} | "
          f"{agreement:.1f} | {mib:.1f} |")


if __name__ == "__main__":
  main()
