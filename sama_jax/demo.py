"""The built-in demo: the whole SAMA method on the synthetic world, on a CPU.

    python -m sama_jax.demo [--preset smoke|default|full] [--workdir runs/demo] [--strict-split] [--workers N]

0. the world SigLIP stand-in, trained contrastively on world frames and captions
   (the semantic encoder whose tokens Semantic Anchoring predicts; reused on a rerun);
1. stage 1, factorized pre-training: Semantic Anchoring on image-edit pairs + Motion
   Alignment pretext clips (no paired video edits);
2. zero-shot evaluation: the stage-1 model edits held-out clips;
3. stage 2, SFT on paired video edits, from stage 1's EMA weights;
4. evaluation again, next to the identity baseline (output = source);
5. results.md / results.json and preview strips (PNG) and GIFs of held-out edits:
   source | ground truth | stage 1 (zero-shot) | stage 2.
Configuration: configs/demo.py (presets) on top of configs/stage{1,2}_tiny.py.
A stage stopped by SIGTERM (preemption) saves a checkpoint and stops the demo; the same
command resumes it, and a rerun skips finished stages; a stage workdir trained under
another recipe (another preset, or changed defaults) is refused, naming the fields.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_config(preset: str, strict_split: bool = False, workers: int = 0):
  """configs/demo.py at `preset`. `strict_split` holds the held-out (shape, colour) pairs
  out of every training kind (image edits and raw clips too), not only out of stage 2's
  video edits as SYNTHETIC_WORLD.md's split does: a test of compositional generalisation,
  the split of every result before session 19 (docs/results.md). `workers`: grain worker
  processes drawing both stages' scenes (data.num_workers; another data order, so another
  recipe: a workdir trained with another count is refused)."""
  from sama_jax.config import load_config
  from sama_jax.data.config import validate_data_config
  from sama_jax.data.synthetic import TRAIN_KINDS
  path = os.path.join(REPO, "configs", "demo.py")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing; the demo runs from a checkout of the repository")
  c = load_config(path, preset)
  for stage in (c.stage1, c.stage2):
    stage.data.num_workers = workers
    validate_data_config(stage.data)  # a negative count is named here, before any training
    if strict_split:
      stage.data.world.held_out_from = TRAIN_KINDS
  return c


def cache_compiled_programs(workdir: str) -> None:
  """Keeps compiled programs in WORKDIR/xla_cache (JAX's persistent compilation cache), so
  later runs of the same programs skip compilation: stage 2 trains with stage 1's steps
  and encoder, a rerun with both. The sampler is not kept (JAX does not cache programs
  with host callbacks, and its progress bar is one)."""
  import jax
  jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(workdir, "xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def save_previews(kept_by_method: dict, folder: str) -> list[str]:
  """One PNG strip and one GIF per clip: rows source | ground truth | each method."""
  from PIL import Image
  os.makedirs(folder, exist_ok=True)
  written = []
  first = next(iter(kept_by_method.values()))
  for i, (source, truth, _, instruction) in enumerate(first):
    rows = [source, truth] + [kept[i][2] for kept in kept_by_method.values()]
    grid = np.concatenate(rows, axis=2)  # [T, H, W·rows, 3]: side by side per frame
    strip = np.concatenate(list(grid[np.linspace(0, len(grid) - 1, 5).round().astype(int)]), axis=0)
    png, gif = os.path.join(folder, f"clip{i:02d}.png"), os.path.join(folder, f"clip{i:02d}.gif")
    Image.fromarray(np.kron(strip, np.ones((2, 2, 1), np.uint8))).save(png)
    frames = [Image.fromarray(np.kron(f, np.ones((4, 4, 1), np.uint8))) for f in grid]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=150, loop=0)
    with open(os.path.join(folder, f"clip{i:02d}.txt"), "w") as f:
      f.write(f"{instruction}\ncolumns: source | ground truth | {' | '.join(kept_by_method)}\n")
    written += [png, gif]
  return written


SEEN_ROW = "SAMA, seen (shape, colour) pairs"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m sama_jax.demo", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="default", choices=["smoke", "default", "full"])
  p.add_argument("--workdir", default=os.path.join("runs", "demo"))
  p.add_argument("--strict-split", action="store_true",
                 help="hold the held-out (shape, colour) pairs out of all training, image edits and "
                      "raw clips included (default: out of stage 2's video edits, SYNTHETIC_WORLD.md)")
  p.add_argument("--workers", type=int, default=0,
                 help="worker processes drawing the world's scenes (default 0: in the training process, "
                      "right for 2 CPU cores; on an accelerator host with spare cores the step waits on them)")
  p.add_argument("--no-xla-cache", action="store_true",
                 help="do not keep compiled programs in WORKDIR/xla_cache (stage 2 reuses stage 1's "
                      "train steps and encoder; a rerun reuses them)")
  a = p.parse_args(argv)
  if not a.no_xla_cache:
    cache_compiled_programs(a.workdir)
  logging.basicConfig(level=logging.WARNING)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO

  from sama_jax.data.config import world_options
  from sama_jax.edit import edit, load_bundle
  from sama_jax.eval.world import by_reference, evaluate, identity, markdown_table
  from sama_jax.train.loop import train_to_end
  from sama_jax.world_siglip import prepare

  c = demo_config(a.preset, a.strict_split, a.workers)
  start = time.time()
  s1, s2 = os.path.join(a.workdir, "stage1"), os.path.join(a.workdir, "stage2")
  data = c.stage1.data
  world = dict(num_clips=c.eval.num_clips, seed=c.eval.seed, keep=c.eval.previews, **world_options(data))

  print(f"[0/4] world SigLIP: contrastive pre-training on world frames and captions, {c.siglip.steps} steps")
  prepare(c, a.workdir)
  print(f"[1/4] stage 1: factorized pre-training, {c.stage1.train.total_steps} steps -> {s1}")
  train_to_end(c.stage1, s1)
  print("[2/4] zero-shot evaluation of stage 1 on held-out clips")
  bundle1 = load_bundle(s1)
  rows1, table1, kept1 = evaluate(lambda f, i: edit(bundle1, f, i), desc="stage 1", **world)
  print(f"[3/4] stage 2: SFT on paired video edits, {c.stage2.train.total_steps} steps -> {s2}")
  train_to_end(c.stage2, s2, init_from=s1)
  print("[4/4] evaluation of stage 2")
  bundle2 = load_bundle(s2)

  def edit2(frames, instruction):
    return edit(bundle2, frames, instruction)

  rows2, table2, kept2 = evaluate(edit2, desc="stage 2", **world)
  rows0, table0, kept0 = evaluate(identity, desc="identity", **world)
  # The same model on new clips of the training distribution: can it edit at all, apart
  # from generalising to unseen (shape, colour) pairs?
  seen = {**world, "num_clips": c.eval.seen_clips, "keep": 0}
  rows2s, table2s, _ = evaluate(edit2, desc="stage 2, seen pairs", split="seen", **seen)

  tables = {"identity (output = source)": table0, "stage 1 only (zero-shot)": table1,
            "SAMA: stage 1 + stage 2": table2, SEEN_ROW: table2s}
  minutes = (time.time() - start) / 60
  # Where the edits fail: SAMA's held-out clips split by what names the edited object.
  md = (markdown_table(tables) + "\n\nSAMA on the held-out clips, by how the instruction names its object "
        "(the colour alone, a colour another object shares, the shape alone):\n\n" +
        markdown_table(by_reference(rows2), halves=True))
  split = "all training" if a.strict_split else "stage 2's video edits (stage 1's image edits show them)"
  header = (f"# Demo results ({a.preset} preset)\n\n{c.eval.num_clips} held-out clips "
            f"({data.resolution[0]}x{data.resolution[1]}, {data.num_frames} frames; the last row: "
            f"{c.eval.seen_clips} new clips of the training distribution), their (shape, colour) pairs held "
            f"out of {split}; "
            f"{c.stage1.train.total_steps} + {c.stage2.train.total_steps} training steps, "
            f"{c.stage1.edit.steps} sampling steps; {minutes:.1f} minutes.\n\n")
  os.makedirs(a.workdir, exist_ok=True)
  with open(os.path.join(a.workdir, "results.md"), "w") as f:
    f.write(header + md + "\n")
  with open(os.path.join(a.workdir, "results.json"), "w") as f:
    rows = {"identity": rows0, "stage1": rows1, "stage2": rows2, "stage2_seen": rows2s}
    json.dump({"preset": a.preset, "strict_split": a.strict_split, "minutes": minutes, "tables": tables,
               "rows": rows}, f, indent=1, default=float)
  previews = save_previews({"stage 1": kept1, "stage 2": kept2}, os.path.join(a.workdir, "previews"))
  print("\n" + header + md)
  print(f"\nwrote {a.workdir}/results.md, results.json and {len(previews)} previews in {a.workdir}/previews")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
