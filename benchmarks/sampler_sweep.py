"""Sampling settings of a trained world model: steps x shift x guidance, scored on held-out clips.

    python benchmarks/sampler_sweep.py --checkpoint runs/demo/stage2 --steps 20 50 \
        --shift 1 3 5 --guidance 1 3 5 --clips 24

Training is fixed; only `edit`'s sampler options change (the model is compiled once per
setting). Prints one Markdown row per setting: edit success, preservation PSNR against
the ground truth, flicker. Nothing is asserted.
"""

import argparse
import itertools
import os

from sama_jax.edit import edit, load_bundle
from sama_jax.eval.world import evaluate, trained_world


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", default=os.path.join("runs", "demo", "stage2"), help="trainer workdir")
  p.add_argument("--steps", type=int, nargs="+", default=[20])
  p.add_argument("--shift", type=float, nargs="+", default=[1.0, 3.0, 5.0])
  p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0, 5.0])
  p.add_argument("--clips", type=int, default=24)
  p.add_argument("--seed", type=int, default=1000, help="held-out world seed (the demo's)")
  a = p.parse_args()
  world = trained_world(a.checkpoint)
  bundle = load_bundle(a.checkpoint)
  rows = []
  for steps, shift, guidance in itertools.product(a.steps, a.shift, a.guidance):
    options = dict(steps=steps, shift=shift, guidance=guidance)
    _, table, _ = evaluate(lambda f, i: edit(bundle, f, i, **options), num_clips=a.clips, seed=a.seed,
                           desc=f"steps {steps} shift {shift} g {guidance}", **world)
    rows.append((options, table["all"]))
  print(f"\n{a.clips} held-out world clips, {a.checkpoint}")
  print("| steps | shift | guidance | all success | PSNR dB | flicker |")
  print("|---|---|---|---|---|---|")
  for o, t in rows:
    print(f"| {o['steps']} | {o['shift']:g} | {o['guidance']:g} | {100 * t['success']:.0f}% | "
          f"{t['psnr']:.2f} | {t['flicker']:.2f} |")


if __name__ == "__main__":
  main()
