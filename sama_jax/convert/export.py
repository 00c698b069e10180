"""Writes a trainer checkpoint's DiT as PyTorch files, file by file (`export_plan`).

Each process writes the files the plan gives it, restoring only the parameters those
files need, one parameter at a time, straight from the checkpoint as NumPy: the host holds
one file's tensors plus one parameter (all layers of a stacked one), never the model.
With several processes (`jax.distributed`), process 0 writes the index, config.json and
SAMA's modules once every process has written its files.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from sama_jax.convert import safetensors_io as io
from sama_jax.convert.dit import _diffusers_config
from sama_jax.convert.export_plan import Shard, export_plan, index_json, torch_tensor
from sama_jax.convert.orbax_io import _params_like, host_leaf_reader
from sama_jax.convert.trees import flatten


def _write_shard(shard: Shard, path: str, restore, patch, dtype) -> None:
  """Restores `shard`'s parameters one at a time and writes its tensors to `path`."""
  tensors, held = {}, {}
  for ours in shard.params:
    held = restore([ours])  # replaces the previous parameter, which this file no longer needs
    for t in shard.tensors:
      if t.rule.ours == ours:
        tensors[t.name] = np.ascontiguousarray(torch_tensor(t, held[ours], patch, dtype))
  del held
  io.write_file(tensors, path)


def write_export(run_dir: str, step: int, key: str, mc, out: str, layout: str, *, dtype: str | None = None,
                 max_shard_bytes: int = 5 * 2**30) -> list[str]:
  """Writes `state[key]` of checkpoint `step` in `run_dir` (model config `mc`) to `out` in
  `layout`; returns every file of the export (all processes' files). Every process calls
  it with the same arguments."""
  process, processes = jax.process_index(), jax.process_count()
  shapes = {path: tuple(x.shape) for path, x in flatten(_params_like(mc)).items()}
  out_dtype = np.dtype(jax.numpy.dtype(dtype or mc.param_dtype))
  patch = tuple(mc.patch_size)
  weights, sama = export_plan(shapes, patch, layout, out_dtype.itemsize, max_shard_bytes, processes)
  restore = host_leaf_reader(run_dir, step, key)
  cast = None if dtype is None else out_dtype
  if layout == "official":
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    _write_shard(weights[0], out, restore, patch, cast)
    return [out]
  os.makedirs(out, exist_ok=True)
  for shard in weights + [sama]:
    if shard.process == process:
      _write_shard(shard, os.path.join(out, shard.file), restore, patch, cast)
  if processes > 1:  # the index goes last: it names every process's files
    multihost_utils.sync_global_devices("sama_jax.convert: export files written")
  if process == 0:
    if len(weights) > 1:
      io.write_json(index_json(weights), os.path.join(out, io.DIFFUSERS_WEIGHTS + ".index.json"))
    io.write_json(_diffusers_config(mc), os.path.join(out, "config.json"))
  return [os.path.join(out, s.file) for s in weights + [sama]]
