"""Train-step time of the world DiT under each rematerialisation policy, on this machine.

    python benchmarks/remat_step.py                        # stage 1 and stage 2, 10 rounds
    python benchmarks/remat_step.py --stages stage1 --rounds 20 --policies none dots_saveable

For each stage config (configs/stage{1,2}_tiny.py, the world data of the demo: a stage-1
batch of 16 image-edit pairs, a stage-2 batch of 2 video edits) it builds one jitted train
step per `model.remat` policy from the same initial state and batch, then times them in
interleaved rounds (STEPS steps each, the policies taking turns), so a machine that speeds
up or slows down during the run shifts every policy alike. Prints the median and the
spread of the per-round means, and how far each policy's first step is from the first
policy's: the loss and the gradient's global norm (relative differences) and the
parameter update (largest difference over the largest update, per parameter: Adam's first
step divides each gradient by its own size, which magnifies rounding in gradients near
zero). The same function, so float rounding only. Nothing is asserted.
"""

import argparse
import os
import time

import jax
import numpy as np
from flax import linen as nn

from sama_jax.config import load_config
from sama_jax.data.pipeline import stage_pipeline
from sama_jax.encoders import build_encoders, make_encode_fn
from sama_jax.models.layers import REMAT_POLICIES
from sama_jax.parallel.mesh import make_mesh
from sama_jax.train.loop import model_batch
from sama_jax.train.optimizer import learning_rate_table
from sama_jax.train.state import create_train_state
from sama_jax.train.step import jit_train_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stage_config(stage: str, remat: str):
  c = load_config(os.path.join(REPO, "configs", f"{stage}_tiny.py"))
  c.data.stage1_lead_in.share = 0.0  # stage 1's batches after the lead-in: image-edit pairs
  c.data.stage2.image_edit = 0.0  # stage 2: its video-edit batches only
  c.encoders.world_siglip_init = ""  # a random SigLIP stand-in: the targets' values do not matter here
  c.model.remat = remat
  return c


def bench(stage: str, policies: list[str], rounds: int, steps: int) -> list[tuple]:
  base = stage_config(stage, policies[0])
  encoders = build_encoders(base.encoders)
  mesh = make_mesh(base.mesh)
  raw = next(iter(stage_pipeline(base.data, base.stage, 0, 1, total_steps=base.train.total_steps)))
  runs = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(base.mesh.rules):
    batch = jax.block_until_ready(model_batch(raw, encoders, make_encode_fn(encoders), mesh))
    rng, rates = jax.random.key(0), learning_rate_table(base.train)
    peak = rates[min(base.train.warmup_steps, len(rates) - 1)]
    for policy in policies:
      c = stage_config(stage, policy)
      graphdef, optimizer, state, shardings = create_train_state(c.model, c.train, mesh, c.mesh.rules)
      step = jit_train_step(graphdef, optimizer, c.train, shardings, mesh, None)
      init = jax.device_get(state["params"])  # the same for every policy (same seed)
      state, metrics = step(state, batch, rng, peak)  # compiles; a step at the peak rate
      runs.append({"policy": policy, "step": step, "state": state, "times": [], "init": init, "first": jax.device_get(
          (state["params"], metrics["loss"], metrics["grad_norm"]))})
    for _ in range(rounds):
      for run in runs:
        start, state = time.perf_counter(), run["state"]
        for i in range(steps):
          state, metrics = run["step"](state, batch, rng, rates[i])
        jax.block_until_ready(metrics)
        run["times"].append((time.perf_counter() - start) / steps)
        run["state"] = state
  params, loss, grad_norm = runs[0]["first"]
  before = jax.tree.leaves(runs[0]["init"])
  rows = []
  for run in runs:
    # The first step's update (parameters after it minus before), against the first policy's.
    theirs = jax.tree.leaves(run["first"][0])
    update = max(float(np.abs(t - o).max() / (np.abs(o - b).max() + 1e-30))
                 for o, t, b in zip(jax.tree.leaves(params), theirs, before) if np.abs(o - b).max() > 0)
    t = np.asarray(run["times"]) * 1e3
    rows.append((stage, run["policy"], float(np.median(t)), float(t.min()), float(t.max()),
                 abs(float(run["first"][1]) / float(loss) - 1), abs(float(run["first"][2]) / float(grad_norm) - 1),
                 update))
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--stages", nargs="+", default=["stage1", "stage2"], choices=["stage1", "stage2"])
  p.add_argument("--policies", nargs="+", default=["none", "dots_saveable", "full"],
                 choices=[r for r in REMAT_POLICIES if r != "offload_dots"])
  p.add_argument("--rounds", type=int, default=10)
  p.add_argument("--steps", type=int, default=10, help="steps per policy per round")
  a = p.parse_args(argv)
  print(f"{jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, jax {jax.__version__}; {a.rounds} rounds of "
        f"{a.steps} steps per policy\n")
  print("| stage | model.remat | ms per step (median) | fastest round | slowest round | first loss vs first policy "
        "| first gradient norm | first update |")
  print("|---|---|---|---|---|---|---|---|")
  for stage in a.stages:
    for stage_name, policy, median, low, high, loss, norm, update in bench(stage, a.policies, a.rounds, a.steps):
      print(f"| {stage_name} | {policy} | {median:.0f} | {low:.0f} | {high:.0f} | {loss:.1e} | {norm:.1e} | "
            f"{update:.1e} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
