"""A LoRA run -> PyTorch: its adapters alone as one safetensors file (`to-torch
--lora-only`), or its merged model as a full checkpoint (`to-torch` without the flag).

layout "diffusers" (PEFT keys, what `WanTransformer3DModel.load_lora_adapter` and
`WanPipeline.load_lora_weights` read):
    transformer.blocks.0.attn1.to_q.lora_A.weight   [r, in]
    transformer.blocks.0.attn1.to_q.lora_B.weight   [out, r]
layout "official" (DiffSynth / SAMA `pipe.load_lora(pipe.dit, path)`; diffusers reads it
too, through its non-diffusers Wan converter, which looks for the `diffusion_model.` prefix):
    diffusion_model.blocks.0.self_attn.q.lora_A.weight   [r, in]
    diffusion_model.blocks.0.self_attn.q.lora_B.weight   [out, r]

The scale alpha / rank is folded into lora_B and no `.alpha` keys are written: DiffSynth's
loader ignores them (it applies W + alpha_arg · B A with alpha_arg = 1 by default) and
diffusers/PEFT without metadata uses alpha = rank (scale 1), so both apply exactly our
W + (alpha / rank) · A B.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sama_jax import lora as lora_lib
from sama_jax.config import model_config
from sama_jax.convert import names as N
from sama_jax.convert import safetensors_io as io
from sama_jax.convert.dit import LAYOUTS, save_torch_dit
from sama_jax.convert.orbax_io import read_trainer_params
from sama_jax.models import SamaDiT
from sama_jax.train import checkpoint as ckpt

PREFIXES = {"diffusers": "transformer.", "official": "diffusion_model."}
DTYPES = ("bfloat16", "float32")


def lora_tensors(lora: dict, c, layout: str, dtype: str | None = None) -> dict[str, np.ndarray]:
  """{torch name: array} of adapters `lora` (sama_jax.lora tree) with config `c`, the
  scale folded into lora_B. Raises ValueError for a target the layout has no name for."""
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r}; expected one of {LAYOUTS}")
  rules = {r.ours: r for r in N.DIT_RULES}
  out = {}
  for name, adapter in sorted(lora_lib.adapter_leaves(lora).items()):
    rule = rules.get(name)
    if rule is None or rule.kind != "linear":
      raise ValueError(f"LoRA target {name!r} is not a linear layer of the Wan DiT; {layout} LoRA files "
                       "hold linear layers only (set lora.targets accordingly)")
    if layout == "diffusers" and rule.optional:
      raise ValueError(f"LoRA target {name!r} is a SAMA module that diffusers' WanTransformer3DModel lacks; "
                       "export it with --layout official")
    module = PREFIXES[layout] + rule.torch_name(layout).removesuffix(".weight")
    a = np.asarray(jax.device_get(adapter[lora_lib.A]), np.float32)
    b = np.asarray(jax.device_get(adapter[lora_lib.B]), np.float32) * np.float32(lora_lib.scale(c))
    layers = [(module.format(i=i), a[i], b[i]) for i in range(a.shape[0])] if rule.stacked else [(module, a, b)]
    for torch_name, a_i, b_i in layers:
      out[f"{torch_name}.lora_A.weight"] = np.ascontiguousarray(a_i.T)  # [r, in]
      out[f"{torch_name}.lora_B.weight"] = np.ascontiguousarray(b_i.T)  # [out, r]
  if dtype is not None:
    out = {k: v.astype(jnp.dtype(dtype)) for k, v in out.items()}
  return out


def read_trainer_lora(workdir: str, use_ema: bool | None = None, step: int | None = None):
  """(adapters, lora config, "ema" or "params", step) of a LoRA trainer workdir. use_ema
  None: the adapters' EMA where the run kept one."""
  run_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(run_dir):
    raise FileNotFoundError(f"--checkpoint {workdir!r} is not a trainer workdir (no checkpoints/ folder)")
  manager = ckpt.checkpoint_manager(run_dir, async_save=False)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"--checkpoint {workdir!r} has no saved step under checkpoints/")
  saved = ckpt.read_config(run_dir, step)
  if not lora_lib.enabled(saved.get("lora")):
    raise ValueError(f"{workdir!r} step {step} was not trained with LoRA (lora.rank is 0 or absent); "
                     "export the whole model without --lora-only")
  c = lora_lib.lora_config(**saved["lora"])
  has_ema = manager.item_metadata(step)["state"].get("ema") is not None
  if use_ema and not has_ema:
    raise ValueError(f"{workdir!r} step {step} kept no EMA (train.ema_decay=0); export with --no-ema")
  key = "ema" if (has_ema if use_ema is None else use_ema) else "params"
  mc = model_config(**saved["model"])
  like = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: SamaDiT(mc, nnx.Rngs(0))), nnx.Param))
  adapters = jax.eval_shape(lambda p: lora_lib.init_lora(p, c, jax.random.key(0)), like)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  restored = ckpt.restore_items(run_dir, {key: adapters}, {key: jax.tree.map(lambda _: device, adapters)}, step)
  return restored[key], c, key, step


def export_lora(checkpoint: str, out: str, layout: str = "diffusers", *, use_ema: bool | None = None,
                dtype: str | None = None, log=print) -> list[str]:
  """Writes the newest step's adapters of LoRA workdir `checkpoint` to the .safetensors
  file `out` in `layout`; returns [out]."""
  if not out.endswith(".safetensors"):
    raise ValueError(f"--out {out!r}: a LoRA export is one file; give a path ending in .safetensors")
  if os.path.exists(out):
    raise FileExistsError(f"--out {out!r} already exists; choose a new path (nothing is overwritten)")
  if dtype is not None and dtype not in DTYPES:
    raise ValueError(f"--dtype {dtype!r}; expected one of {DTYPES}")
  if not os.path.exists(checkpoint):
    raise FileNotFoundError(f"--checkpoint {checkpoint!r} does not exist")
  adapters, c, which, step = read_trainer_lora(checkpoint, use_ema)
  tensors = lora_tensors(adapters, c, layout, dtype)
  files = io.write_official(tensors, out)
  log(f"wrote {len(tensors)} {layout} LoRA tensors (rank {c.rank}, scale {lora_lib.scale(c):g} folded into "
      f"lora_B) from {checkpoint} step {step} ({which}): {out}")
  return files


def is_lora_run(run_dir: str, step: int) -> bool:
  """Whether checkpoint `step` of `run_dir` (WORKDIR/checkpoints) was trained with LoRA."""
  return lora_lib.enabled(ckpt.read_config(run_dir, step).get("lora"))


def write_merged(checkpoint: str, out: str, layout: str, *, use_ema: bool, dtype: str | None = None,
                 max_shard_bytes: int = 5 * 2**30, log=print) -> list[str]:
  """A LoRA run's model (base with the adapters merged) as a full PyTorch checkpoint, built
  in one host's memory (to_torch's streaming export reads stored tensors as they are)."""
  if jax.process_count() > 1:
    raise ValueError(f"{checkpoint!r} is a LoRA run: its merged export runs in one process; drop --distributed "
                     "(or export the adapters with --lora-only)")
  params, mc, which, step = read_trainer_params(checkpoint, use_ema)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: SamaDiT(mc, nnx.Rngs(0))), nnx.Param)
  files = save_torch_dit(nnx.merge(graphdef, params), mc, out, layout, dtype=dtype, max_shard_bytes=max_shard_bytes)
  log(f"wrote {layout} layout of LoRA run {checkpoint} step {step} (base + {which} adapters merged): "
      + ", ".join(files))
  return files
