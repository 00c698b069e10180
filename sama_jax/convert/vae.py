"""Load and save the Wan2.1 VAE as PyTorch checkpoints (diffusers or original layout).

    vae, config = load_torch_vae("Wan2.1-T2V-1.3B-Diffusers/vae")   # AutoencoderKLWan folder
    vae, config = load_torch_vae("Wan2.1_VAE.safetensors")          # original naming
    save_torch_vae(vae, config, "out/vae", layout="diffusers")

The original release is a torch pickle (`Wan2.1_VAE.pth`); turn it into safetensors once with
`python -m sama_jax.convert.torch_to_safetensors Wan2.1_VAE.pth Wan2.1_VAE.safetensors`.

Layouts:
  diffusers  an `AutoencoderKLWan` folder: config.json + diffusion_pytorch_model.safetensors.
  official   one safetensors file in the original Wan naming (see vae_names.py). It does not
             record the latent statistics: z_dim 16 gets Wan2.1's; any other z_dim needs a config.
"""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sama_jax.convert import safetensors_io as io
from sama_jax.convert.trees import flatten, merge_filled
from sama_jax.convert import vae_names as N
from sama_jax.models.vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, WanVAE, vae_config

LAYOUTS = ("diffusers", "official")
# Per layout: the encoder's first conv, its flat block list, a residual block's first conv,
# post_quant_conv and the decoder's last conv: enough to read the architecture off the shapes.
_LANDMARKS = {
    "diffusers": ("encoder.conv_in.weight", "encoder.down_blocks", "conv1.weight",
                  "post_quant_conv.weight", "decoder.conv_out.weight"),
    "official": ("encoder.conv1.weight", "encoder.downsamples", "residual.2.weight",
                 "conv2.weight", "decoder.head.2.weight"),
}


def detect_layout(names) -> str:
  for layout, (conv_in, *_) in _LANDMARKS.items():
    if conv_in in names:
      return layout
  raise ValueError("checkpoint is neither a diffusers AutoencoderKLWan (no 'encoder.conv_in.weight') nor "
                   f"an original Wan VAE (no 'encoder.conv1.weight'); first keys: {sorted(names)[:5]}")


def infer_vae_config(path: str) -> ml_collections.ConfigDict:
  """The VAE config of a checkpoint: from diffusers' config.json where there is one, else
  from tensor shapes (plus Wan2.1's latent statistics when z_dim is 16)."""
  config_json = os.path.join(path, "config.json") if os.path.isdir(path) else None
  if config_json and os.path.isfile(config_json):
    with open(config_json) as f:
      return _config_from_diffusers(json.load(f))
  names = io.index_files(path)
  return _config_from_shapes(io.tensor_shapes(names), detect_layout(names), path)


def _config_from_diffusers(d: dict) -> ml_collections.ConfigDict:
  if d.get("is_residual") or d.get("patch_size") not in (None, 1):
    raise ValueError("this AutoencoderKLWan has is_residual / patch_size set: a Wan2.2 VAE, not Wan2.1")
  if d.get("attn_scales"):
    raise ValueError(f"attn_scales={d['attn_scales']}: attention inside the encoder/decoder levels is "
                     "not part of the Wan2.1 VAE and is not implemented")
  defaults = vae_config()
  get = lambda key, ours=None: d.get(key, defaults[ours or key])
  return vae_config(
      base_dim=get("base_dim"), decoder_base_dim=d.get("decoder_base_dim"), z_dim=get("z_dim"),
      dim_mult=tuple(get("dim_mult")), num_res_blocks=get("num_res_blocks"),
      temporal_downsample=tuple(get("temperal_downsample", "temporal_downsample")),
      in_channels=get("in_channels"), out_channels=get("out_channels"),
      latents_mean=tuple(get("latents_mean")), latents_std=tuple(get("latents_std")))


def _config_from_shapes(shapes: dict, layout: str, path: str) -> ml_collections.ConfigDict:
  conv_in, down, resnet_conv, post_quant, conv_out = _LANDMARKS[layout]
  base_dim, in_channels = shapes[conv_in][:2]
  levels, temporal = [[]], []  # output widths of each level's residual blocks; resampler kinds
  for n in sorted({int(m.group(1)) for k in shapes if (m := re.match(rf"{re.escape(down)}\.(\d+)\.", k))}):
    if f"{down}.{n}.resample.1.weight" in shapes:
      temporal.append(f"{down}.{n}.time_conv.weight" in shapes)
      levels.append([])
    elif f"{down}.{n}.{resnet_conv}" in shapes:
      levels[-1].append(shapes[f"{down}.{n}.{resnet_conv}"][0])
    else:
      raise ValueError(f"{path!r}: block {down}.{n} is neither a residual block nor a resampler "
                       "(attention inside the levels, or a Wan2.2 VAE?); only Wan2.1 is supported")
  dim_mult = tuple(level[-1] // base_dim for level in levels)
  z_dim = shapes[post_quant][0]
  out_channels, last_width = shapes[conv_out][:2]
  decoder_base_dim = last_width // dim_mult[0]
  fields = dict(base_dim=base_dim, decoder_base_dim=None if decoder_base_dim == base_dim else decoder_base_dim,
                z_dim=z_dim, dim_mult=dim_mult,
                num_res_blocks=len(levels[0]), temporal_downsample=tuple(temporal),
                in_channels=in_channels, out_channels=out_channels)
  if z_dim != len(WAN21_LATENTS_MEAN):
    raise ValueError(f"{path!r} has z_dim {z_dim} and its naming does not record latents_mean/std; "
                     "pass load_torch_vae(path, config=vae_config(..., latents_mean=..., latents_std=...))")
  return vae_config(**fields, latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD)


def _diffusers_config(c) -> dict:
  return {
      "_class_name": "AutoencoderKLWan", "_diffusers_version": "0.35.0",
      "base_dim": c.base_dim, "decoder_base_dim": c.decoder_base_dim, "z_dim": c.z_dim,
      "dim_mult": list(c.dim_mult), "num_res_blocks": c.num_res_blocks, "attn_scales": [],
      "temperal_downsample": list(c.temporal_downsample), "dropout": 0.0,
      "latents_mean": list(c.latents_mean), "latents_std": list(c.latents_std), "is_residual": False,
      "in_channels": c.in_channels, "out_channels": c.out_channels, "patch_size": None,
      "scale_factor_temporal": 4, "scale_factor_spatial": 2 ** (len(c.dim_mult) - 1),
  }


def load_torch_vae(path: str, config=None):
  """Reads a PyTorch Wan2.1 VAE checkpoint into a `WanVAE`; returns (vae, vae_config).

  path:   a diffusers `AutoencoderKLWan` folder, or one .safetensors file in diffusers or
          original naming (detected from the keys).
  config: a VAE config (or a config with `.vae`); inferred from the checkpoint if None.
          A config whose shapes disagree with the checkpoint is an error naming the tensor.
  Every tensor of the checkpoint must be used; unknown tensors are an error.
  """
  names = io.index_files(path)
  layout = detect_layout(names)
  if config is None:
    config = infer_vae_config(path)
  elif "vae" in config:
    config = config.vae
  abstract = nnx.eval_shape(lambda: WanVAE(config, nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  expected = flatten(nnx.to_pure_dict(state))
  dtype = jnp.dtype(config.param_dtype)

  values = {}
  for rule in N.vae_rules(config):
    name = rule.torch_name(layout)
    if name not in names:
      raise KeyError(f"{layout}-layout checkpoint {path!r} lacks {name!r} (needed for {rule.ours}); "
                     "the config does not match the checkpoint")
    x = N.to_ours(rule.kind, io.read_tensor(names[name], name))
    want = tuple(expected[rule.ours].shape)
    if x.shape != want:
      raise ValueError(f"{name!r} has shape {x.shape} in our layout but the config needs {want} for "
                       f"{rule.ours}; the config does not match the checkpoint")
    values[rule.ours] = jnp.asarray(x, dtype)

  unused = sorted(set(names) - {rule.torch_name(layout) for rule in N.vae_rules(config)})
  if unused:
    raise ValueError(f"{len(unused)} tensors of {path!r} have no place in a Wan2.1 VAE with this config "
                     f"(a Wan2.2 VAE, or a config with fewer blocks?): {unused[:10]}")
  return merge_filled(graphdef, state, values, path), config


def save_torch_vae(vae: WanVAE, config, out: str, layout: str = "diffusers", *,
                   dtype: str | None = None) -> list[str]:
  """Writes the VAE as a PyTorch checkpoint; returns the files written.

  layout "diffusers": `out` is a folder that `AutoencoderKLWan.from_pretrained` reads.
  layout "official": `out` is one .safetensors file in the original Wan naming.
  dtype casts on the way out (e.g. "bfloat16").
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r}; expected one of {LAYOUTS}")
  config = config.vae if "vae" in config else config
  flat = flatten(nnx.to_pure_dict(nnx.state(vae, nnx.Param)))
  tensors = {}
  for rule in N.vae_rules(config):
    x = np.asarray(jax.device_get(flat[rule.ours]))
    if dtype is not None:
      x = x.astype(jnp.dtype(dtype))
    tensors[rule.torch_name(layout)] = N.to_torch(rule.kind, x)
  if layout == "official":
    return io.write_official(tensors, out)
  os.makedirs(out, exist_ok=True)
  file = os.path.join(out, io.DIFFUSERS_WEIGHTS)
  io.write_file(tensors, file)
  io.write_json(_diffusers_config(config), os.path.join(out, "config.json"))
  return [file]
