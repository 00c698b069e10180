"""The grain pipelines of the two training stages (DESIGN.md §3, SAMA_METHOD.md §1.6).

Each pipeline yields per-process batches, dicts of NumPy arrays:

  "target":      uint8 [B, T, H, W, 3]   (T = 1 for image pairs)
  "source":      uint8 [B, Ts, H, W, 3]  (absent for plain text-to-video)
  "anchor":      uint8 [B, H, W, 3]      the semantic anchor frame of the target
  "instruction": object [B] of str
  "task":        int32 [B], an index into train.config.TASK_NAMES

Sources of format "precomputed" (image_edit / video_edit encodings written by
`python -m sama_jax.precompute`) yield model-ready batches instead: "latents", "text",
"source"?, "semantic"?, "task", "instruction", "id" (data/precomputed.py); the trainer
feeds them to the step without encoding.

A batch must be homogeneous (source present or not, Ts, T, size), so the mix happens
between batches: every (kind, pretext task[, bucket]) is a sub-pipeline that batches its
own examples, and `grain.IterDataset.mix` interleaves the sub-pipelines' batches in
proportion to their weights (with a lead-in, `data.phases.PhasedMix` does, phase by
phase). The task mix is therefore per batch; in expectation it equals the paper's
per-example mix (each batch is B examples of one task instead of B independent draws).
Both mixes are fixed deterministic schedules rather than random draws, so every process
(same config) yields the same task and shape at every step — what assembling one global
batch from per-process batches needs.

A sub-pipeline: source -> this process's shard (records i ≡ process_index mod
process_count, disjoint) -> shuffle (seeded, reshuffled each epoch) -> repeat ->
load_example (decode, fit frames) -> training_example (pretext, anchor; a random map
seeded by seed and element index) -> account_skips (drop, log, count bad records) ->
batch. With num_workers > 0 the whole mixed pipeline runs in worker processes
(grain mp_prefetch), each on a strided slice of every sub-pipeline. `iter(ds).get_state()`
/ `set_state()` resume the exact data order (for the same config and num_workers).
"""

from __future__ import annotations

import functools
import logging
import zlib

import grain
import numpy as np

from sama_jax.data.bucketing import partition_by_bucket
from sama_jax.data.config import STAGE_KINDS, world_options
from sama_jax.data.examples import FrameSpec, TaskSpec, load_example, stack_batch, training_example
from sama_jax.data.phases import PhasedMix, phase_steps
from sama_jax.data.precomputed import PrecomputedSource
from sama_jax.data.skips import account_skips
from sama_jax.data.sources import ManifestSource, SubsetSource, VideoFolderSource, source_from_config

logger = logging.getLogger(__name__)

SOURCE_BLOCKS = {"image_edit": "image_edits", "clip": "clips", "video_edit": "video_edits"}


def _derived_seed(seed: int, *names) -> int:
  """A 32-bit seed for one purpose of one sub-pipeline (crc32, not hash(): Python salts
  str hashes per process, and every process and worker must agree)."""
  words = [int(seed)] + [zlib.crc32(str(n).encode()) for n in names]
  return int(np.random.SeedSequence(words).generate_state(1)[0])


def _process_placement(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top  # only for the multi-host defaults
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index}, process_count={process_count}; expected "
                     "0 <= process_index < process_count")
  return int(process_index), int(process_count)


def _task_plan(config, shares, kinds) -> list[tuple[str, str, float]]:
  """[(kind, task, batch share)] for one set of batch shares (data.stage1, a lead-in, ...)
  over `kinds`; the clip share is split by the pretext mix."""
  plan = []
  for kind in kinds:
    share = float(shares[kind])
    if share <= 0:
      continue
    if kind != "clip":
      plan.append((kind, "", share))
      continue
    mix = {task: float(w) for task, w in config.pretext.mix.items() if w > 0}
    plan.extend(("clip", task, share * w / sum(mix.values())) for task, w in mix.items())
  return plan


def configured_source(config, kind: str):
  """The source of `kind` that data config `config` names (None for format "none"); world
  sources draw from the config's world (`data.world`, via `world_options`)."""
  return source_from_config(config[SOURCE_BLOCKS[kind]], kind, tuple(world_options(config).items()))


def _size_groups(config, kind: str, process_count: int) -> list[tuple[tuple, object]]:
  """[((w, h), source)]: one group at config.resolution, or one per bucket for
  file-based sources when config.buckets is set (see bucketing.py)."""
  block = SOURCE_BLOCKS[kind]
  source = configured_source(config, kind)
  if source is None:
    raise ValueError(f"the stage mixes {kind} batches but data.{block}.format='none'; give it a "
                     f"source or set that kind's share to 0")
  if config.buckets and isinstance(source, (ManifestSource, VideoFolderSource)):
    parts = partition_by_bucket(source, kind, config.buckets)
    groups = [(bucket, SubsetSource(source, tuple(idx))) for bucket, idx in parts.items()]
  else:
    groups = [(tuple(config.resolution), source)]
  kept = [(size, s) for size, s in groups if len(s) >= process_count]
  for size, s in groups:
    if len(s) < process_count:
      logger.warning("data.%s: the %dx%d bucket has %d records, fewer than the %d processes; left out",
                     block, size[0], size[1], len(s), process_count)
  if not kept:
    raise ValueError(f"data.{block} has {len(source)} records; every process needs at least one "
                     f"({process_count} processes)")
  return kept


def _sub_pipeline(config, name: str, source, kind: str, task: str, size, batch_size: int,
                  process_index: int, process_count: int) -> grain.IterDataset:
  frames = FrameSpec(num_frames=int(config.num_frames), size=tuple(size), short_clips=config.short_clips,
                     trim_leading=tuple(tuple(t) for t in config.trim_leading), fps=config.fps)
  pretext = config.pretext
  spec = TaskSpec(kind=kind, task=task, anchor=config.anchor, none_mode=pretext.none_mode,
                  prefix=config.video_edit_prefix if kind == "video_edit" else config.image_edit_prefix,
                  pretext_options=(("mask_ratio", pretext.mask_ratio), ("speed", pretext.speed),
                                   ("speed_mode", pretext.speed_mode), ("splits", tuple(pretext.splits)),
                                   ("keep_last_frame", pretext.keep_last_frame)))
  # One global order (and one random draw per global position) shared by every process;
  # each process then reads its slice of every global batch. So the global batch at each
  # step is the same whatever the number of processes.
  ds = grain.MapDataset.source(source)
  ds = ds.shuffle(seed=_derived_seed(config.seed, name, "shuffle")).repeat(config.num_epochs)
  if not isinstance(source, PrecomputedSource):  # encoded records are model-ready examples
    ds = ds.map(functools.partial(load_example, kind=kind, spec=frames))
    ds = ds.random_map(functools.partial(training_example, spec=spec), seed=_derived_seed(config.seed, name, "draws"))
  global_batch = batch_size * process_count
  ds = grain.MapDataset.range(len(ds) // global_batch * batch_size).map(functools.partial(
      _global_element, dataset=ds, global_batch=global_batch, local_batch=batch_size,
      offset=process_index * batch_size))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=config.read_threads,
                                            prefetch_buffer_size=config.read_buffer_size))
  it = account_skips(it, name, config.max_skip_fraction, config.skip_check_after)
  return it.batch(batch_size, drop_remainder=True, batch_fn=stack_batch)


def _global_element(i: int, *, dataset, global_batch: int, local_batch: int, offset: int):
  """Element i of this process: position i % local_batch of its slice of global batch
  i // local_batch."""
  return dataset[(i // local_batch) * global_batch + offset + i % local_batch]


def _per_process(global_size: int, process_count: int, name: str) -> int:
  if global_size % process_count:
    raise ValueError(f"data.{name}={global_size} does not split evenly over {process_count} processes")
  return global_size // process_count


def _allow_worker_processes() -> None:
  # grain (<= 0.2.18) reads an absl flag in mp_prefetch and fails when the program never
  # parsed flags (google/grain#1355); marking them parsed keeps every default.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def stage_pipeline(config, stage: str, process_index=None, process_count=None,
                   total_steps: int | None = None) -> grain.IterDataset:
  """The mixed, batched pipeline of `stage` ("stage1" or "stage2"); see the module doc.
  process_index / process_count default to jax.process_index() / jax.process_count().
  total_steps: the run's length, which a lead-in (data.<stage>_lead_in) needs."""
  if stage not in STAGE_KINDS:
    raise ValueError(f"stage={stage!r}; expected one of {tuple(STAGE_KINDS)}")
  process_index, process_count = _process_placement(process_index, process_count)
  batch_sizes = {"image_edit": _per_process(config.image_batch_size, process_count, "image_batch_size"),
                 "video": _per_process(config.video_batch_size, process_count, "video_batch_size")}
  lead = config[f"{stage}_lead_in"]
  lead_batches = 0
  if lead.share > 0:
    if total_steps is None or total_steps < 1:
      raise ValueError(f"data.{stage}_lead_in.share={lead.share} needs the run's total steps; got {total_steps}")
    lead_batches = phase_steps(lead.share, total_steps)
  phases = [_task_plan(config, config[stage], STAGE_KINDS[stage])]
  if lead_batches:
    phases.insert(0, _task_plan(config, lead, STAGE_KINDS[stage]))
  groups, parts, weights = {}, {}, [{} for _ in phases]
  for phase, plan in zip(weights, phases):
    for kind, task, share in plan:
      if kind not in groups:
        groups[kind] = _size_groups(config, kind, process_count)
      total = sum(len(s) for _, s in groups[kind])
      for size, source in groups[kind]:
        name = (f"{stage}/{kind}" + (f"/{task}" if task else "") +
                (f"@{size[0]}x{size[1]}" if config.buckets else ""))
        if name not in parts:
          batch = batch_sizes["image_edit" if kind == "image_edit" else "video"]
          parts[name] = _sub_pipeline(config, name, source, kind, task, size, batch, process_index, process_count)
        phase[name] = share * len(source) / total
  if lead_batches:
    ds = PhasedMix(parts, weights, (lead_batches,))
  else:
    ds = parts[next(iter(parts))] if len(parts) == 1 else grain.IterDataset.mix(parts, weights[0])
  if config.num_workers > 0:
    _allow_worker_processes()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.num_workers,
                                                     per_worker_buffer_size=config.worker_buffer_size))
  return ds


def stage1_pipeline(config, process_index=None, process_count=None, total_steps=None) -> grain.IterDataset:
  """Stage 1 (factorized pre-training): Semantic-Anchoring image pairs and
  Motion-Alignment pretext clips, batch shares config.stage1 (after the lead-in
  config.stage1_lead_in, if any), pretext mix config.pretext.mix."""
  return stage_pipeline(config, "stage1", process_index, process_count, total_steps)


def stage2_pipeline(config, process_index=None, process_count=None, total_steps=None) -> grain.IterDataset:
  """Stage 2 (SFT): paired video edits, optionally mixed with image pairs and pretext
  clips by the batch shares config.stage2 (after the lead-in config.stage2_lead_in)."""
  return stage_pipeline(config, "stage2", process_index, process_count, total_steps)
