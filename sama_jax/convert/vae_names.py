"""The declarative parameter-name table for the Wan2.1 VAE, used in both directions.

One `Rule` per tensor: our path, its diffusers (`AutoencoderKLWan`) name, its name in the
original `Wan2.1_VAE.pth` (the Wan repo / DiffSynth naming), and its layout kind. The block
counts depend on the config, so the table is built by `vae_rules(config)`.

The original naming, as diffusers' own single-file converter reads it
(`diffusers.loaders.single_file_utils.convert_wan_vae_to_diffusers`), keeps every block in
flat `nn.Sequential`s: a residual block is `residual.{0: norm1, 2: conv1, 3: norm2, 6: conv2}`
plus `shortcut`; `encoder.downsamples.{n}` is diffusers' `encoder.down_blocks.{n}` one to one;
`decoder.upsamples` runs through each level's num_res_blocks + 1 residual blocks then its
resampler; the mid blocks are `middle.{0, 1: attention, 2}`; `head.{0: norm, 2: conv}`; and
quant_conv / post_quant_conv are the top-level `conv1` / `conv2`.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

from sama_jax.convert.names import Rule

KINDS = ("conv3d", "conv2d", "pointwise", "gamma3d", "gamma2d", "copy")


def _conv(ours, diffusers, official, kind="conv3d"):
  return [Rule(f"{ours}.kernel", f"{diffusers}.weight", f"{official}.weight", kind),
          Rule(f"{ours}.bias", f"{diffusers}.bias", f"{official}.bias", "copy")]


def _gamma(ours, diffusers, official, kind="gamma3d"):
  return [Rule(f"{ours}.gamma", f"{diffusers}.gamma", f"{official}.gamma", kind)]


def _resnet(ours, diffusers, official, shortcut: bool):
  rules = (_gamma(f"{ours}.norm1", f"{diffusers}.norm1", f"{official}.residual.0")
           + _conv(f"{ours}.conv1", f"{diffusers}.conv1", f"{official}.residual.2")
           + _gamma(f"{ours}.norm2", f"{diffusers}.norm2", f"{official}.residual.3")
           + _conv(f"{ours}.conv2", f"{diffusers}.conv2", f"{official}.residual.6"))
  if shortcut:
    rules += _conv(f"{ours}.conv_shortcut", f"{diffusers}.conv_shortcut", f"{official}.shortcut")
  return rules


def _attention(ours, diffusers, official):
  return (_gamma(f"{ours}.norm", f"{diffusers}.norm", f"{official}.norm", "gamma2d")
          + _conv(f"{ours}.to_qkv", f"{diffusers}.to_qkv", f"{official}.to_qkv", "pointwise")
          + _conv(f"{ours}.proj", f"{diffusers}.proj", f"{official}.proj", "pointwise"))


def _resample(ours, diffusers, official, temporal: bool):
  rules = _conv(f"{ours}.resample", f"{diffusers}.resample.1", f"{official}.resample.1", "conv2d")
  if temporal:
    rules += _conv(f"{ours}.time_conv", f"{diffusers}.time_conv", f"{official}.time_conv")
  return rules


def _mid(ours, diffusers, official):
  return (_resnet(f"{ours}.resnets.0", f"{diffusers}.resnets.0", f"{official}.0", False)
          + _attention(f"{ours}.attention", f"{diffusers}.attentions.0", f"{official}.1")
          + _resnet(f"{ours}.resnets.1", f"{diffusers}.resnets.1", f"{official}.2", False))


def vae_rules(config) -> tuple[Rule, ...]:
  """Every tensor of a Wan2.1 VAE with this config (see `sama_jax.models.vae.vae_config`)."""
  levels, blocks = len(config.dim_mult), config.num_res_blocks
  rules = _conv("encoder.conv_in", "encoder.conv_in", "encoder.conv1")
  dims = [config.base_dim * m for m in (1, *config.dim_mult)]
  n = 0
  for level in range(levels):
    in_dim, out_dim = dims[level], dims[level + 1]
    for _ in range(blocks):
      rules += _resnet(f"encoder.down_blocks.{n}", f"encoder.down_blocks.{n}", f"encoder.downsamples.{n}",
                       in_dim != out_dim)
      in_dim, n = out_dim, n + 1
    if level < levels - 1:
      rules += _resample(f"encoder.down_blocks.{n}", f"encoder.down_blocks.{n}", f"encoder.downsamples.{n}",
                         bool(config.temporal_downsample[level]))
      n += 1
  rules += _mid("encoder.mid_block", "encoder.mid_block", "encoder.middle")
  rules += _gamma("encoder.norm_out", "encoder.norm_out", "encoder.head.0")
  rules += _conv("encoder.conv_out", "encoder.conv_out", "encoder.head.2")
  rules += _conv("quant_conv", "quant_conv", "conv1")
  rules += _conv("post_quant_conv", "post_quant_conv", "conv2")

  base = config.decoder_base_dim or config.base_dim
  mult = tuple(config.dim_mult)
  dims = [base * m for m in (mult[-1], *mult[::-1])]
  temporal_upsample = tuple(config.temporal_downsample)[::-1]
  rules += _conv("decoder.conv_in", "decoder.conv_in", "decoder.conv1")
  rules += _mid("decoder.mid_block", "decoder.mid_block", "decoder.middle")
  per_level = blocks + 2  # residual blocks + the resampler slot in the flat original list
  for level in range(levels):
    in_dim, out_dim = dims[level] // (2 if level else 1), dims[level + 1]
    for j in range(blocks + 1):
      rules += _resnet(f"decoder.up_blocks.{level}.resnets.{j}", f"decoder.up_blocks.{level}.resnets.{j}",
                       f"decoder.upsamples.{level * per_level + j}", in_dim != out_dim)
      in_dim = out_dim
    if level < levels - 1:
      rules += _resample(f"decoder.up_blocks.{level}.upsampler", f"decoder.up_blocks.{level}.upsamplers.0",
                         f"decoder.upsamples.{level * per_level + blocks + 1}", bool(temporal_upsample[level]))
  rules += _gamma("decoder.norm_out", "decoder.norm_out", "decoder.head.0")
  rules += _conv("decoder.conv_out", "decoder.conv_out", "decoder.head.2")
  return tuple(rules)


def to_ours(kind: str, x: np.ndarray) -> np.ndarray:
  """A torch-layout tensor in our (channels-last) layout."""
  if kind == "conv3d":  # [O, I, t, h, w] -> [t, h, w, I, O]
    return np.ascontiguousarray(rearrange(x, "o i t h w -> t h w i o"))
  if kind == "conv2d":  # [O, I, h, w] -> [h, w, I, O]
    return np.ascontiguousarray(rearrange(x, "o i h w -> h w i o"))
  if kind == "pointwise":  # 1x1 Conv2d [O, I, 1, 1] -> Linear kernel [I, O]
    return np.ascontiguousarray(rearrange(x, "o i 1 1 -> i o"))
  if kind in ("gamma3d", "gamma2d"):  # [C, 1, 1, 1] or [C, 1, 1] -> [C]
    return x.reshape(x.shape[0])
  return x


def to_torch(kind: str, x: np.ndarray) -> np.ndarray:
  """Inverse of `to_ours`."""
  if kind == "conv3d":
    return np.ascontiguousarray(rearrange(x, "t h w i o -> o i t h w"))
  if kind == "conv2d":
    return np.ascontiguousarray(rearrange(x, "h w i o -> o i h w"))
  if kind == "pointwise":
    return np.ascontiguousarray(rearrange(x, "i o -> o i 1 1"))
  if kind == "gamma3d":
    return x.reshape(-1, 1, 1, 1)
  if kind == "gamma2d":
    return x.reshape(-1, 1, 1)
  return x
