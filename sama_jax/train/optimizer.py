"""AdamW with warmup and decay, clipping, accumulation and a trainable-parameter regex."""

from __future__ import annotations

import re

import jax
import optax


def learning_rate_schedule(c) -> optax.Schedule:
  decay_steps = max(1, c.total_steps - c.warmup_steps)
  after = {
      "constant": optax.constant_schedule(c.learning_rate),
      "cosine": optax.cosine_decay_schedule(c.learning_rate, decay_steps),
      "linear": optax.linear_schedule(c.learning_rate, 0.0, decay_steps),
  }[c.schedule]
  if not c.warmup_steps:
    return after
  warmup = optax.linear_schedule(0.0, c.learning_rate, c.warmup_steps)
  return optax.join_schedules([warmup, after], [c.warmup_steps])


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
  adamw = optax.adamw(learning_rate_schedule(c), b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay)
  chain = optax.chain(optax.clip_by_global_norm(c.grad_clip), adamw) if c.grad_clip > 0 else adamw
  optimizer = optax.multi_transform({"train": chain, "freeze": optax.set_to_zero()},
                                    trainable_labels(params, c.trainable))
  return optax.MultiSteps(optimizer, c.grad_accum) if c.grad_accum > 1 else optimizer
