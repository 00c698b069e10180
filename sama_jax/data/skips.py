"""Bad-input accounting: a record that cannot become a training example is skipped,
counted and logged with its path, and a stream that loses too much stops the run
(DESIGN.md §3).

Map steps never raise for bad data: they return a `Skipped(path, reason, detail)` in
place of the example. `account_skips` (placed after `to_iter_dataset`, before batching)
drops those markers, logs each one, and keeps per-reason counts *in the iterator
state*. That choice makes the counts

- checkpointed and restored with the data order (the fraction spans the whole run), and
- visible from the main process with multiprocessing workers: every worker reports its
  iterator state along with its batches, so `skip_stats(iterator)` sums the streams of
  all workers as of the last batch the main process received.

The `max_skip_fraction` check itself runs inside each stream, i.e. per sub-pipeline
and, with workers, per worker on that worker's share of the records (each share is a
uniform sample of the same records, so the fraction estimates the same quantity).
"""

from __future__ import annotations

import dataclasses
import logging

import grain

logger = logging.getLogger(__name__)

# Why a record was skipped; fixed so the iterator state keeps one shape for a whole run.
REASONS = (
    "malformed_row",  # a manifest row without the needed columns, or not parseable
    "missing_file",
    "empty_file",  # zero bytes
    "corrupt",  # FFmpeg / PIL cannot decode it
    "too_short",  # fewer than 5 frames (the smallest 4k+1 clip SAMA takes)
    "shorter_than_num_frames",  # short_clips="skip" and fewer than num_frames frames
    "frame_count_mismatch",  # a video edit whose source and target lengths differ
    "bad_record",  # an in-memory / ArrayRecord record with missing or malformed fields
)
STATE_KEY = "sama_skip_accounting"  # marks this transform's part of a grain state
EXAMPLES_PER_REASON = 5  # paths kept per reason for the error summary


@dataclasses.dataclass(frozen=True)
class Skipped:
  """Marker returned in place of an example. path: the file or "manifest:line" at fault;
  reason: one of REASONS; detail: the human-readable cause."""
  path: str
  reason: str
  detail: str = ""

  def __post_init__(self):
    if self.reason not in REASONS:
      raise ValueError(f"skip reason {self.reason!r} is not one of {REASONS}")


class SkipFractionExceeded(RuntimeError):
  """More than max_skip_fraction of a stream's records were unusable."""


@dataclasses.dataclass
class SkipStats:
  """Counts over one or more streams: `seen` records, `skipped` per reason, and up to
  EXAMPLES_PER_REASON example paths per reason."""
  seen: int = 0
  skipped: dict = dataclasses.field(default_factory=lambda: {r: 0 for r in REASONS})
  examples: dict = dataclasses.field(default_factory=lambda: {r: [] for r in REASONS})

  @property
  def total_skipped(self) -> int:
    return sum(self.skipped.values())

  @property
  def fraction(self) -> float:
    return self.total_skipped / self.seen if self.seen else 0.0

  def add(self, other: "SkipStats") -> "SkipStats":
    merged = SkipStats(self.seen + other.seen)
    for r in REASONS:
      merged.skipped[r] = self.skipped[r] + other.skipped[r]
      paths = self.examples[r] + [p for p in other.examples[r] if p not in self.examples[r]]
      merged.examples[r] = paths[:EXAMPLES_PER_REASON]
    return merged

  def summary(self) -> str:
    parts = [f"{r}: {n} (e.g. {', '.join(self.examples[r]) or '-'})" for r, n in self.skipped.items() if n]
    return (f"skipped {self.total_skipped} of {self.seen} records ({100 * self.fraction:.1f}%)"
            + (": " + "; ".join(parts) if parts else ""))

  def to_state(self) -> dict:
    # Plain JSON types with a fixed structure (grain's checkpointing stores JSON).
    return {"seen": self.seen, "skipped": dict(self.skipped),
            "examples": {r: "\n".join(p) for r, p in self.examples.items()}}

  @classmethod
  def from_state(cls, state: dict) -> "SkipStats":
    stats = cls(int(state["seen"]))
    for r in REASONS:
      stats.skipped[r] = int(state["skipped"].get(r, 0))
      text = state["examples"].get(r, "")
      stats.examples[r] = text.split("\n") if text else []
    return stats


class _AccountingIterator(grain.DatasetIterator):

  def __init__(self, parent, name: str, max_skip_fraction: float, min_records: int):
    super().__init__(parent)
    self._name = name
    self._max_fraction = max_skip_fraction
    self._min_records = min_records
    self._counts = SkipStats()

  def __next__(self):
    while True:
      element = next(self._parent)
      self._counts.seen += 1
      if not isinstance(element, Skipped):
        return element
      self._record(element)

  def _record(self, skip: Skipped) -> None:
    stats = self._counts
    stats.skipped[skip.reason] += 1
    examples = stats.examples[skip.reason]
    if len(examples) < EXAMPLES_PER_REASON and skip.path not in examples:  # epochs repeat paths
      examples.append(skip.path)
    logger.warning("data stream %r skipped %s: %s (%s)", self._name, skip.path, skip.reason, skip.detail)
    if stats.seen < self._min_records:
      return
    # A stream with no usable record would loop forever, whatever the threshold.
    if stats.fraction > self._max_fraction or stats.total_skipped == stats.seen:
      raise SkipFractionExceeded(
          f"data stream {self._name!r} {stats.summary()}, more than max_skip_fraction="
          f"{self._max_fraction} after at least {self._min_records} records (counts are per stream and, "
          "with workers, per worker). Fix or drop the bad records, or raise data.max_skip_fraction.")

  def get_state(self):
    return {"parent": self._parent.get_state(),
            STATE_KEY: {"name": self._name, **self._counts.to_state()}}

  def set_state(self, state):
    self._parent.set_state(state["parent"])
    self._counts = SkipStats.from_state(state[STATE_KEY])


class _AccountingIterDataset(grain.IterDataset):

  def __init__(self, parent, name, max_skip_fraction, min_records):
    super().__init__(parent)
    self._args = (name, max_skip_fraction, min_records)

  def __iter__(self):
    return _AccountingIterator(self._parent.__iter__(), *self._args)

  def __str__(self):
    return f"AccountSkips(name={self._args[0]!r})"


def account_skips(ds: grain.IterDataset, name: str, max_skip_fraction: float,
                  min_records: int) -> grain.IterDataset:
  """Drops `Skipped` markers from `ds`, logging and counting them under stream `name`;
  raises SkipFractionExceeded once skipped/seen > max_skip_fraction after at least
  `min_records` records (or when every one of those was bad)."""
  if not 0.0 <= max_skip_fraction <= 1.0:
    raise ValueError(f"max_skip_fraction={max_skip_fraction}; expected a fraction in [0, 1]")
  return _AccountingIterDataset(ds, name, float(max_skip_fraction), int(min_records))


def _streams(state, found: list) -> list:
  if isinstance(state, dict):
    if STATE_KEY in state:
      found.append(state[STATE_KEY])
    for value in state.values():
      _streams(value, found)
  elif isinstance(state, (list, tuple)):
    for value in state:
      _streams(value, found)
  return found


def skip_stats(iterator_or_state, by_stream: bool = False):
  """Skip counts of a pipeline iterator (or of a state from its get_state()): one
  SkipStats summed over every stream and worker, or {stream name: SkipStats} when
  `by_stream`. With workers the counts are as of the last batch received from each."""
  state = iterator_or_state.get_state() if hasattr(iterator_or_state, "get_state") else iterator_or_state
  streams: dict[str, SkipStats] = {}
  for entry in _streams(state, []):
    streams[entry["name"]] = streams.get(entry["name"], SkipStats()).add(SkipStats.from_state(entry))
  if by_stream:
    return streams
  total = SkipStats()
  for stats in streams.values():
    total = total.add(stats)
  return total
