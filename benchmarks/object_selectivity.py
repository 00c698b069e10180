"""Does a world model edit the object the instruction names, or every object?

    python benchmarks/object_selectivity.py --checkpoint runs/demo/stage2 [--clips 48] [--guidance 1 5]

Edits the held-out clips of a world checkpoint's evaluation (recolours and removals) and
prints, per edit kind and guidance scale, how far the prediction went on the pixels of
the named object and how much it changed the objects the instruction does not name:

- named: the share of the edit done on the named object's pixels (the prediction's
  change from the source projected on the true change; 1 = the edit, 0 = the source);
- others changed: the share of the other objects' pixels that moved more than 35 RGB
  from the source (their truth is the source there);
- others took the new colour: the share of those pixels whose nearest palette colour
  is the recolour's new colour;
- mean RGB change on the other objects and on the background.

Full frames, every frame; pixels fully covered by an object (source scene). Nothing is
asserted: a diagnostic (docs/results.md finding 17).
"""

import argparse

import numpy as np

from sama_jax.data.synthetic_metrics import MATCH_DISTANCE, PALETTE_NAMES, nearest_colour
from sama_jax.edit import edit, load_bundle
from sama_jax.eval.world import eval_cases, trained_world


def measure(pred: np.ndarray, e, truth) -> dict:
  """Per-clip measures of one edit (pred, truth frames: [T, H, W, 3])."""
  src, gt, pred = (x.astype(np.float64) for x in (truth.source_frames, truth.frames, pred))
  covered = truth.source_visible >= 0.99  # [T, n, H, W]
  named = covered[:, e.target]
  others = np.delete(covered, e.target, axis=1).any(axis=1) & ~named
  background = ~(truth.source_visible > 0).any(axis=1)
  change = np.linalg.norm(pred - src, axis=-1)
  wanted = gt - src
  done = np.clip((((pred - src) * wanted).sum(-1)) / np.maximum((wanted ** 2).sum(-1), 1.0), -1.0, 2.0)
  row = {"named": done[named].mean() if named.any() else np.nan,
         "others_changed": (change[others] > MATCH_DISTANCE).mean() if others.any() else np.nan,
         "others_new_colour": np.nan,
         "others_rgb": change[others].mean() if others.any() else np.nan,
         "background_rgb": change[background].mean() if background.any() else np.nan}
  if e.kind == "recolour" and others.any():
    row["others_new_colour"] = (nearest_colour(pred[others]) == PALETTE_NAMES.index(e.colour)).mean()
  return row


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="a world trainer workdir (e.g. runs/demo/stage2)")
  p.add_argument("--clips", type=int, default=48)
  p.add_argument("--seed", type=int, default=1000, help="the evaluation seed (the demo's: 1000)")
  p.add_argument("--guidance", type=float, nargs="+", default=[5.0])
  a = p.parse_args()
  world = trained_world(a.checkpoint)
  bundle = load_bundle(a.checkpoint)
  cases = [c for c in eval_cases(a.clips, a.seed, **world) if c[1].kind in ("recolour", "remove")]
  print("| kind | guidance | clips | named: edit done | others changed > 35 RGB | others took the new colour "
        "| others mean RGB change | background mean RGB change |")
  print("|---|---|---|---|---|---|---|---|")
  for g in a.guidance:
    rows = {}
    for _, e, truth in cases:
      pred = edit(bundle, truth.source_frames, e.instruction, guidance=g)
      rows.setdefault(e.kind, []).append(measure(pred, e, truth))
    for kind, rs in sorted(rows.items()):
      m = {k: np.nanmean([r[k] for r in rs]) if any(np.isfinite(r[k]) for r in rs) else np.nan for k in rs[0]}
      print(f"| {kind} | {g:g} | {len(rs)} | {m['named']:.2f} | {m['others_changed']:.2f} | "
            f"{m['others_new_colour']:.2f} | {m['others_rgb']:.0f} | {m['background_rgb']:.0f} |")


if __name__ == "__main__":
  main()
