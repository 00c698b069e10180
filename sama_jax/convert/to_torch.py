"""A trainer workdir -> PyTorch (`python -m sama_jax.convert to-torch`).

layout "diffusers": a folder `WanTransformer3DModel.from_pretrained` loads unchanged
(config.json + safetensors, sharded with an index when large), plus SAMA's modules in
their own `sama_modules.safetensors`. layout "official": one safetensors state dict in the
original Wan / SAMA naming (SAMA_METHOD.md §6.1, §2.1).
"""

from __future__ import annotations

import os

from flax import nnx

from sama_jax.convert.dit import LAYOUTS, save_torch_dit
from sama_jax.convert.orbax_io import read_trainer_params
from sama_jax.models import SamaDiT

DTYPES = ("bfloat16", "float32")


def _check_out(out: str, layout: str) -> None:
  if layout == "official" and not out.endswith(".safetensors"):
    raise ValueError(f"--out {out!r}: the official layout is one file; give a path ending in .safetensors")
  if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
    raise FileExistsError(f"--out {out!r} already exists; choose a new path (nothing is overwritten)")


def to_torch(checkpoint: str, out: str, layout: str = "diffusers", *, use_ema: bool | None = None,
             dtype: str | None = None, max_shard_bytes: int = 5 * 2**30, log=print) -> list[str]:
  """Exports the newest step of trainer workdir `checkpoint`; returns the files written.
  use_ema None: the EMA where the run kept one. dtype None: as trained."""
  if layout not in LAYOUTS:
    raise ValueError(f"--layout {layout!r}; expected one of {LAYOUTS}")
  if dtype is not None and dtype not in DTYPES:
    raise ValueError(f"--dtype {dtype!r}; expected one of {DTYPES}")
  _check_out(out, layout)
  params, mc, which, step = read_trainer_params(checkpoint, use_ema)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: SamaDiT(mc, nnx.Rngs(0))), nnx.Param)
  model = nnx.merge(graphdef, params)
  files = save_torch_dit(model, mc, out, layout, dtype=dtype, max_shard_bytes=max_shard_bytes)
  log(f"wrote {layout} layout from {checkpoint} step {step} ({which}): " + ", ".join(files))
  return files
