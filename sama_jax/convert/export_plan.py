"""Which PyTorch tensor goes to which file, written by which process, for to-torch.

The plan is a pure function of the model config and the export options, so every
process computes the same one with no communication: file names (`-00003-of-00007`)
and the index are known before any tensor is read. Each of our parameters (a whole
stacked parameter: all its layers) is one unit of work: restored once, by one process.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sama_jax.convert import names as N
from sama_jax.convert import safetensors_io as io


@dataclasses.dataclass(frozen=True)
class Tensor:
  name: str  # the PyTorch name
  rule: N.Rule
  layer: int | None  # index into a stacked parameter's leading `layers` axis
  nbytes: int


@dataclasses.dataclass(frozen=True)
class Shard:
  file: str  # relative to the output folder (diffusers), or the output file (official)
  process: int
  tensors: tuple[Tensor, ...]

  @property
  def params(self) -> list[str]:
    """Our parameters this file needs, in order, each once."""
    return list(dict.fromkeys(t.rule.ours for t in self.tensors))


def torch_shape(kind: str, shape: tuple[int, ...], patch: tuple[int, int, int]) -> tuple[int, ...]:
  """The shape `names.to_torch` gives an array of our `shape`, without the array."""
  if kind == "linear":
    return tuple(shape[::-1])
  if kind == "patch":  # [(pt ph pw C), D] -> [D, C, pt, ph, pw]
    return (shape[1], shape[0] // math.prod(patch), *patch)
  if kind == "table":
    return (1, *shape)
  return tuple(shape)


def _tensors(rule: N.Rule, shape: tuple[int, ...], layout: str, itemsize: int, patch) -> list[Tensor]:
  one = shape[1:] if rule.stacked else shape
  nbytes = math.prod(torch_shape(rule.kind, one, patch)) * itemsize
  if not rule.stacked:
    return [Tensor(rule.torch_name(layout), rule, None, nbytes)]
  return [Tensor(rule.torch_name(layout).format(i=i), rule, i, nbytes) for i in range(shape[0])]


def _balance(sizes: dict[str, int], processes: int, preload: int) -> list[list[str]]:
  """Size-balanced greedy: largest unit first, to the least-loaded process (process 0
  starts with `preload` bytes); each process's units then keep the table's order."""
  load = [preload] + [0] * (processes - 1)
  owner = {}
  for unit in sorted(sizes, key=lambda u: -sizes[u]):
    p = min(range(processes), key=lambda q: (load[q], q))
    owner[unit] = p
    load[p] += sizes[unit]
  return [[u for u in sizes if owner[u] == p] for p in range(processes)]


def _cut(tensors: list[Tensor], max_shard_bytes: int) -> list[list[Tensor]]:
  """Consecutive tensors into files of at most max_shard_bytes (a larger tensor alone),
  as `safetensors_io.write_sharded` cuts them."""
  files, current, size = [], [], 0
  for t in tensors:
    if current and size + t.nbytes > max_shard_bytes:
      files.append(current)
      current, size = [], 0
    current.append(t)
    size += t.nbytes
  if current:
    files.append(current)
  return files


def export_plan(shapes: dict[str, tuple[int, ...]], patch, layout: str, itemsize: int,
                max_shard_bytes: int, processes: int = 1) -> tuple[list[Shard], Shard | None]:
  """(weights files, SAMA-modules file or None) of an export.

  shapes: our '.'-joined parameter path -> its shape (every `names.DIT_RULES` entry).
  itemsize: bytes per element as written. layout "diffusers": the weights are diffusers'
  own tensors in files cut at max_shard_bytes (one `diffusion_pytorch_model.safetensors`,
  or numbered shards that need an index), SAMA's modules go to `sama_modules.safetensors`
  (written by process 0); "official": one file of everything, by one process.
  """
  if layout == "official" and processes != 1:
    raise ValueError(f"the official layout is one file, written by one process; got {processes} processes "
                     "(export the diffusers layout with --distributed, or the official one without)")
  main = [r for r in N.DIT_RULES if not (r.optional and layout == "diffusers")]
  beside = [r for r in N.DIT_RULES if r.optional and layout == "diffusers"]
  per_rule = {r.ours: _tensors(r, tuple(shapes[r.ours]), layout, itemsize, patch) for r in main + beside}
  if layout == "official":
    return [Shard("", 0, tuple(t for r in main for t in per_rule[r.ours]))], None
  sama = Shard(io.SAMA_WEIGHTS, 0, tuple(t for r in beside for t in per_rule[r.ours]))
  sizes = {r.ours: sum(t.nbytes for t in per_rule[r.ours]) for r in main}
  groups = []
  for p, units in enumerate(_balance(sizes, processes, sum(t.nbytes for t in sama.tensors))):
    groups += [(p, files) for files in _cut([t for u in units for t in per_rule[u]], max_shard_bytes)]
  if len(groups) == 1:
    names = [io.DIFFUSERS_WEIGHTS]
  else:
    stem = io.DIFFUSERS_WEIGHTS.removesuffix(".safetensors")
    names = [f"{stem}-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
  return [Shard(n, p, tuple(ts)) for n, (p, ts) in zip(names, groups)], sama


def index_json(shards: list[Shard]) -> dict:
  """diffusers' `.index.json` of sharded weights."""
  return {"metadata": {"total_size": sum(t.nbytes for s in shards for t in s.tensors)},
          "weight_map": {t.name: s.file for s in shards for t in s.tensors}}


def torch_tensor(t: Tensor, ours: np.ndarray, patch, dtype=None) -> np.ndarray:
  """Tensor `t` in PyTorch layout, from its whole parameter `ours` (all layers if stacked)."""
  x = ours if t.layer is None else ours[t.layer]
  if dtype is not None:
    x = x.astype(dtype)
  return N.to_torch(t.rule.kind, x, patch)
