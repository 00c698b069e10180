"""Encode a dataset once, train from the encodings: the frozen encoders' work moves out
of the training step.

    python -m sama_jax.precompute --config configs/stage2_tiny.py --kind video_edit --out DIR \
        [--shard-size 256] [--limit N] [--batch-size B] [--dtype float32|bfloat16|float16]

reads the records of the config's source of that kind (data.image_edits / clips /
video_edits) in index order, prepares each exactly as the training pipeline does
(`examples.load_example` at data.resolution and data.num_frames, then
`examples.training_example` for the anchor frame, prompt prefix and task id) and writes

  DIR/<kind>-00000-of-0000K.array_record ...   shard k holds input records
                                               [k * shard_size, (k + 1) * shard_size)
  DIR/progress.json                            settings + finished shards (resume state)
  DIR/summary.json                             written / skipped per reason / shards, at the end

What a record holds:
- image_edit, video_edit: the encodings (`data/precomputed.py`: target and source
  latents, text embeddings, the anchor's semantic tokens, task, instruction), read back
  with `data.precomputed.precomputed_source(DIR)`. The anchor frame is drawn once per
  record (data.anchor "uniform": from a generator seeded by data.seed, the kind and the
  record index), not once per epoch as in the raw pipeline.
- clip: the decoded, resized clean frames {"target": uint8 [T, h, w, 3], "text",
  "id"}, i.e. the raw items `sources.ArrayRecordSource` already reads
  (data.clips.format = "array_record"). Clips are not encoded: the pretext corruption
  draws a new source per epoch from pixels, and the source's latents depend on it; what
  precompute saves for clips is video decoding and resizing.

Resuming: shards are written under a temporary name and renamed when complete, and
progress.json is rewritten (atomically) after each one. A rerun with the same settings
keeps the finished shards and redoes only the rest, so a crash loses at most the shard
being written; a rerun with other settings is refused. Records that cannot be used (the
`skips.Skipped` reasons: missing or corrupt files, too-short videos, ...) are skipped,
logged and counted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import math
import os
import sys
import time
import zlib

import jax
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sama_jax.config import load_config
from sama_jax.data.examples import FrameSpec, TaskSpec, load_example, stack_batch, training_example
from sama_jax.data.pipeline import SOURCE_BLOCKS, configured_source
from sama_jax.data.precomputed import FLOAT_DTYPES, to_record
from sama_jax.data.shard_writer import (PROGRESS, SUMMARY, load_progress, ordered_map, shard_name, write_json,
                                        write_shard)
from sama_jax.data.skips import SkipStats, Skipped
from sama_jax.data.sources import KINDS
from sama_jax.encoders import build_encoders, host_arrays, make_encode_fn


# ---------------------------------------------------------------------------------------
# What to read and how: the same specs the training pipeline builds (pipeline._sub_pipeline).


def kind_source(data, kind: str):
  """The configured source of `kind`, at the pipeline's world options."""
  source = configured_source(data, kind)
  if source is None:
    raise ValueError(f"data.{SOURCE_BLOCKS[kind]}.format='none'; there is no {kind} source to precompute")
  return source


def frame_spec(data) -> FrameSpec:
  if data.buckets:
    raise ValueError(f"data.buckets={tuple(data.buckets)}; precompute writes one resolution (data.resolution="
                     f"{tuple(data.resolution)}), so set data.buckets=() in the config it reads")
  return FrameSpec(num_frames=int(data.num_frames), size=tuple(data.resolution), short_clips=data.short_clips,
                   trim_leading=tuple(tuple(t) for t in data.trim_leading), fps=data.fps)


def task_spec(data, kind: str) -> TaskSpec:
  prefix = data.video_edit_prefix if kind == "video_edit" else data.image_edit_prefix
  return TaskSpec(kind=kind, anchor=data.anchor, prefix=prefix)


def example_rng(seed: int, kind: str, index: int) -> np.random.Generator:
  """The generator of record `index`'s draws (its anchor frame): a function of the
  record alone, so a resumed run and a fresh one agree (crc32: str hash() is salted)."""
  return np.random.default_rng([int(seed), zlib.crc32(kind.encode()), int(index)])


def prepare_example(source, index: int, kind: str, frames: FrameSpec, task: TaskSpec, seed: int):
  """Record `index` as the pipeline would batch it, plus its "id": for edits a
  training_example, for clips the loaded clean clip; or the Skipped saying why not."""
  example = load_example(source[index], kind, frames)
  if isinstance(example, Skipped) or kind == "clip":
    return example
  return {**training_example(example, example_rng(seed, kind, index), task), "id": example["id"]}


# ---------------------------------------------------------------------------------------
# Examples -> records.


def _real_tokens(mask: np.ndarray) -> int:
  ones = np.flatnonzero(mask)
  return int(ones[-1]) + 1 if ones.size else 0


def make_record_fn(encoders, batch_size: int, dtype: str):
  """[prepared edit example] (at most batch_size) -> [record dict]. Short batches are
  padded with their last example, so the jitted encoder compiles for one shape only."""
  encode = make_encode_fn(encoders)

  def records(examples: list) -> list:
    padded = examples + examples[-1:] * (batch_size - len(examples))
    arrays = host_arrays(encoders, stack_batch([{k: v for k, v in e.items() if k != "id"} for e in padded]))
    encoded = jax.device_get(encode(arrays))
    return [to_record({k: v[i] for k, v in encoded.items()}, text_tokens=_real_tokens(arrays["attention_mask"][i]),
                      instruction=e["instruction"], example_id=e["id"], dtype=dtype)
            for i, e in enumerate(examples)]

  return records


# ---------------------------------------------------------------------------------------
# The run: settings, resume, shards, summary.


def run_settings(config, kind: str, num_records: int, shard_size: int, dtype: str) -> dict:
  """Everything the records depend on; a resumed run must match it exactly."""
  data = config.data
  settings = {"kind": kind, "source": data[SOURCE_BLOCKS[kind]].to_dict(), "num_records": num_records,
              "shard_size": shard_size, "resolution": data.resolution, "num_frames": data.num_frames,
              "fps": data.fps, "short_clips": data.short_clips, "trim_leading": data.trim_leading}
  if kind != "clip":
    settings.update(anchor=data.anchor, seed=data.seed, prefix=task_spec(data, kind).prefix,
                    encoders=config.encoders.to_dict(), float_dtype=dtype)
  return json.loads(json.dumps(settings))  # tuples -> lists, as they come back from the file


def _inputs(shard: int, shard_size: int, num_records: int) -> range:
  """The input records of shard `shard`: fixed by position, so a rerun rebuilds the same shard."""
  return range(shard * shard_size, min((shard + 1) * shard_size, num_records))


def precompute(config, kind: str, out: str, *, shard_size: int = 256, limit: int | None = None,
               batch_size: int | None = None, dtype: str = "float32", encoders=None,
               progress: bool = True) -> dict:
  """Writes (or finishes) the shards of `kind` to `out`; returns the summary (also saved
  as out/summary.json). `encoders`: already built ones (default: build config.encoders);
  batch_size defaults to data.image_batch_size (images) or data.video_batch_size."""
  if kind not in KINDS:
    raise ValueError(f"kind {kind!r}; expected one of {KINDS}")
  if dtype not in FLOAT_DTYPES:
    raise ValueError(f"dtype {dtype!r}; expected one of {FLOAT_DTYPES}")
  data = config.data
  if batch_size is None:
    batch_size = data.image_batch_size if kind == "image_edit" else data.video_batch_size
  for name, value in (("shard_size", shard_size), ("batch_size", batch_size), ("limit", limit)):
    if value is not None and (not isinstance(value, int) or value < 1):
      raise ValueError(f"{name}={value!r}; expected a positive integer")
  frames, task = frame_spec(data), task_spec(data, kind)
  source = kind_source(data, kind)
  num_records = len(source) if limit is None else min(limit, len(source))
  if num_records == 0:
    raise ValueError(f"the {kind} source data.{SOURCE_BLOCKS[kind]} has no records")
  settings = run_settings(config, kind, num_records, shard_size, dtype)
  os.makedirs(out, exist_ok=True)
  state = load_progress(out, settings)
  num_shards = math.ceil(num_records / shard_size)
  names = [shard_name(kind, k, num_shards) for k in range(num_shards)]
  finished = {n for n in state["shards"] if os.path.isfile(os.path.join(out, n))}
  state["shards"] = {n: v for n, v in state["shards"].items() if n in finished}

  pending = [k for k, name in enumerate(names) if name not in finished]
  if kind == "clip":
    make_records, batch_size = list, 1  # the loaded clip is the record
  elif pending:  # (a finished run only rewrites its summary: no encoders to build)
    make_records = make_record_fn(encoders or build_encoders(config.encoders), batch_size, dtype)
  done = num_records - sum(len(_inputs(k, shard_size, num_records)) for k in pending)
  bar = tqdm(total=num_records, initial=done, disable=not progress, desc=f"precompute {kind}", unit="record")
  start = time.perf_counter()
  # Skip warnings go above the bar rather than through it.
  with concurrent.futures.ThreadPoolExecutor(max_workers=data.read_threads) as pool, logging_redirect_tqdm():
    for k in pending:
      examples = ordered_map(pool, lambda i: prepare_example(source, i, kind, frames, task, data.seed),
                             _inputs(k, shard_size, num_records), ahead=max(batch_size, data.read_buffer_size))
      written, stats = write_shard(os.path.join(out, names[k]), examples, make_records, batch_size, bar)
      state["shards"][names[k]] = {"written": written, **stats.to_state()}
      write_json(os.path.join(out, PROGRESS), state)
  bar.close()
  return _summarise(out, kind, names, state, settings, time.perf_counter() - start)


def _summarise(out: str, kind: str, names: list, state: dict, settings: dict, seconds: float) -> dict:
  total = SkipStats()
  for name in names:
    total = total.add(SkipStats.from_state(state["shards"][name]))
  written = sum(state["shards"][n]["written"] for n in names)
  summary = {"kind": kind, "records": total.seen, "written": written,
             "skipped": {r: n for r, n in total.skipped.items() if n},
             "skipped_examples": {r: p for r, p in total.examples.items() if p},
             "shards": names, "seconds_this_run": round(seconds, 3), "settings": settings}
  write_json(os.path.join(out, SUMMARY), summary)
  print(f"precompute {kind}: wrote {written} of {total.seen} records to {len(names)} shards in {out}; "
        + (total.summary() if total.total_skipped else "skipped none"))
  return summary


# ---------------------------------------------------------------------------------------
# Command line.


class _UsageError(ValueError):
  pass


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    # Reported in one line like every other input error (argparse would print the usage too).
    raise _UsageError(f"{message} (see --help)")


def main(argv=None) -> int:
  p = _Parser(prog="python -m sama_jax.precompute",
              description="Encode a dataset into ArrayRecord shards the trainer reads instead of raw media.")
  p.add_argument("--config", required=True, help="config file (get_config) with .data and .encoders")
  p.add_argument("--kind", required=True, choices=KINDS, help="which source of the config to precompute")
  p.add_argument("--out", required=True, help="output folder (one kind per folder; rerun to resume)")
  p.add_argument("--shard-size", type=int, default=256, help="input records per shard")
  p.add_argument("--limit", type=int, help="only the first N records")
  p.add_argument("--batch-size", type=int, help="examples per encoder call (default: the config's batch size)")
  p.add_argument("--dtype", default="float32", choices=FLOAT_DTYPES, help="how latents and embeddings are stored")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  try:
    a = p.parse_args(argv)
    config = load_config(a.config)
    for block in ("data", "encoders"):
      if block not in config:
        raise ValueError(f"config {a.config} has no .{block}; expected a training config such as "
                         "configs/stage2_tiny.py")
    precompute(config, a.kind, a.out, shard_size=a.shard_size, limit=a.limit, batch_size=a.batch_size,
               dtype=a.dtype, progress=not a.no_progress)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
