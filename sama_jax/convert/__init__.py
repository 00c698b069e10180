"""PyTorch checkpoint interchange. Reads and writes safetensors with NumPy; torch itself
is never imported here (only by tests and one-time helpers that need it)."""

from sama_jax.convert.dit import infer_config, load_torch_dit, save_torch_dit

__all__ = ["infer_config", "load_torch_dit", "save_torch_dit"]
