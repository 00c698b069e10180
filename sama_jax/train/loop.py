"""The training loop, top to bottom: mesh, encoders, data, state (fresh, resumed or
initialised from an earlier stage), the jitted step, metrics and checkpoints.

    python -m sama_jax.train --config configs/stage1_tiny.py --workdir runs/stage1
    python -m sama_jax.train --config configs/stage2_tiny.py --workdir runs/stage2 \
        --init_from runs/stage1

A run resumes from the newest checkpoint in WORKDIR (state, config and data order);
`--init_from` starts a stage from another run's parameters (or their EMA) with a fresh
optimizer. SIGTERM (preemption) saves a checkpoint before exiting. With
`--config.lora.rank=8` the parameters (fresh, or from `--init_from`) are frozen and only
LoRA adapters are trained (sama_jax/lora.py).
"""

from __future__ import annotations

import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from tqdm import tqdm

from sama_jax.data.config import check_same_world
from sama_jax.encoders import build_encoders, host_arrays, make_encode_fn
from sama_jax.models.flops import dit_flops
from sama_jax.models.text import tokenize
from sama_jax.parallel.mesh import make_mesh
from sama_jax.parallel.sharding import global_batch
from sama_jax.train import checkpoint as ckpt
from sama_jax.train.config import recipe_differences, validate_train_config
from sama_jax.train.metrics import MetricWriter, first_non_finite, peak_tflops, summarise
from sama_jax.train.optimizer import learning_rate_table
from sama_jax.train.state import create_train_state
from sama_jax.train.step import jit_train_step

log = logging.getLogger(__name__)


def initialize_distributed(run) -> None:
  """jax.distributed.initialize with the configured coordinator, or cluster detection."""
  if run.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", run.cpu_collectives)
  jax.distributed.initialize(coordinator_address=run.coordinator_address or None,
                             num_processes=run.num_processes or None,
                             process_id=run.process_id if run.process_id >= 0 else None)


def check_compatible(config, encoders) -> None:
  """The DiT's input widths must be the encoders' output widths, and in channel mode every
  source as long as its target."""
  m = config.model
  d = config.data
  if (m.source_mode == "channel" and d.pretext.speed_mode == "subsample" and d.pretext.mix.speed > 0
      and d[config.stage].clip > 0):
    raise ValueError("model.source_mode='channel' needs each source as long as its target, but "
                     "data.pretext.speed_mode='subsample' shortens the speed task's source; use "
                     "data.pretext.speed_mode='time_warp' or set data.pretext.mix.speed=0")
  pairs = [("model.in_channels", m.in_channels, "latent channels", encoders.latent_channels),
           ("model.text_dim", m.text_dim, "text encoder width", encoders.text_dim)]
  if encoders.semantic_dim is not None:
    pairs.append(("model.semantic_dim", m.semantic_dim, "SigLIP width", encoders.semantic_dim))
  for field, value, what, actual in pairs:
    if value != actual:
      raise ValueError(f"{field}={value} but the {what} is {actual}; set them equal in the config")


class Preemption:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    log.warning("SIGTERM: saving a checkpoint and stopping after this step")
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def drop_text(raw: dict, rng: np.random.Generator, p: float, negative: str, process: int = 0,
              processes: int = 1, negative_text: np.ndarray | None = None) -> dict:
  """Replaces each instruction by `negative` with probability p (for guidance). The draws
  are made for the global batch and sliced, so they do not depend on the process count.
  A precomputed batch (with "text" embeddings [B, L, D]) gets `negative_text` [L, D], the
  negative prompt's embeddings, in the dropped rows."""
  if p <= 0:
    return raw
  b = len(raw["instruction"])
  keep = (rng.random(b * processes) >= p)[process * b:(process + 1) * b]
  out = {**raw, "instruction": np.where(keep, raw["instruction"], np.asarray(negative, object))}
  if "text" in raw:
    if negative_text is None or np.shape(negative_text) != np.shape(raw["text"])[1:]:
      raise ValueError(f"precomputed text {np.shape(raw['text'])} needs the negative prompt's embeddings "
                       f"[L, D] to drop; got {None if negative_text is None else np.shape(negative_text)}")
    out["text"] = np.where(keep[:, None, None], raw["text"], negative_text[None])
  return out


def drop_source(raw: dict, rng: np.random.Generator, p: float) -> dict:
  """Drops the source of the whole batch with probability p, so the model also learns the
  source-free branch that two-scale guidance (edit.guidance_source) needs. One draw per
  step from a generator every process seeds alike, so all processes agree."""
  if p <= 0 or "source" not in raw or rng.random() >= p:
    return raw
  return {k: v for k, v in raw.items() if k != "source"}


def model_batch(raw: dict, encoders, encode, mesh) -> dict:
  """A host batch -> the global model batch: raw media are tokenized and encoded on the
  device; precomputed encodings (a "latents" key) go straight to the step."""
  if "latents" not in raw:
    return encode(global_batch(host_arrays(encoders, raw), mesh))
  if raw["text"].shape[-1] != encoders.text_dim:
    raise ValueError(f"precomputed text embeddings are {raw['text'].shape[-1]}-wide; this run's text encoder "
                     f"gives {encoders.text_dim}: precompute with the run's encoders config")
  keys = ("latents", "text", "source", "semantic", "task")
  return global_batch({k: raw[k] for k in keys if k in raw}, mesh)


def negative_embedding(encoders, prompt: str) -> np.ndarray:
  """The text encoder's output [L, D] for `prompt` (to drop precomputed instructions)."""
  ids, mask = tokenize(encoders.tokenizer, [prompt], encoders.text_len)
  return np.asarray(encoders.text_encoder(jnp.asarray(ids), jnp.asarray(mask))[0], np.float32)


def step_cost(config, batch) -> tuple[float, int]:
  """(FLOPs of one training step, forward + backward; sequence tokens in the batch)."""
  b, f, h, w, _ = batch["latents"].shape
  source, semantic = batch.get("source"), batch.get("semantic")
  frames_s = None if source is None or config.model.source_mode == "channel" else source.shape[1]
  num_semantic = 0 if semantic is None else semantic.shape[1]
  pt, ph, pw = config.model.patch_size
  tokens = b * (((frames_s or 0) + f) // pt * (h // ph) * (w // pw) + num_semantic)
  flops = dit_flops(config.model, batch=b, frames=f, height=h, width=w, text_len=batch["text"].shape[1],
                    source_frames=frames_s, num_semantic=num_semantic).train
  return flops, tokens


def finished(workdir: str, steps: int) -> bool:
  """Whether WORKDIR holds the checkpoint of step `steps`."""
  return os.path.isdir(os.path.join(workdir, "checkpoints", str(steps)))


def train_to_end(config, workdir: str, init_from: str | None = None) -> str:
  """Trains WORKDIR to config.train.total_steps (a finished run is left as it is) and
  returns WORKDIR. A run that stops early (SIGTERM: `train` saves a checkpoint and
  returns) raises SystemExit, so a caller that goes on to score or fine-tune it (the
  demo, the science sweep) stops instead of using a half-trained model; rerunning the
  same command resumes it. A run already in WORKDIR (finished or not) must have been
  written with the same recipe (`recipe_differences`), or ValueError: a rerun after the
  recipe changed would otherwise reuse, or resume into, the old experiment."""
  steps = config.train.total_steps
  checkpoints = os.path.join(workdir, "checkpoints")
  if os.path.isdir(checkpoints) and any(name.isdigit() for name in os.listdir(checkpoints)):
    changed = recipe_differences(ckpt.read_config(checkpoints), config)
    if changed:
      shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
      raise ValueError(f"{workdir} holds a run of another recipe ({shown}); use a new workdir, or remove "
                       f"this one to retrain it")
  if not finished(workdir, steps):
    train(config, workdir, init_from=init_from)
    if not finished(workdir, steps):
      raise SystemExit(f"{workdir} stopped before step {steps} (preempted?); rerun the same command to resume")
  return workdir


def train(config, workdir: str, init_from: str | None = None, make_data=None) -> dict:
  """Runs config.config.train.total_steps steps (resuming if WORKDIR has checkpoints). Returns the
  last logged scalars. `make_data(config, process_index, process_count)` builds the data
  iterator with get_state/set_state (default: config.stage's grain pipeline)."""
  run = config.run
  validate_train_config(config.train)
  if run.distributed:
    initialize_distributed(run)
  process, processes = jax.process_index(), jax.process_count()
  mesh = make_mesh(config.mesh)
  rules = config.mesh.rules
  encoders = build_encoders(config.encoders)
  check_compatible(config, encoders)
  encode = make_encode_fn(encoders)
  negative_text = negative_embedding(encoders, config.train.negative_prompt)
  if make_data is None:
    from sama_jax.data.pipeline import stage_pipeline
    make_data = lambda c, i, n: iter(stage_pipeline(c.data, c.stage, i, n, total_steps=c.train.total_steps))
  data = make_data(config, process, processes)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    lora = config.get("lora")
    graphdef, optimizer, state, shardings = create_train_state(config.model, config.train, mesh, rules, lora=lora)
    manager = ckpt.checkpoint_manager(os.path.join(workdir, "checkpoints"), run.keep_checkpoints,
                                      run.keep_every or None, async_save=run.async_checkpoints)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    if manager.latest_step() is not None:
      state, saved, data_state = ckpt.restore(manager, like, shardings)
      if "data" in saved and "data" in config:
        check_same_world(saved["data"], config.data)
      if data_state:
        data.set_state(data_state)
      log.info("resumed from step %d", int(state["step"]))
    elif init_from:
      model = "base" if "base" in like else "params"  # with LoRA the earlier run's model is the base
      params = ckpt.restore_params(os.path.join(init_from, "checkpoints"), like[model], shardings[model],
                                   use_ema=config.train.init_from_ema)
      graphdef, optimizer, state, shardings = create_train_state(config.model, config.train, mesh, rules,
                                                                 params=params, lora=lora)
      log.info("initialised parameters from %s", init_from)

    step_fn = jit_train_step(graphdef, optimizer, config.train, shardings, mesh, lora)
    rng = jax.random.key(config.train.seed)
    rates = learning_rate_table(config.train)
    writer = MetricWriter(workdir, enabled=process == 0)
    peak = peak_tflops(jax.devices()[0].device_kind, run.peak_tflops)
    preemption = Preemption()
    start = int(state["step"])
    bar = tqdm(total=config.train.total_steps, initial=start, disable=process != 0 or not run.progress_bar,
               desc="train", unit="step")
    scalars, timer, steps_timed = {}, time.perf_counter(), 0
    try:
      for step in range(start, config.train.total_steps):
        raw = drop_text(next(data), np.random.default_rng([config.train.seed, step]), config.train.text_dropout,
                        config.train.negative_prompt, process, processes, negative_text)
        raw = drop_source(raw, np.random.default_rng([config.train.seed, step, 1]), config.train.source_dropout)
        batch = model_batch(raw, encoders, encode, mesh)
        state, metrics = step_fn(state, batch, rng, rates[step])
        steps_timed += 1
        bar.update(1)
        done = step + 1
        if done % run.log_every == 0 or done == config.train.total_steps:
          metrics = jax.device_get(metrics)
          seconds = (time.perf_counter() - timer) / steps_timed
          scalars = summarise(metrics, config.train.task_names)
          bad = first_non_finite(scalars)
          if bad:
            raise FloatingPointError(f"step {done}: {bad} = {scalars[bad]}; stopping (last checkpoint: "
                                     f"{manager.latest_step()})")
          flops, tokens = step_cost(config, batch)
          scalars.update(step_time_s=seconds, tokens_per_s=tokens / seconds,
                         tflops_per_device=flops / seconds / 1e12 / jax.device_count())
          if peak:
            scalars["mfu"] = scalars["tflops_per_device"] / peak
          writer.write(done, scalars)
          bar.set_postfix(loss=f"{scalars['loss']:.4f}")
          timer, steps_timed = time.perf_counter(), 0
        if done % run.checkpoint_every == 0 or done == config.train.total_steps or preemption.requested:
          ckpt.save(manager, done, state, config.to_dict(), data.get_state())
        if preemption.requested:
          break
    finally:
      manager.wait_until_finished()
      manager.close()
      preemption.restore()
      writer.close()
      bar.close()
  return scalars
