"""Edit the world's held-out evaluation clips and score the edits against ground truth
(edit success per edit type, preservation PSNR outside the edited region, motion error
of the edited object's trajectory, temporal flicker; SYNTHETIC_WORLD.md).

    rows, table, kept = evaluate(lambda frames, instruction: edit(bundle, frames, instruction),
                                 num_clips=64, seed=1000, frames=9, height=32, width=32)

`editor(frames uint8 [T, H, W, 3], instruction) -> uint8 [T, H, W, 3]` is any editing
function: a model bundle, or `identity` for the do-nothing baseline. From the shell, any
trainer workdir trained on the world:

    python -m sama_jax.eval.world --checkpoint runs/demo/stage2 [--clips 48] [--guidance 1] [--split seen]

split "held_out" (the default, the demo's) edits clips whose edits involve a held-out
(shape, colour) pair, one that no stage-2 video edit shows (and, where the run's
`data.world.held_out_from` names them, no image edit or raw clip either); split "seen"
edits new clips of stage 2's distribution, which separates "cannot edit" from "does not
generalise".
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from tqdm import tqdm

from sama_jax.data.config import world_options
from sama_jax.data.synthetic import world_case
from sama_jax.data.synthetic_grammar import REFERENCES, reference_kind
from sama_jax.data.synthetic_metrics import evaluate_edit, ground_truth, summarise

Editor = Callable[[np.ndarray, str], np.ndarray]


def identity(frames: np.ndarray, instruction: str) -> np.ndarray:
  """The baseline that returns the source unchanged."""
  return frames


# split -> the world kind its clips are drawn as.
SPLITS = {"held_out": "eval_edit", "seen": "video_edit"}


def eval_cases(num_clips: int, seed: int, split: str = "held_out", **world):
  """(scene, edit, ground truth) triples of a split (SPLITS), deterministic for the
  arguments; `world` are world_case's keywords (frames, height, width, and optionally
  kinds and sampling: `data.config.world_options` of the run). "seen" clips come from the
  training distribution, drawn with `seed` (the trainers draw theirs with
  data.*.world_seed, 0 by default)."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r}; expected one of {sorted(SPLITS)}")
  for index in range(num_clips):
    scene, edit = world_case(SPLITS[split], index, seed, **world)
    yield scene, edit, ground_truth(scene, edit)


def evaluate(editor: Editor, *, num_clips: int, seed: int, desc: str = "eval", keep: int = 0,
             split: str = "held_out", **world):
  """Scores `editor` on `num_clips` clips of `split` (held-out by default); `world` as
  `eval_cases`. Returns (rows, table, kept) where rows are per-clip measures (with the
  instruction and its `reference_kind`), table is `summarise(rows)` (per edit kind and
  "all") and kept holds (source, ground truth, prediction, instruction) of the first
  `keep` clips."""
  rows, kept = [], []
  for scene, edit, truth in tqdm(eval_cases(num_clips, seed, split, **world), total=num_clips,
                                 desc=desc, unit="clip"):
    pred = editor(truth.source_frames, edit.instruction)
    if pred.shape != truth.frames.shape:
      raise ValueError(f"the editor returned {pred.shape}; expected the source's {truth.frames.shape}")
    rows.append({**evaluate_edit(pred, scene, edit), "instruction": edit.instruction,
                 "reference": reference_kind(scene, edit.instruction)})
    if len(kept) < keep:
      kept.append((truth.source_frames, truth.frames, pred, edit.instruction))
  return rows, summarise(rows), kept


def trained_world(workdir: str) -> dict:
  """The world a trainer workdir was trained on (`world_options` of its saved data config:
  clip size, edit kinds, scene sampling), as `evaluate` takes it. Exits with a message if
  there is no such run."""
  import os

  from sama_jax.train import checkpoint as ckpt
  if not os.path.isdir(workdir):
    raise SystemExit(f"{workdir} does not exist; train one first (python -m sama_jax.demo)")
  return world_options(ckpt.read_config(os.path.join(workdir, "checkpoints"))["data"])


def by_reference(rows: list[dict]) -> dict[str, dict]:
  """`summarise` of the rows of each reference kind (REFERENCES order; rows whose
  instruction names no object left out), keyed "reference: <kind>" for `markdown_table`:
  whether the edits fail where the colour alone names the object or where the shape must."""
  return {f"reference: {ref}": summarise([r for r in rows if r.get("reference") == ref])
          for ref in REFERENCES if any(r.get("reference") == ref for r in rows)}


def markdown_table(tables: dict[str, dict], halves: bool = False) -> str:
  """Rows: methods; columns: success per edit kind, then success, frame success (the share
  of frames showing the edit), PSNR, motion error and flicker over all clips. With
  `halves`, two more after success: the share of clips whose named edit shows ("named
  ok") and whose other objects and background are kept ("others kept"; evaluate_edit)."""
  kinds = sorted({k for t in tables.values() for k in t if k != "all"})
  head = (["method"] + [f"{k} success" for k in kinds] + ["all success"] +
          (["named ok", "others kept"] if halves else []) + ["frames ok", "PSNR dB", "motion err px", "flicker"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  fmt = lambda v: "n/a" if v is None or np.isnan(v) else f"{v:.2f}"
  share = lambda v: "n/a" if v is None or math.isnan(v) else f"{100 * v:.0f}%"
  for method, t in tables.items():
    cells = [f"{100 * t[k]['success']:.0f}% ({t[k]['count']})" if k in t else "-" for k in kinds]
    a = t["all"]
    frames = a.get("frame_success", math.nan)
    cells += [f"{100 * a['success']:.0f}%"]
    if halves:
      cells += [share(a.get("named_ok", math.nan)), share(a.get("others_kept", math.nan))]
    cells += [share(frames), fmt(a["psnr"]), fmt(a["motion_error"]), fmt(a["flicker"])]
    lines.append("| " + " | ".join([method] + cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  import argparse
  import json
  import os

  p = argparse.ArgumentParser(prog="python -m sama_jax.eval.world", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="a trainer workdir trained on the world")
  p.add_argument("--clips", type=int, default=48, help="clips to edit and score")
  p.add_argument("--seed", type=int, default=1000, help="seed of the clips (the demo's; --split seen with the trainers' "
                 "data.*.world_seed, 0 by default, would score training clips)")
  p.add_argument("--steps", type=int, help="sampling steps (default: the workdir's edit config)")
  p.add_argument("--guidance", type=float, help="text guidance scale (default: the workdir's)")
  p.add_argument("--split", choices=sorted(SPLITS), default="held_out",
                  help="held_out: (shape, colour) pairs no video edit shows (the demo's); seen: stage 2's distribution")
  p.add_argument("--json", help="also write the per-kind table and per-clip rows here")
  a = p.parse_args(argv)
  if a.clips < 1:
    p.error(f"--clips {a.clips}: expected at least 1")
  world = trained_world(a.checkpoint)
  from sama_jax.edit import edit, load_bundle
  bundle = load_bundle(a.checkpoint)
  options = {k: v for k, v in (("steps", a.steps), ("guidance", a.guidance)) if v is not None}
  rows, table, _ = evaluate(lambda f, i: edit(bundle, f, i, **options), num_clips=a.clips, seed=a.seed,
                            desc=os.path.basename(os.path.normpath(a.checkpoint)), split=a.split, **world)
  _, table0, _ = evaluate(identity, num_clips=a.clips, seed=a.seed, desc="identity", split=a.split, **world)
  tables = {"identity (output = source)": table0, a.checkpoint: table}
  print(markdown_table(tables))
  if a.json:
    with open(a.json, "w") as f:
      json.dump({"checkpoint": a.checkpoint, "split": a.split, "options": options, "tables": tables,
                 "rows": rows}, f, indent=1, default=float)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
