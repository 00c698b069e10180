"""The science table: SAMA's claims tested on the synthetic world, same budget, same
seeds (SYNTHETIC_WORLD.md, issue "the embedded default").

    python -m sama_jax.eval.science [--preset default] [--seeds 0 1 2] [--workdir runs/science]
        [--steps STAGE1 STAGE2] [--clips N] [--strict-split]

--steps and --clips override the preset's training steps and held-out clip count (the
table's header states what was run), so the sweep can be sized to the hours at hand.

Per seed it trains, from the demo preset's configs (configs/demo.py; the world SigLIP
stand-in pre-trained once, as the demo does, into WORKDIR/world_siglip):
  stage 1 full (image-edit pairs and Motion Alignment pretext clips, with the Semantic
  Anchoring loss on the semantic tokens of anchor frames),
  stage 1 without SA (the same batches, semantic loss weight 0: the paper's Table 5 "w/o
  SA"), stage 1 without MA (image-edit pairs only, no pretext clips),
then stage 2 (SFT on paired video edits, the preset's stage-2 steps) from each of them and
from scratch ("stage 2 only": no factorized pre-training, at stage 1's learning rate).
Every stage-1 model is also scored zero-shot. All are scored on the same held-out clips,
next to the identity baseline. Writes WORKDIR/science.md (mean ± std over seeds) and
science.json (per seed). A finished run (its newest checkpoint at the configured steps)
is reused, so a crashed sweep resumes where it stopped; one written under another recipe
is refused (`train_to_end`), so a rerun after a recipe change needs a new workdir.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

# method -> (stage-1 variant or None, runs stage 2)
METHODS = {
    "stage 1 only (zero-shot)": ("full", False),
    "SAMA: stage 1 + stage 2": ("full", True),
    "stage 2 only (no pre-training)": (None, True),
    "stage 1 without SA, zero-shot": ("no_sa", False),
    "stage 1 without SA + stage 2": ("no_sa", True),
    "stage 1 without MA, zero-shot": ("no_ma", False),
    "stage 1 without MA + stage 2": ("no_ma", True),
}
# stage-1 variant -> (keeps the semantic loss, keeps the pretext clips)
VARIANTS = {"full": (True, True), "no_sa": (False, True), "no_ma": (True, False)}
METRICS = ("success", "frame_success", "psnr", "motion_error", "flicker")


def seeded(config, seed: int):
  """`config` with the training and data seeds set to `seed`."""
  config = config.copy_and_resolve_references()
  config.train.seed, config.data.seed = seed, seed
  return config


def stage1_config(demo, variant: str, seed: int):
  """The demo's stage-1 config for `seed`; without SA the semantic tokens are still predicted
  but not trained (semantic_weight 0), without MA no pretext clips are drawn (a lead-in of
  clips alone goes with them, and the schedule restart at its end: image pairs throughout,
  one warmup and decay); otherwise the config's own."""
  c = seeded(demo.stage1, seed)
  keep_semantic, keep_clips = VARIANTS[variant]
  c.train.semantic_weight *= float(keep_semantic)
  lead = c.data.stage1_lead_in
  c.data.stage1.clip *= float(keep_clips)
  lead.clip *= float(keep_clips)
  if lead.image_edit + lead.clip <= 0:
    lead.share = 0.0
    c.train.schedule_restarts = ()
  return c


def aggregate(per_seed: list[dict]) -> dict:
  """[{method: summarise() table}] -> {method: {kind: {metric: (mean, std, n)}}}."""
  out = {}
  for method in per_seed[0]:
    kinds = per_seed[0][method].keys()
    out[method] = {}
    for kind in kinds:
      out[method][kind] = {}
      for metric in METRICS:
        values = [t[method][kind].get(metric, math.nan) for t in per_seed if kind in t[method]]
        values = [v for v in values if not math.isnan(v)]
        out[method][kind][metric] = (float(np.mean(values)) if values else math.nan,
                                     float(np.std(values)) if values else math.nan, len(values))
  return out


def markdown(agg: dict) -> str:
  """Rows: methods; columns: success per edit kind, then all-clip success, frame success,
  PSNR, motion error and flicker, each as mean ± std over seeds."""
  kinds = sorted({k for t in agg.values() for k in t if k != "all"})
  head = (["method"] + [f"{k} success %" for k in kinds] +
          ["all success %", "frames ok %", "PSNR dB", "motion err px", "flicker"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

  def cell(stat, scale=1.0, digits=1):
    mean, std, _ = stat
    return "n/a" if math.isnan(mean) else f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"

  for method, t in agg.items():
    cells = [cell(t[k]["success"], 100, 0) if k in t else "-" for k in kinds]
    a = t["all"]
    cells += [cell(a["success"], 100, 0), cell(a["frame_success"], 100, 0), cell(a["psnr"]),
              cell(a["motion_error"], digits=2), cell(a["flicker"])]
    lines.append("| " + " | ".join([method] + cells) + " |")
  return "\n".join(lines)


def sized(demo, steps: tuple[int, int] | None = None, clips: int | None = None):
  """The demo config with its stage-1 / stage-2 training steps and eval clips overridden
  (warmup, logging and checkpoints rescaled as configs/demo.py does)."""
  from sama_jax.train.config import set_total_steps
  demo = demo.copy_and_resolve_references()
  if steps is not None:
    if min(steps) < 1:
      raise ValueError(f"--steps must be positive, got {steps}")
    for stage, n in zip((demo.stage1, demo.stage2), steps):
      set_total_steps(stage, n)
  if clips is not None:
    if clips < 1:
      raise ValueError(f"--clips must be positive, got {clips}")
    demo.eval.num_clips = clips
  return demo


def run(preset: str, seeds: list[int], workdir: str, steps: tuple[int, int] | None = None,
        clips: int | None = None, strict_split: bool = False) -> dict:
  from sama_jax.demo import demo_config
  from sama_jax.data.config import world_options
  from sama_jax.edit import edit, load_bundle
  from sama_jax.eval.world import evaluate, identity
  from sama_jax.train.loop import train_to_end
  from sama_jax.world_siglip import prepare

  demo = sized(demo_config(preset, strict_split), steps, clips)
  prepare(demo, workdir)  # one world SigLIP for every run and seed, as the demo's
  data = demo.stage1.data
  world = dict(num_clips=demo.eval.num_clips, seed=demo.eval.seed, **world_options(data))
  start = time.time()
  per_seed = []
  _, baseline, _ = evaluate(identity, desc="identity", **world)
  for seed in seeds:
    tables = {"identity (output = source)": baseline}
    for method, (variant, stage2) in METHODS.items():
      s1 = None
      if variant:
        s1 = train_to_end(stage1_config(demo, variant, seed), os.path.join(workdir, f"seed{seed}", f"stage1_{variant}"))
      folder = s1
      if stage2:
        name = f"stage2_{variant or 'scratch'}"
        config = seeded(demo.stage2, seed)
        if s1 is None:  # from scratch: stage 1's learning rate, not the fine-tuning one
          config.train.learning_rate = demo.stage1.train.learning_rate
        folder = train_to_end(config, os.path.join(workdir, f"seed{seed}", name), init_from=s1)
      bundle = load_bundle(folder)
      _, tables[method], _ = evaluate(lambda f, i: edit(bundle, f, i), desc=f"seed {seed}: {method}", **world)
    per_seed.append(tables)
    with open(os.path.join(workdir, "science.json"), "w") as f:
      json.dump({"preset": preset, "strict_split": strict_split, "seeds": seeds[:len(per_seed)],
                 "per_seed": per_seed}, f, indent=1, default=float)
  agg = aggregate(per_seed)
  minutes = (time.time() - start) / 60
  header = (f"# Science table ({preset} preset, seeds {', '.join(map(str, seeds))})\n\n"
            f"{world['num_clips']} held-out clips ({data.resolution[0]}x{data.resolution[1]}, {data.num_frames} "
            f"frames; their (shape, colour) pairs held out of "
            f"{'all training' if strict_split else 'stage-2 video edits'}); stage 1: "
            f"{demo.stage1.train.total_steps} steps, stage 2: {demo.stage2.train.total_steps} "
            f"steps; {demo.stage1.edit.steps} sampling steps; mean ± std over {len(seeds)} seeds; "
            f"{minutes:.0f} minutes.\n\n")
  with open(os.path.join(workdir, "science.md"), "w") as f:
    f.write(header + markdown(agg) + "\n")
  print("\n" + header + markdown(agg))
  return agg


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m sama_jax.eval.science", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="default", choices=["smoke", "default", "full"])
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--workdir", default=os.path.join("runs", "science"))
  p.add_argument("--steps", type=int, nargs=2, metavar=("STAGE1", "STAGE2"), default=None,
                 help="training steps of each stage (default: the preset's)")
  p.add_argument("--clips", type=int, default=None, help="held-out clips (default: the preset's)")
  p.add_argument("--strict-split", action="store_true",
                 help="hold the held-out pairs out of all training, not only out of video edits (as the demo's)")
  a = p.parse_args(argv)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  os.makedirs(a.workdir, exist_ok=True)
  from sama_jax.demo import cache_compiled_programs
  cache_compiled_programs(a.workdir)  # the 7 runs per seed share their programs: compile each once
  run(a.preset, a.seeds, a.workdir, a.steps, a.clips, a.strict_split)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
