"""PyTorch checkpoint interchange. Reads and writes safetensors with NumPy; torch itself
is never imported here (only by tests and one-time helpers that need it).
Command line: `python -m sama_jax.convert from-torch | to-torch` (see __main__.py)."""

from sama_jax.convert.dit import infer_config, load_torch_dit, save_torch_dit
from sama_jax.convert.encoders import load_torch_siglip, load_torch_umt5
from sama_jax.convert.vae import load_torch_vae

__all__ = ["infer_config", "load_torch_dit", "save_torch_dit", "load_torch_vae", "load_torch_umt5",
           "load_torch_siglip"]
