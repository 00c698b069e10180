"""The model configuration: every field a user may set, with the published defaults.

`configs/*.py` build on `model_config()`; conversion infers the same fields from a
checkpoint. Fields that define the published Wan2.1 / SAMA model are cited in
SAMA_METHOD.md §6.1 (Wan) and §2 (SAMA).
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

SOURCE_MODES = ("token", "channel")
SOURCE_ROPE = ("same", "shifted")
SEMANTIC_ROPE = ("zero", "identity")
DTYPES = ("float32", "bfloat16", "float16")
SEQUENCE_PARALLEL = ("none", "ulysses")
PREDICTIONS = ("velocity", "x0")


def model_config(**overrides) -> ml_collections.ConfigDict:
  """Returns a SAMA DiT config: Wan2.1-1.3B shapes unless overridden."""
  c = ml_collections.ConfigDict()
  # Wan2.1 backbone (T2V-1.3B shapes).
  c.dim = 1536
  c.ffn_dim = 8960
  c.num_heads = 12
  c.num_layers = 30
  c.in_channels = 16  # VAE latent channels; the patch embedding doubles them in channel mode.
  c.out_channels = 16
  c.patch_size = (1, 2, 2)
  c.text_dim = 4096  # umT5-XXL width
  c.freq_dim = 256  # sinusoidal timestep features
  c.eps = 1e-6
  c.rope_theta = 10000.0
  c.rope_max_len = 1024  # positions per axis the RoPE tables cover
  c.cross_attn_norm = True
  c.qk_norm = True
  # SAMA conditioning (SAMA_METHOD.md §2).
  c.source_mode = "token"  # "token": source tokens in context; "channel": [x_t ; z_s] channels
  c.source_rope = "same"  # "same": source positions equal the target's (SAMA); "shifted": offset by the grid
  c.semantic_rope = "zero"  # "zero": complex-zero rotation (released weights); "identity": no rotation
  c.num_segments = 3  # type ids: 0 source, 1 semantic, 2 target
  c.semantic_dim = 1152  # SigLIP so400m width
  c.semantic_hidden_dim = 1024  # siglip_feat_mlp hidden width
  c.num_semantic_tokens = 65  # 64 pooled local + 1 global per anchor frame
  # What the output head predicts: "velocity" (ε − x0, Wan and SAMA) or "x0" (the clean
  # latents, turned into a velocity by `SamaDiT.velocity`; for tokens with more features
  # than a narrow model can carry as noise, e.g. the world's patch codec; docs/architecture.md).
  c.prediction = "velocity"
  # Source skip: the head predicts the change from the source, i.e. the source is added to
  # a predicted x0 or subtracted from a predicted velocity (where source and target latents
  # have one shape), so a model starts out copying its source. For models trained from
  # scratch (the synthetic world); off for Wan / SAMA weights (docs/architecture.md).
  c.source_skip = False
  # Scaled input: the blocks see (1 − σ)·x_σ instead of x_σ, so at σ = 1 (pure noise, most
  # of the shifted training draws) the noisy input is zero and cannot drown the source
  # features a channel-mode token shares with it. Needs prediction="x0" (a velocity
  # ε − x0 cannot be read from a zeroed input). Not in Wan: for models trained from
  # scratch (the synthetic world); not exportable to PyTorch (docs/architecture.md).
  c.scale_input = False
  # Numerics.
  c.dtype = "float32"  # compute dtype of matmuls; norms, modulation and softmax stay float32
  c.param_dtype = "float32"
  c.timestep_bf16 = False  # round t and its sinusoid to bf16, as the released pipeline does
  # Execution.
  c.attention = "xla"  # "xla" | "chunked" | "cudnn" | "splash"
  c.remat = "none"  # "none" | "full" | "dots_saveable" | "offload_dots"
  c.scan_layers = True
  c.sequence_parallel = "none"  # "ulysses": attention all-to-alls over the `context` mesh axis
  c.update(overrides)
  validate_model_config(c)
  return c


def validate_model_config(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field, its value and what is allowed."""

  def choice(name, allowed):
    if c[name] not in allowed:
      raise ValueError(f"model.{name}={c[name]!r}; expected one of {allowed}")

  choice("source_mode", SOURCE_MODES)
  choice("source_rope", SOURCE_ROPE)
  choice("semantic_rope", SEMANTIC_ROPE)
  choice("dtype", DTYPES)
  choice("param_dtype", DTYPES)
  choice("sequence_parallel", SEQUENCE_PARALLEL)
  choice("prediction", PREDICTIONS)
  for name in ("source_skip", "scale_input"):
    if not isinstance(c.get(name, False), bool):
      raise ValueError(f"model.{name}={c[name]!r}; expected True or False")
  if c.get("scale_input", False) and c.prediction != "x0":
    raise ValueError(f"model.scale_input=True needs model.prediction='x0' (got {c.prediction!r}): at σ = 1 "
                     "the scaled input is zero, and a velocity ε − x0 cannot be predicted without ε")
  if c.dim % c.num_heads:
    raise ValueError(f"model.dim={c.dim} is not divisible by model.num_heads={c.num_heads}")
  head_dim = c.dim // c.num_heads
  if head_dim % 2 or head_dim < 6:
    raise ValueError(f"head dim {head_dim} (dim/num_heads) must be even and >= 6 for 3D RoPE")
  if len(tuple(c.patch_size)) != 3:
    raise ValueError(f"model.patch_size={c.patch_size}; expected (t, h, w)")
  for name in ("dim", "ffn_dim", "num_layers", "in_channels", "out_channels", "text_dim", "freq_dim"):
    if int(c[name]) <= 0:
      raise ValueError(f"model.{name}={c[name]} must be positive")
  if c.freq_dim % 2:
    raise ValueError(f"model.freq_dim={c.freq_dim} must be even (cos and sin halves)")
  if c.num_segments != 3:
    raise ValueError(f"model.num_segments={c.num_segments}; SAMA uses 3 (source, semantic, target)")


def load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Loads `get_config(arg)` from a Python config file, big_vision style (`configs/tiny.py`)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path!r} defines no get_config()")
  return module.get_config(arg) if arg is not None else module.get_config()
