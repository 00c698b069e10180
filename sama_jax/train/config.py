"""Training hyper-parameters with the paper's defaults (SAMA_METHOD.md decision 5)."""

from __future__ import annotations

import json

import ml_collections

from sama_jax.diffusion.flow import X0_SIGMA_MIN

# Example kinds the data pipeline tags each example with (per-task loss metrics).
TASK_NAMES = ("t2v", "cube", "speed", "tube", "image_edit", "video_edit")
SCHEDULES = ("constant", "cosine", "linear")


def run_config(**overrides) -> ml_collections.ConfigDict:
  """How a run executes: logging, checkpoints, multi-host."""
  c = ml_collections.ConfigDict()
  c.log_every = 10
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.keep_every = 0  # also keep every K-th step's checkpoint (0: none)
  c.async_checkpoints = True
  c.peak_tflops = 0.0  # per-device peak for MFU; 0 looks the device up
  c.progress_bar = True
  c.distributed = False  # call jax.distributed.initialize() (multi-host launchers set this)
  c.coordinator_address = ""  # host:port of process 0; "" lets JAX detect the cluster (TPU, SLURM)
  c.num_processes = 0  # 0: detected
  c.process_id = -1  # -1: detected
  c.cpu_collectives = ""  # "gloo" for multi-process CPU runs (tests)
  c.update(overrides)
  return c


def set_total_steps(config: ml_collections.ConfigDict, steps: int) -> None:
  """Sizes a stage config's run to `steps` in place: warmup a tenth (at most 100 steps),
  a log line every quarter (at most 50 steps apart), a checkpoint at the half and the end."""
  if steps < 1:
    raise ValueError(f"total steps must be positive, got {steps}")
  config.train.total_steps = steps
  config.train.warmup_steps = min(100, steps // 10)
  config.run.log_every = max(1, min(50, steps // 4))
  config.run.checkpoint_every = max(steps // 2, 1)


def train_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 10_000
  # Optimizer: AdamW as the released trainer (torch defaults), lr and decay from the paper.
  c.learning_rate = 2e-5
  c.schedule = "constant"  # after warmup: "constant" | "cosine" | "linear" decay to 0
  c.warmup_steps = 0
  # Fractions of total_steps at which warmup + decay start again (SGDR-style cycles), e.g.
  # (0.1,) with data.stage1_lead_in.share = 0.1: the phase after a lead-in starts at the peak.
  c.schedule_restarts = ()
  c.weight_decay = 0.01
  c.b1, c.b2, c.eps = 0.9, 0.999, 1e-8
  c.grad_clip = 1.0  # global-norm clipping; 0 turns it off (the released code shows none)
  c.grad_accum = 1  # micro-batches per optimizer update
  c.ema_decay = 0.9998  # every step; 0 turns EMA off
  c.trainable = ".*"  # regex over parameter paths like "dit.blocks.attn1.to_q.kernel"
  c.init_from_ema = True  # --init_from takes the earlier stage's EMA parameters
  # Objective (SAMA_METHOD.md §5.4–5.5).
  c.timestep_shift = 5.0
  c.per_sample_timesteps = False  # the released trainer draws one level per batch
  c.loss_weighting = True  # DiffSynth's Gaussian weight over timesteps
  c.semantic_weight = 0.1  # λ
  c.semantic_target = "velocity"  # or "x0_l1"
  # x0 models (model.prediction="x0") are trained on the velocity loss, (x̂0 − x0)² / σ²,
  # with σ held at this floor below it (JiT: 0.05), which bounds the weight at 1/floor².
  c.x0_sigma_floor = X0_SIGMA_MIN
  # Extra flow-loss weight on the latents the edit changes (|target − source| > 0.05):
  # 0 is the paper's plain loss; the world recipe raises it (train/step.py edit_weights).
  c.edit_weight = 0.0
  # Divide each example's edit term by the share of latents its edit changes (step.py).
  c.edit_area_norm = False
  c.task_names = TASK_NAMES
  # Flow-loss weight per task name (t2v, cube, speed, tube, image_edit, video_edit); a task
  # not named weighs 1, the paper's plain mix. E.g. {"cube": 0.1, "speed": 0.1, "tube": 0.1}
  # turns the pretext tasks' share of the updates down; at 0.1 it did not keep them from
  # stopping the world's image edits (docs/results.md finding 18).
  c.task_weights = ml_collections.ConfigDict()
  # Classifier-free guidance needs the model to know the unconditional branch: replace the
  # instruction by the negative prompt with this probability (the paper does not say).
  c.text_dropout = 0.1
  c.negative_prompt = "[Video edit]"
  # Train the source-free branch that two-scale guidance (edit.guidance_source) uses: drop
  # the whole batch's source with this probability (0: never, as the paper's runs).
  c.source_dropout = 0.0
  c.update(overrides)
  validate_train_config(c)
  return c


def validate_train_config(c: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the first bad field of a train config (also run by the
  trainer, after command-line overrides)."""
  if c.schedule not in SCHEDULES:
    raise ValueError(f"train.schedule={c.schedule!r}; expected one of {SCHEDULES}")
  restarts = tuple(c.get("schedule_restarts", ()))
  if any(not 0.0 < f < 1.0 for f in restarts) or list(restarts) != sorted(set(restarts)):
    raise ValueError(f"train.schedule_restarts={restarts}; expected increasing fractions of the run in (0, 1)")
  if c.grad_accum < 1:
    raise ValueError(f"train.grad_accum={c.grad_accum} must be >= 1")
  if not 0.0 <= c.ema_decay < 1.0:
    raise ValueError(f"train.ema_decay={c.ema_decay} must be in [0, 1)")
  if not c.edit_weight >= 0.0:
    raise ValueError(f"train.edit_weight={c.edit_weight} must be >= 0")
  if not c.x0_sigma_floor > 0.0:
    raise ValueError(f"train.x0_sigma_floor={c.x0_sigma_floor} must be > 0")
  task_weight_vector(c)  # raises on unknown task names and negative weights


def task_weight_vector(c: ml_collections.ConfigDict) -> tuple[float, ...]:
  """train.task_weights as one weight per entry of train.task_names (1 where not named)."""
  weights = dict(c.get("task_weights", None) or {})
  unknown = sorted(set(weights) - set(c.task_names))
  if unknown:
    raise ValueError(f"train.task_weights names {unknown}; the tasks are {tuple(c.task_names)}")
  if any(not w >= 0.0 for w in weights.values()):
    raise ValueError(f"train.task_weights={weights}: weights must be >= 0")
  return tuple(float(weights.get(name, 1.0)) for name in c.task_names)


# What a run's checkpoints are the result of: a finished or half-done run under these
# sections is not the same experiment when any of them differs. `run` and `mesh` (logging,
# checkpoint cadence, devices) and `edit` (sampling, applied after training) are left out,
# and so are where the world SigLIP's weights are read from (a workdir may move) and the
# knobs that compute the same function another way (rematerialisation, scanned or looped
# layers, the attention kernel, host read threads and buffers).
RECIPE_SECTIONS = ("stage", "model", "train", "lora", "data", "encoders")
RECIPE_IGNORED = ("encoders.world_siglip_init", "model.remat", "model.scan_layers", "model.attention",
                  "data.read_threads", "data.read_buffer_size", "data.worker_buffer_size")


def recipe_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """'key: saved -> now' for every recipe field (RECIPE_SECTIONS) where the config a
  checkpoint was written with (`saved`, as read back from it) and `config` differ."""
  from sama_jax.convert.trees import flatten  # here: config modules stay light to import
  now = json.loads(json.dumps(config.to_dict()))  # tuples read back as lists
  before, after = ({k: v for k, v in flatten({s: tree.get(s) for s in RECIPE_SECTIONS}).items()
                    if k not in RECIPE_IGNORED} for tree in (saved, now))
  return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(before.keys() | after.keys())
          if before.get(k) != after.get(k)]
