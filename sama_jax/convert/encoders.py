"""Load the text and vision encoders from transformers checkpoint folders.

    umt5, config = load_torch_umt5("Wan2.1-T2V-1.3B-Diffusers/text_encoder")   # UMT5EncoderModel
    umt5, config = load_torch_umt5("umt5-xxl", dtype="bfloat16")               # full UMT5Model
    siglip, config = load_torch_siglip("siglip-so400m-patch14-384")           # full SiglipModel

A folder holds config.json plus `model.safetensors`, or shards with
`model.safetensors.index.json`. The config is read with transformers' own config classes
(so keys the file leaves out take transformers' defaults); keyword overrides set our
extra fields (dtype, text_len, semantic_grid, ...). Every tensor must find a place or be
explicitly ignorable (the decoder and LM head of a full umT5, the text tower and logit
scale/bias of a full SigLIP); anything else is an error.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from sama_jax.convert import encoder_names as N
from sama_jax.convert import safetensors_io as io
from sama_jax.models.siglip import SiglipVision, siglip_config
from sama_jax.models.umt5 import UMT5Encoder, umt5_config

TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # transformers' names of GELU with the tanh approximation


def _transformers_config(path: str):
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path!r} is not a folder; expected a transformers checkpoint folder with "
                            "config.json and model.safetensors (or shards + model.safetensors.index.json)")
  if not os.path.isfile(os.path.join(path, "config.json")):
    raise FileNotFoundError(f"{path!r} has no config.json; a transformers checkpoint folder needs it "
                            "beside the safetensors weights")
  from transformers import AutoConfig  # config classes only; torch is not needed here
  return AutoConfig.from_pretrained(path)


def _square(value, name: str) -> int:
  sizes = [value] * 2 if isinstance(value, int) else list(value)
  if len(sizes) != 2 or sizes[0] != sizes[1]:
    raise ValueError(f"{name}={value!r}; only square images and patches are supported")
  return int(sizes[0])


def umt5_config_from_transformers(hf, **overrides):
  """Our umT5 config from a transformers UMT5Config (plus our own fields in `overrides`)."""
  if hf.model_type != "umt5":
    raise ValueError(f"config.json has model_type {hf.model_type!r}; expected 'umt5' (plain T5 shares "
                     "one relative position bias across layers and is not supported)")
  if not (hf.is_gated_act and hf.dense_act_fn in TANH_GELUS):
    raise ValueError(f"feed_forward_proj={hf.feed_forward_proj!r} (activation {hf.dense_act_fn!r}); "
                     "only the gated tanh-GELU FFN of umT5 ('gated-gelu') is supported")
  fields = dict(vocab_size=hf.vocab_size, d_model=hf.d_model, d_kv=hf.d_kv, num_heads=hf.num_heads,
                d_ff=hf.d_ff, num_layers=hf.num_layers, num_buckets=hf.relative_attention_num_buckets,
                max_distance=hf.relative_attention_max_distance, eps=hf.layer_norm_epsilon)
  return umt5_config(**{**fields, **overrides})


def siglip_config_from_transformers(hf, **overrides):
  """Our SigLIP config from a transformers SiglipConfig or SiglipVisionConfig."""
  if hf.model_type == "siglip":
    hf = hf.vision_config
  if hf.model_type != "siglip_vision_model":
    raise ValueError(f"config.json has model_type {hf.model_type!r}; expected 'siglip' or "
                     "'siglip_vision_model'")
  if hf.hidden_act not in TANH_GELUS:
    raise ValueError(f"hidden_act={hf.hidden_act!r}; SigLIP's tanh GELU ({TANH_GELUS}) is supported")
  fields = dict(hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
                num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
                patch_size=_square(hf.patch_size, "patch_size"),
                image_size=_square(hf.image_size, "image_size"),
                num_channels=hf.num_channels, eps=hf.layer_norm_eps, use_head=bool(hf.vision_use_head))
  fields = {**fields, **overrides}
  if not fields["use_head"] and "global_token" not in overrides:
    fields["global_token"] = "mean"  # no MAP head to pool with: the mean of the patches instead
  return siglip_config(**fields)


def _fill(make, config, rules, names: dict, path: str, ignorable, num_layers: int):
  """Builds `make(config, rngs)` abstractly and fills every parameter from the checkpoint.

  names: rule-side tensor name -> (file, name in the file). Raises KeyError for a missing
  tensor, ValueError for a shape mismatch or for tensors that are neither used nor ignorable.
  """
  abstract = nnx.eval_shape(lambda: make(config, nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  expected = traverse_util.flatten_dict(nnx.to_pure_dict(state), sep=".")
  dtype = jnp.dtype(config.param_dtype)
  values, used = {}, set()
  for rule in rules:
    wanted = [rule.torch.format(i=i) for i in range(num_layers)] if rule.stacked else [rule.torch]
    arrays = []
    for want in wanted:
      present = [n for n in (want, *rule.aliases) if n in names]
      if not present:
        raise KeyError(f"checkpoint {path!r} lacks {want!r} (needed for {rule.ours}; "
                       f"config has {num_layers} layers)")
      used.update(present)  # tied duplicates (aliases) are the same tensor: read one
      file, name = names[present[0]]
      arrays.append(N.to_ours(rule.kind, io.read_tensor(file, name)))
    x = np.stack(arrays) if rule.stacked else arrays[0]
    if x.shape != tuple(expected[rule.ours].shape):
      raise ValueError(f"{wanted[0]!r} has shape {x.shape} in our layout but the config needs "
                       f"{tuple(expected[rule.ours].shape)} for {rule.ours}; config.json does not match "
                       "the weights")
    values[rule.ours] = jnp.asarray(x, dtype)
  unused = sorted(names[n][1] for n in set(names) - used if not n.startswith(ignorable))
  if unused:
    raise ValueError(f"{len(unused)} tensors of {path!r} have no place in {make.__name__}: {unused[:10]}")
  left = sorted(set(expected) - set(values))
  if left:
    raise ValueError(f"parameters not filled from {path!r}: {left[:10]}")
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(values, sep="."))
  return nnx.merge(graphdef, state)


def load_torch_umt5(path: str, **overrides):
  """Reads a transformers umT5 folder (UMT5EncoderModel, or a full UMT5Model /
  UMT5ForConditionalGeneration whose decoder and LM head are ignored) into a `UMT5Encoder`.

  overrides: fields of `umt5_config` not in config.json (dtype, param_dtype, text_len, remat,
  scan_layers). Returns (module, config).
  """
  config = umt5_config_from_transformers(_transformers_config(path), **overrides)
  names = {n: (file, n) for n, file in io.index_files(path).items()}
  module = _fill(UMT5Encoder, config, N.UMT5_RULES, names, path, N.UMT5_IGNORED_PREFIXES, config.num_layers)
  return module, config


def load_torch_siglip(path: str, **overrides):
  """Reads a transformers SigLIP folder (SiglipVisionModel, or a full SiglipModel whose text
  tower and logit scale/bias are ignored) into a `SiglipVision`.

  overrides: fields of `siglip_config` not in config.json (semantic_grid, global_token,
  dtype, attention, ...). use_head=False drops a checkpoint's MAP head. Returns (module, config).
  """
  config = siglip_config_from_transformers(_transformers_config(path), **overrides)
  names = {}
  for name, file in io.index_files(path).items():
    # Vision tensors sit under vision_model. in SiglipModel (and older SiglipVisionModel saves).
    names[name.removeprefix(N.SIGLIP_PREFIX)] = (file, name)
  rules, ignorable = N.SIGLIP_RULES, N.SIGLIP_IGNORED_PREFIXES
  if config.use_head:
    rules = rules + N.SIGLIP_HEAD_RULES
  else:
    ignorable = ignorable + ("head.",)
  module = _fill(SiglipVision, config, rules, names, path, ignorable, config.num_layers)
  return module, config
