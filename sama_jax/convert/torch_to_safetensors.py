"""One-time helper: a PyTorch `.pth` state dict (e.g. the released `Wan2.1_VAE.pth`) to safetensors.

    python -m sama_jax.convert.torch_to_safetensors Wan2.1_VAE.pth Wan2.1_VAE.safetensors

Names and dtypes are kept as they are; `load_torch_vae` / `load_torch_dit` read the result.
This is the only place outside the tests that imports torch, and only when it runs.
"""

from __future__ import annotations

import argparse
import os

# Keys some training scripts wrap a state dict in; unwrapped when they hold the only entry.
WRAPPER_KEYS = ("state_dict", "model_state", "model", "module")


def _state_dict(obj, path: str) -> dict:
  import torch

  while isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in WRAPPER_KEYS:
    obj = next(iter(obj.values()))
  if not isinstance(obj, dict):
    raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state dict (name -> tensor)")
  bad = sorted(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
  if bad:
    raise ValueError(f"{path!r}: {len(bad)} entries are not tensors (a training checkpoint rather than "
                     f"a state dict?): {bad[:5]}")
  return obj


def convert(src: str, dst: str) -> int:
  """Writes the tensors of `src` to `dst`; returns how many."""
  import torch
  from safetensors.torch import save_file

  if not os.path.isfile(src):
    raise FileNotFoundError(f"{src!r} does not exist")
  if not dst.endswith(".safetensors"):
    raise ValueError(f"output {dst!r} should end in .safetensors")
  tensors = _state_dict(torch.load(src, map_location="cpu", weights_only=True), src)
  # safetensors refuses tensors that share storage; each gets its own contiguous copy.
  tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
  os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
  tmp = dst + ".tmp"
  save_file(tensors, tmp, metadata={"format": "pt"})
  os.replace(tmp, dst)
  return len(tensors)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("src", help="a .pth / .pt state dict")
  parser.add_argument("dst", help="the .safetensors file to write")
  args = parser.parse_args(argv)
  print(f"wrote {convert(args.src, args.dst)} tensors to {args.dst}")


if __name__ == "__main__":
  main()
