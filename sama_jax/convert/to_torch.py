"""A trainer workdir -> PyTorch (`python -m sama_jax.convert to-torch`).

layout "diffusers": a folder `WanTransformer3DModel.from_pretrained` loads unchanged
(config.json + safetensors, sharded with an index when large), plus SAMA's modules in
their own `sama_modules.safetensors`. layout "official": one safetensors state dict in the
original Wan / SAMA naming (SAMA_METHOD.md §6.1, §2.1).
"""

from __future__ import annotations

import os

import jax
from jax.experimental import multihost_utils

from sama_jax.convert.dit import LAYOUTS
from sama_jax.convert.export import write_export
from sama_jax.convert.orbax_io import trainer_step

DTYPES = ("bfloat16", "float32")


def _check_out(out: str, layout: str) -> None:
  if layout == "official" and not out.endswith(".safetensors"):
    raise ValueError(f"--out {out!r}: the official layout is one file; give a path ending in .safetensors")
  if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
    raise FileExistsError(f"--out {out!r} already exists; choose a new path (nothing is overwritten)")


def check_export(out: str, layout: str, dtype: str | None, distributed: bool = False) -> None:
  """The export's options, checked before anything is read (and before a distributed
  run starts its processes talking)."""
  if layout not in LAYOUTS:
    raise ValueError(f"--layout {layout!r}; expected one of {LAYOUTS}")
  if dtype is not None and dtype not in DTYPES:
    raise ValueError(f"--dtype {dtype!r}; expected one of {DTYPES}")
  if distributed and layout != "diffusers":
    raise ValueError(f"--distributed exports the diffusers layout only (got --layout {layout}): the official "
                     "layout is one file, which one process writes; drop --distributed for it")
  _check_out(out, layout)


def to_torch(checkpoint: str, out: str, layout: str = "diffusers", *, use_ema: bool | None = None,
             dtype: str | None = None, max_shard_bytes: int = 5 * 2**30, log=print,
             distributed: bool = False) -> list[str]:
  """Exports the newest step of trainer workdir `checkpoint`; returns the files written.
  use_ema None: the EMA where the run kept one. dtype None: as trained. Streams: one
  output file's tensors and one parameter are in memory at a time. distributed: every
  process of an initialised `jax.distributed` run calls this alike and writes its share of
  the files (diffusers layout only)."""
  check_export(out, layout, dtype, distributed)
  run_dir, mc, which, step = trainer_step(checkpoint, use_ema)
  from sama_jax.convert import lora
  if lora.is_lora_run(run_dir, step):  # base + adapters, merged in memory rather than streamed
    return lora.write_merged(checkpoint, out, layout, use_ema=which == "ema", dtype=dtype,
                             max_shard_bytes=max_shard_bytes, log=log)
  if jax.process_count() > 1:  # every process has looked at --out before any writes there
    multihost_utils.sync_global_devices("sama_jax.convert: export target checked")
  files = write_export(run_dir, step, which, mc, out, layout, dtype=dtype, max_shard_bytes=max_shard_bytes)
  if jax.process_index() == 0:
    log(f"wrote {layout} layout from {checkpoint} step {step} ({which}): " + ", ".join(files))
  return files
