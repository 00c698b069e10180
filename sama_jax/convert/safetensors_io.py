"""Safetensors files read and written with NumPy (bf16 via ml_dtypes); no torch."""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMERS_WEIGHTS = "model.safetensors"
WEIGHTS_NAMES = (DIFFUSERS_WEIGHTS, TRANSFORMERS_WEIGHTS)  # looked for in this order
SAMA_WEIGHTS = "sama_modules.safetensors"  # SAMA's DiT modules, beside a diffusers folder's weights


def index_files(path: str) -> dict[str, str]:
  """Maps every tensor name to the file that holds it.

  `path` is a .safetensors file, or a folder holding either a single weights file
  (diffusers' `diffusion_pytorch_model.safetensors` or transformers' `model.safetensors`)
  or a sharded set with its `.index.json`; a `sama_modules.safetensors` beside them (SAMA's
  own DiT modules, which a plain `WanTransformer3DModel` does not have) is read too.
  """
  if os.path.isfile(path):
    return _names_in([path])
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint {path!r} does not exist")
  names = _folder_weights(path)
  beside = os.path.join(path, SAMA_WEIGHTS)
  if os.path.isfile(beside):
    extra = _names_in([beside])
    both = sorted(set(extra) & set(names))
    if both:
      raise ValueError(f"{path!r}: {len(both)} tensors are both in {SAMA_WEIGHTS} and the main weights, "
                       f"e.g. {both[:3]}; keep them in one place")
    names.update(extra)
  return names


def _folder_weights(path: str) -> dict[str, str]:
  for weights in WEIGHTS_NAMES:
    index = os.path.join(path, weights + ".index.json")
    if os.path.isfile(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      missing = sorted({v for v in weight_map.values() if not os.path.isfile(os.path.join(path, v))})
      if missing:
        raise FileNotFoundError(f"{index} names shard files that are missing: {missing}")
      return {name: os.path.join(path, file) for name, file in weight_map.items()}
  singles = [os.path.join(path, w) for w in WEIGHTS_NAMES if os.path.isfile(os.path.join(path, w))]
  if singles:
    return _names_in(singles[:1])
  found = sorted(f for f in os.listdir(path) if f.endswith(".safetensors") and f != SAMA_WEIGHTS)
  if len(found) != 1:
    raise FileNotFoundError(
        f"{path!r} holds none of {list(WEIGHTS_NAMES)} nor their .index.json, and "
        f"{len(found)} other .safetensors files ({found[:5]}); pass the file itself")
  return _names_in([os.path.join(path, found[0])])


def _names_in(files: list[str]) -> dict[str, str]:
  names = {}
  for file in files:
    with safe_open(file, framework="numpy") as f:
      names.update({name: file for name in f.keys()})
  return names


def read_tensor(file: str, name: str) -> np.ndarray:
  with safe_open(file, framework="numpy") as f:
    return f.get_tensor(name)


def tensor_shapes(names: dict[str, str]) -> dict[str, tuple[int, ...]]:
  """Shapes without reading the data."""
  shapes, by_file = {}, {}
  for name, file in names.items():
    by_file.setdefault(file, []).append(name)
  for file, file_names in by_file.items():
    with safe_open(file, framework="numpy") as f:
      for name in file_names:
        shapes[name] = tuple(f.get_slice(name).get_shape())
  return shapes


def write_sharded(tensors: dict[str, np.ndarray], folder: str, max_shard_bytes: int) -> list[str]:
  """Writes diffusers-style weights: one file, or shards plus `.index.json` when larger
  than `max_shard_bytes`. Each file is written to a temporary name and renamed, so a
  crash never leaves a truncated file under the final name."""
  os.makedirs(folder, exist_ok=True)
  shards, current, size = [], {}, 0
  for name, x in tensors.items():
    if current and size + x.nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = x
    size += x.nbytes
  shards.append(current)
  if len(shards) == 1:
    files = [DIFFUSERS_WEIGHTS]
  else:
    stem = DIFFUSERS_WEIGHTS.removesuffix(".safetensors")
    files = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  for file, shard in zip(files, shards):
    write_file(shard, os.path.join(folder, file))
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(x.nbytes for x in tensors.values())},
             "weight_map": {name: file for file, shard in zip(files, shards) for name in shard}}
    write_json(index, os.path.join(folder, DIFFUSERS_WEIGHTS + ".index.json"))
  return [os.path.join(folder, f) for f in files]


def write_file(tensors: dict[str, np.ndarray], path: str) -> None:
  tmp = path + ".tmp"
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata={"format": "pt"})
  os.replace(tmp, path)


def write_json(obj, path: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def write_official(tensors: dict[str, np.ndarray], out: str) -> list[str]:
  """The official layout: one .safetensors state dict at `out` (atomic)."""
  if not out.endswith(".safetensors"):
    raise ValueError(f"official layout writes one file; {out!r} should end in .safetensors")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  write_file(tensors, out)
  return [out]
