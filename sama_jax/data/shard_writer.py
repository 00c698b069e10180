"""Resumable ArrayRecord shards: each shard is written under a temporary name and renamed
when complete, and a small JSON file (written atomically) lists the finished ones, so a
crash loses at most the shard being written (used by `sama_jax.precompute`)."""

from __future__ import annotations

import collections
import json
import logging
import os

from array_record.python.array_record_module import ArrayRecordWriter

from sama_jax.data.records import encode_record
from sama_jax.data.skips import EXAMPLES_PER_REASON, SkipStats, Skipped

log = logging.getLogger(__name__)

PROGRESS, SUMMARY = "progress.json", "summary.json"


def shard_name(kind: str, index: int, count: int) -> str:
  return f"{kind}-{index:05d}-of-{count:05d}.array_record"


def write_json(path: str, value) -> None:
  # Write-then-rename: a crash leaves the old file or the new one, never half of one.
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(value, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + ".tmp", path)


def load_progress(out: str, settings: dict) -> dict:
  """progress.json of an earlier run with these settings, or a fresh one. Raises when
  `out` holds a run with other settings."""
  path = os.path.join(out, PROGRESS)
  if not os.path.isfile(path):
    return {"settings": settings, "shards": {}}
  with open(path, encoding="utf-8") as f:
    progress = json.load(f)
  old = progress.get("settings", {})
  changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
  if changed:
    detail = "; ".join(f"{k}: {json.dumps(old.get(k))[:60]} -> {json.dumps(settings.get(k))[:60]}"
                       for k in changed)
    raise ValueError(f"{out} holds a precompute with other settings ({detail}); rerun with the same config and "
                     "options to resume it, or write to a new --out (one kind per folder)")
  return progress


def ordered_map(pool, fn, items, ahead: int):
  """pool.map that keeps at most `ahead` results in flight (decoded videos are large)."""
  pending = collections.deque()
  for item in items:
    pending.append(pool.submit(fn, item))
    if len(pending) >= ahead:
      yield pending.popleft().result()
  while pending:
    yield pending.popleft().result()


def _count_skip(stats: SkipStats, skip: Skipped) -> None:
  stats.skipped[skip.reason] += 1
  if len(stats.examples[skip.reason]) < EXAMPLES_PER_REASON:
    stats.examples[skip.reason].append(skip.path)
  log.warning("skipped %s: %s (%s)", skip.path, skip.reason, skip.detail)


def write_shard(path: str, examples, make_records, batch_size: int, bar) -> tuple[int, SkipStats]:
  """Writes the records of `examples` (an iterable of examples or Skipped markers) to
  `path` via a temporary file: `make_records([example])` turns up to batch_size examples
  at a time into record dicts; `bar.update(1)` per input. Skipped inputs are logged and
  counted. Returns (records written, skip counts)."""
  temporary = path + ".tmp"
  if os.path.exists(temporary):  # left by a run that crashed in this shard
    os.remove(temporary)
  writer = ArrayRecordWriter(temporary, "group_size:1")  # one record per chunk: cheap random access
  stats, written, batch = SkipStats(), 0, []

  def flush():
    nonlocal written
    for record in make_records(batch):
      writer.write(encode_record(record))
      written += 1
    batch.clear()

  try:
    for example in examples:
      stats.seen += 1
      bar.update(1)
      if isinstance(example, Skipped):
        _count_skip(stats, example)
        continue
      batch.append(example)
      if len(batch) == batch_size:
        flush()
    if batch:
      flush()
  finally:
    writer.close()
  os.replace(temporary, path)
  return written, stats
