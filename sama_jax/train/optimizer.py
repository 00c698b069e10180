"""AdamW with warmup and decay, clipping, accumulation and a trainable-parameter regex."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sama_jax.data.phases import phase_steps


def _cycle(c, steps: int) -> optax.Schedule:
  """One cycle of `steps` steps: linear warmup over c.warmup_steps (at most `steps`), then
  the decay c.schedule names."""
  warmup_steps = min(c.warmup_steps, steps)
  decay_steps = max(1, steps - warmup_steps)
  after = {
      "constant": optax.constant_schedule(c.learning_rate),
      "cosine": optax.cosine_decay_schedule(c.learning_rate, decay_steps),
      "linear": optax.linear_schedule(c.learning_rate, 0.0, decay_steps),
  }[c.schedule]
  if not warmup_steps:
    return after
  warmup = optax.linear_schedule(0.0, c.learning_rate, warmup_steps)
  return optax.join_schedules([warmup, after], [warmup_steps])


def restart_steps(c) -> list[int]:
  """The steps at which c.schedule_restarts (fractions of c.total_steps) start a new cycle,
  counted as a data lead-in's length is (`phase_steps`), so equal share and fraction cut
  the run at the same step."""
  return [phase_steps(f, c.total_steps) for f in c.get("schedule_restarts", ())]


def learning_rate_schedule(c) -> optax.Schedule:
  """Warmup then decay over the run; train.schedule_restarts cuts the run into cycles at
  those fractions of its steps, each warming up and decaying on its own (a configs' data
  lead-in can so start its main phase at the peak learning rate)."""
  bounds = restart_steps(c)
  edges = [0, *bounds, max(c.total_steps, 1)]
  cycles = [_cycle(c, b - a) for a, b in zip(edges[:-1], edges[1:])]
  return optax.join_schedules(cycles, bounds) if bounds else cycles[0]


def learning_rate_table(c) -> np.ndarray:
  """float32 [max(total_steps, 1)]: the learning rate of each training step (micro-step
  s trains at the schedule's value for update s // grad_accum). The train step takes its
  rate as an argument from this table, so its compiled program holds no schedule: runs
  that differ only in rate, warmup, decay or length (stage 1 and stage 2, the science
  table's runs) share one program, and JAX's persistent cache serves it to the second."""
  steps = jnp.arange(max(c.total_steps, 1)) // c.grad_accum
  return np.asarray(jax.jit(jax.vmap(learning_rate_schedule(c)))(steps), np.float32)


def path_name(path) -> str:
  """'dit.blocks.attn1.to_q.kernel' for a pytree key path."""
  return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def trainable_labels(params, pattern: str):
  """'train' where the parameter path matches `pattern` (re.fullmatch), else 'freeze'."""
  regex = re.compile(pattern)
  labels = jax.tree_util.tree_map_with_path(
      lambda p, _: "train" if regex.fullmatch(path_name(p)) else "freeze", params)
  if "train" not in jax.tree.leaves(labels):
    raise ValueError(f"train.trainable={pattern!r} matches no parameter; paths look like "
                     f"{path_name(jax.tree_util.tree_flatten_with_path(params)[0][0][0])!r}")
  return labels


def make_optimizer(c, params) -> optax.GradientTransformation:
  """AdamW at learning rate 1 (clipped, accumulated, restricted to c.trainable): the train
  step scales its updates by the step's rate (`learning_rate_table`), which is AdamW at
  that rate, bit for bit (weight decay included: optax.adamw scales both by -rate)."""
  adamw = optax.adamw(1.0, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay)
  chain = optax.chain(optax.clip_by_global_norm(c.grad_clip), adamw) if c.grad_clip > 0 else adamw
  optimizer = optax.multi_transform({"train": chain, "freeze": optax.set_to_zero()},
                                    trainable_labels(params, c.trainable))
  return optax.MultiSteps(optimizer, c.grad_accum) if c.grad_accum > 1 else optimizer
