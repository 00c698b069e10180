"""A batch mix whose shares change with the step: a data curriculum (data.<stage>_lead_in).

`PhasedMix(parts, weights, ends)` interleaves the batches of named sub-pipelines; phase k
(k = 0, 1, ...) draws batches [ends[k-1], ends[k]) by `weights[k]` ({name: weight}; the
last phase runs on for ever). The choice of batch n is a deterministic function of n (the
part furthest behind its share of the phase so far; ties go to the earlier part), so
every process of a multi-host run yields the same task and shape at every step, as with
`grain.IterDataset.mix`. Each part keeps its own data order across phases.

Under grain's worker processes (`mp_prefetch`, data.num_workers = W) each worker runs its
own copy on a strided slice, and the global order takes the workers' batches in turn:
worker w's j-th batch is global batch j·W + w. `set_slice` (grain's in-place slicing
protocol) therefore moves each worker's phase ends to its own count, so the phases end at
the same global batch as in one process (without it the lead-in ran W times as long).
"""

from __future__ import annotations

import grain


def phase_steps(share: float, total_steps: int) -> int:
  """The steps (batches) of a run of `total_steps` that a phase of `share` of it covers:
  a data lead-in's length, and where train.schedule_restarts cuts the learning-rate
  schedule, so the two agree."""
  return max(1, round(share * total_steps))


def choose(weights: dict[str, float], drawn: dict[str, int], position: int) -> str:
  """The part to draw the `position`-th batch of a phase from (0-based), given how many
  batches each part gave so far in the phase: the one furthest behind its share."""
  total = sum(weights.values())
  live = [name for name, w in weights.items() if w > 0]
  return max(live, key=lambda name: (weights[name] / total * (position + 1) - drawn.get(name, 0),
                                     -live.index(name)))


class _PhasedIterator(grain.DatasetIterator):

  def __init__(self, children: dict, weights: list[dict], ends: tuple[int, ...]):
    super().__init__(list(children.values()))
    self._children, self._weights, self._ends = children, weights, ends
    self._batch, self._drawn = 0, {}

  def _phase(self) -> tuple[int, int]:
    """(phase index, the phase's first batch) of the next batch."""
    k = sum(self._batch >= end for end in self._ends)
    return k, (self._ends[k - 1] if k else 0)

  def __next__(self):
    k, start = self._phase()
    if self._batch == start:
      self._drawn = {}
    name = choose(self._weights[k], self._drawn, self._batch - start)
    element = next(self._children[name])
    self._drawn[name] = self._drawn.get(name, 0) + 1
    self._batch += 1
    return element

  def get_state(self):
    return {"batch": self._batch, "drawn": dict(self._drawn),
            "parts": {name: child.get_state() for name, child in self._children.items()}}

  def set_state(self, state):
    self._batch, self._drawn = int(state["batch"]), {k: int(v) for k, v in state["drawn"].items()}
    for name, child in self._children.items():
      child.set_state(state["parts"][name])


class PhasedMix(grain.IterDataset):
  """See the module doc. parts: {name: IterDataset}; weights: one {name: weight} per
  phase (names of `parts`, a positive sum each); ends: the first batch after each phase
  but the last (increasing, len(weights) - 1 of them)."""

  def __init__(self, parts: dict, weights: list[dict], ends: tuple[int, ...]):
    if len(ends) != len(weights) - 1 or list(ends) != sorted(set(ends)) or (ends and ends[0] < 1):
      raise ValueError(f"phase ends {ends} for {len(weights)} phases; expected {len(weights) - 1} "
                       "increasing positive batch counts")
    for k, w in enumerate(weights):
      if set(w) - set(parts) or sum(v for v in w.values() if v > 0) <= 0:
        raise ValueError(f"phase {k} weights {w}; expected positive weights for parts of {sorted(parts)}")
    super().__init__(list(parts.values()))
    self._parts, self._weights, self._ends = dict(parts), [dict(w) for w in weights], tuple(ends)

  def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
    """Worker `sl.start` of `sl.step` (grain's worker slicing): its own phase ends, and the
    same slice applied to every part, as grain applies it to a dataset's parents."""
    if sequential_slice:
      raise ValueError("PhasedMix supports grain's strided worker slices, not sequential ones")
    first, stride = sl.start or 0, sl.step or 1
    # Worker `first`'s batches j = 0, 1, ... are global batches j·stride + first: those
    # before a global end E number ceil((E - first) / stride).
    self._ends = tuple(max(0, -(-(end - first) // stride)) for end in self._ends)
    for part in self._parts.values():
      _slice_in_place(part, sl)

  def __iter__(self):
    return _PhasedIterator({name: iter(ds) for name, ds in self._parts.items()}, self._weights, self._ends)

  def __str__(self):
    return f"PhasedMix(ends={self._ends}, weights={self._weights})"


def _slice_in_place(ds, sl: slice) -> None:
  """grain's in-place slicing of a dataset for one worker: the first dataset up the
  parent chain that can slice itself does (`set_slice`), as grain's own worker set-up does."""
  if hasattr(ds, "set_slice"):
    ds.set_slice(sl)  # strided (grain 0.2.12 takes no sequential_slice argument)
    return
  if not ds.parents:
    raise ValueError(f"{type(ds).__name__} cannot be sliced for grain's worker processes")
  for parent in ds.parents:
    _slice_in_place(parent, sl)
