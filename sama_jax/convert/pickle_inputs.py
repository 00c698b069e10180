"""Pickled PyTorch inputs (.pth / .pt / .bin / .ckpt) for the conversion CLI.

Unpickling can run code, so the CLI reads safetensors only. A pickled file (or a folder
whose weights are only pickled) is refused unless the user passes --allow-pickle; then it
is converted to safetensors with `sama_jax.convert.torch_to_safetensors` first.
"""

from __future__ import annotations

import json
import os
import re
import shutil

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
HELPER = "python -m sama_jax.convert.torch_to_safetensors"


def pickled_files(path: str) -> list[str]:
  """The pickled weights `path` stands for: itself, or a folder's when it has no safetensors."""
  if os.path.isfile(path):
    return [path] if path.endswith(PICKLE_SUFFIXES) else []
  if not os.path.isdir(path):
    return []
  files = os.listdir(path)
  if any(f.endswith(".safetensors") for f in files):
    return []
  return sorted(os.path.join(path, f) for f in files if f.endswith(PICKLE_SUFFIXES))


def safetensors_name(name: str) -> str:
  """'pytorch_model-00001-of-00002.bin' -> 'model-00001-of-00002.safetensors' (transformers'
  names); 'diffusion_pytorch_model.bin' -> 'diffusion_pytorch_model.safetensors'."""
  name = re.sub(r"\.(pth|pt|bin|ckpt)$", ".safetensors", name)
  return "model" + name[len("pytorch_model"):] if name.startswith("pytorch_model") else name


def safetensors_input(flag: str, path: str, allow_pickle: bool, scratch: str, warn) -> str:
  """`path` itself when it is safetensors; else its safetensors conversion under `scratch`
  (with --allow-pickle), or a ValueError telling the user how to convert it."""
  pickled = pickled_files(path)
  if not pickled:
    return path
  if not allow_pickle:
    raise ValueError(f"--{flag} {path!r} is a pickled PyTorch checkpoint, and unpickling can run code; "
                     f"convert it with `{HELPER} SRC DST.safetensors` and pass that, or add --allow-pickle "
                     "to convert it here (only for files you trust)")
  from sama_jax.convert.torch_to_safetensors import convert

  warn(f"warning: --{flag} {path!r} is pickled; converting it to safetensors under {scratch} "
       "(torch.load with weights_only=True)")
  if os.path.isfile(path):
    os.makedirs(scratch, exist_ok=True)
    out = os.path.join(scratch, safetensors_name(os.path.basename(path)))
    convert(path, out)
    return out
  folder = os.path.join(scratch, os.path.basename(os.path.normpath(path)))
  os.makedirs(folder, exist_ok=True)
  for name in os.listdir(path):
    src = os.path.join(path, name)
    if name.endswith(".index.json") and name.removesuffix(".index.json").endswith(PICKLE_SUFFIXES):
      with open(src) as f:
        index = json.load(f)
      index["weight_map"] = {k: safetensors_name(v) for k, v in index["weight_map"].items()}
      with open(os.path.join(folder, safetensors_name(name.removesuffix(".index.json")) + ".index.json"), "w") as f:
        json.dump(index, f, indent=2)
    elif src in pickled:
      convert(src, os.path.join(folder, safetensors_name(name)))
    elif os.path.isfile(src):  # config.json, tokenizer files, ...
      shutil.copy2(src, os.path.join(folder, name))
  return folder
