"""Scores a world trainer workdir on held-out edits as single frames and as clips.

    python benchmarks/score_frames.py --checkpoint runs/stage1 [--frames 1 9] [--clips 192]
        [--guidance 1] [--split held_out] [--by-reference]

`python -m sama_jax.eval.world` scores clips only, through `edit`, which needs 4k+1 >= 5
frames. A one-frame edit here is an image pair, as stage 1 trains on: the frame is
encoded, denoised by `edit_latents` in one step (video_frames=1) and decoded. Clips go
through `edit` as in the demo. The world (kinds, radii, clip length) is the workdir's
own. docs/results.md findings 18-19 used it (192 one-frame edits, 48 clips). Nothing is
asserted: it prints one table, and with --by-reference one per clip length whose rows
split the edits by how the instruction names its object (`reference_kind`: the colour
alone, a colour other objects share, or the shape alone; docs/results.md finding 22)
and whose columns split each failure in two: the named edit missing ("named ok") and
another object or the background changed ("others kept"; finding 26).
"""

import argparse
import os

import jax.numpy as jnp

from sama_jax.edit import edit, edit_latents, instruction_embeddings, latents_to_frames, load_bundle
from sama_jax.encoders import frames_to_unit
from sama_jax.eval.world import SPLITS, by_reference, evaluate, markdown_table, trained_world


def frame_editor(bundle, guidance: float):
  """(frames uint8 [1, H, W, 3], instruction) -> the one-step edit of that frame."""

  def run(frames, instruction):
    text = instruction_embeddings(bundle, instruction, bundle.config.edit)
    source = bundle.encoders.codec.encode(frames_to_unit(jnp.asarray(frames[None])))
    latents = edit_latents(bundle, source, text, video_frames=1, steps=1, guidance=guidance)
    return latents_to_frames(bundle, latents)

  return run


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="a trainer workdir trained on the world")
  p.add_argument("--frames", type=int, nargs="+", default=[1, 9], help="clip lengths to score (1: image pairs)")
  p.add_argument("--clips", type=int, default=48)
  p.add_argument("--guidance", type=float, default=1.0)
  p.add_argument("--split", choices=sorted(SPLITS), default="held_out")
  p.add_argument("--seed", type=int, default=1000, help="the demo's evaluation seed")
  p.add_argument("--by-reference", action="store_true", help="also split each length's edits by reference kind")
  a = p.parse_args(argv)
  if a.clips < 1 or any(f != 1 and (f < 5 or (f - 1) % 4) for f in a.frames):
    p.error(f"--clips {a.clips} --frames {a.frames}: expected clips >= 1 and frames 1 or 4k+1 >= 5")
  if not os.path.isdir(a.checkpoint):
    p.error(f"--checkpoint {a.checkpoint}: no such workdir")
  world, bundle = trained_world(a.checkpoint), load_bundle(a.checkpoint)
  tables, split_tables = {}, {}
  for frames in a.frames:
    editor = (frame_editor(bundle, a.guidance) if frames == 1 else
              (lambda f, i: edit(bundle, f, i, steps=1, guidance=a.guidance)))
    rows, table, _ = evaluate(editor, num_clips=a.clips, seed=a.seed, split=a.split, desc=f"{frames} frames",
                              **{**world, "frames": frames})
    label = f"{a.split}, {frames} frame{'s' if frames > 1 else ''}, guidance {a.guidance:g}"
    tables[label] = table
    split_tables[label] = by_reference(rows)
  print(markdown_table(tables))
  if a.by_reference:
    for label, table in split_tables.items():
      print(f"\n{label}, by reference\n\n{markdown_table(table, halves=True)}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
