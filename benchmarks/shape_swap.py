"""Does a world model read the shape word? Same-colour cases, shape word swapped.

    python benchmarks/shape_swap.py --checkpoint runs/demo/stage1 [--cases 400] [--split held_out]

Takes the one-frame recolours and removals among `--cases` evaluation cases whose object
shares its colour with an object of another shape ("the red circle" beside a red
square), edits each frame twice, with its instruction and with the same instruction
naming the other object's shape ("the red square"), and prints the mean RGB change from
the source (0..765, summed over channels) on the named object and on its twin under
each instruction, and in how many cases the named object moves more under its own
instruction than under the swapped one (about half if the shape word is ignored).
Nothing is asserted: a diagnostic (docs/results.md finding 26).
"""

import argparse
import os

import numpy as np

from sama_jax.data.synthetic_grammar import reference_kind
from sama_jax.edit import load_bundle
from sama_jax.eval.world import SPLITS, eval_cases, trained_world

from score_frames import frame_editor


def twin_of(scene, edit) -> int | None:
  """An object with the named object's colour and another shape, or None."""
  named = scene.objects[edit.target]
  return next((i for i, o in enumerate(scene.objects)
               if i != edit.target and o.colour == named.colour and o.shape != named.shape), None)


def change_on(pred: np.ndarray, source: np.ndarray, mask: np.ndarray) -> float:
  """Mean summed-RGB |pred − source| over the pixels of `mask` (frame 0)."""
  return float(np.abs(pred[0].astype(np.float32) - source[0].astype(np.float32)).sum(-1)[mask].mean())


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="a trainer workdir trained on the world")
  p.add_argument("--cases", type=int, default=400, help="evaluation cases to search for same-colour ones")
  p.add_argument("--split", choices=sorted(SPLITS), default="held_out")
  p.add_argument("--seed", type=int, default=1000, help="the demo's evaluation seed")
  a = p.parse_args(argv)
  if not os.path.isdir(a.checkpoint):
    p.error(f"--checkpoint {a.checkpoint}: no such workdir")
  world, bundle = trained_world(a.checkpoint), load_bundle(a.checkpoint)
  run = frame_editor(bundle, 1.0)
  rows = []
  for scene, edit, truth in eval_cases(a.cases, a.seed, a.split, **{**world, "frames": 1}):
    if edit.kind not in ("recolour", "remove") or reference_kind(scene, edit.instruction) != "colour shared":
      continue
    twin = twin_of(scene, edit)
    if twin is None:
      continue
    named, other = scene.objects[edit.target], scene.objects[twin]
    swapped = edit.instruction.replace(f"{named.colour} {named.shape}", f"{named.colour} {other.shape}")
    masks = [truth.source_visible[0, i] >= 0.5 for i in (edit.target, twin)]
    preds = [np.asarray(run(truth.source_frames, text)) for text in (edit.instruction, swapped)]
    rows.append([change_on(pred, truth.source_frames, mask) for pred in preds for mask in masks])
  if not rows:
    print(f"no same-colour recolour or removal among {a.cases} {a.split} cases; raise --cases")
    return 1
  r = np.array(rows)  # [cases, (own: named, twin; swapped: named, twin)]
  print(f"{len(r)} same-colour cases ({a.split}), mean RGB change from the source (0..765)\n")
  print("| instruction names | named object | its twin |\n|---|---|---|")
  print(f"| the named object's shape | {r[:, 0].mean():.0f} | {r[:, 1].mean():.0f} |")
  print(f"| the twin's shape | {r[:, 2].mean():.0f} | {r[:, 3].mean():.0f} |")
  print(f"\nthe named object moves more under its own instruction in {(r[:, 0] > r[:, 2]).sum()} of {len(r)} cases")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
