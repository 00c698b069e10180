"""Load and save the SAMA DiT as PyTorch checkpoints (diffusers or official layout).

    model, config = load_torch_dit("Wan2.1-T2V-1.3B-Diffusers/transformer")
    model, config = load_torch_dit("SAMA-14B.safetensors")           # official naming
    save_torch_dit(model, config, "out/transformer", layout="diffusers")

Layouts:
  diffusers  a `WanTransformer3DModel` folder: config.json + safetensors (sharded + index
             when large), which diffusers loads unchanged. SAMA's modules are stored
             beside, in their own `sama_modules.safetensors`, under their released names.
  official   one safetensors file in the original Wan / DiffSynth / SAMA naming.
"""

from __future__ import annotations

import math
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sama_jax.config import model_config
from sama_jax.convert import names as N
from sama_jax.convert import safetensors_io as io
from sama_jax.convert.trees import flatten, merge_filled
from sama_jax.models.sama import SamaDiT, SemanticHead, SemanticProjector

LAYOUTS = ("diffusers", "official")
WAN_HEAD_DIM = 128  # every published Wan2.1 DiT; the official naming does not record heads


def detect_layout(names) -> str:
  if "condition_embedder.time_proj.weight" in names:
    return "diffusers"
  if "time_projection.1.weight" in names:
    return "official"
  raise ValueError("checkpoint is neither a diffusers WanTransformer3DModel (no "
                   "'condition_embedder.time_proj.weight') nor an original Wan / SAMA DiT (no "
                   f"'time_projection.1.weight'); first keys: {sorted(names)[:5]}")


def _model_config_of(config) -> ml_collections.ConfigDict:
  return config.model if "model" in config else config


def infer_config(path: str, num_heads: int | None = None) -> ml_collections.ConfigDict:
  """The model config of a checkpoint: from diffusers' config.json where there is one,
  else from tensor shapes. The official naming does not record the head count: it is
  `num_heads`, or dim / 128 as in every published Wan2.1."""
  names = io.index_files(path)
  layout = detect_layout(names)
  config_json = os.path.join(path, "config.json") if os.path.isdir(path) else None
  if config_json and os.path.isfile(config_json):
    import json
    with open(config_json) as f:
      return _config_from_diffusers(json.load(f))
  return _config_from_shapes(io.tensor_shapes(names), layout, num_heads)


def _config_from_shapes(shapes: dict, layout: str, num_heads: int | None) -> ml_collections.ConfigDict:
  rule = {r.ours: r.torch_name(layout) for r in N.DIT_RULES}
  shape = lambda ours: shapes[rule[ours].format(i=0)]
  dim, in_channels, *patch = shape("dit.patch_embedding.kernel")
  blocks = {int(m.group(1)) for n in shapes if (m := re.match(r"blocks\.(\d+)\.", n))}
  out_channels = shape("dit.head.proj_out.kernel")[0] // math.prod(patch)
  channel_mode = in_channels == 2 * out_channels
  if num_heads is None and dim % WAN_HEAD_DIM:
    raise ValueError(f"this {layout}-layout checkpoint has width {dim}, not a multiple of Wan's head "
                     f"dim {WAN_HEAD_DIM}, and its naming does not record the head count: pass "
                     "infer_config(path, num_heads=...) or a full config")
  fields = dict(
      dim=dim, num_heads=num_heads or dim // WAN_HEAD_DIM, num_layers=len(blocks), patch_size=tuple(patch),
      ffn_dim=shape("dit.blocks.ffn.proj_in.kernel")[0], out_channels=out_channels,
      in_channels=in_channels // 2 if channel_mode else in_channels,
      source_mode="channel" if channel_mode else "token",
      text_dim=shape("dit.condition_embedder.text_linear_1.kernel")[1],
      freq_dim=shape("dit.condition_embedder.time_linear_1.kernel")[1],
      cross_attn_norm=rule["dit.blocks.norm2.scale"].format(i=0) in shapes,
      qk_norm=rule["dit.blocks.attn1.norm_q.scale"].format(i=0) in shapes)
  if rule["siglip_feat_mlp.fc1.kernel"] in shapes:
    fields["semantic_hidden_dim"], fields["semantic_dim"] = shape("siglip_feat_mlp.fc1.kernel")
  return model_config(**fields)


def _config_from_diffusers(d: dict) -> ml_collections.ConfigDict:
  if d.get("image_dim") or d.get("added_kv_proj_dim"):
    raise ValueError("this is an image-to-video Wan transformer (image_dim / added_kv_proj_dim "
                     "set); SAMA builds on the text-to-video DiT")
  in_channels, out_channels = d["in_channels"], d.get("out_channels") or d["in_channels"]
  channel_mode = in_channels == 2 * out_channels
  fields = dict(
      dim=d["num_attention_heads"] * d["attention_head_dim"], num_heads=d["num_attention_heads"],
      num_layers=d["num_layers"], ffn_dim=d["ffn_dim"], patch_size=tuple(d["patch_size"]),
      in_channels=in_channels // 2 if channel_mode else in_channels, out_channels=out_channels,
      source_mode="channel" if channel_mode else "token", text_dim=d["text_dim"],
      freq_dim=d["freq_dim"], eps=d["eps"], cross_attn_norm=d["cross_attn_norm"],
      qk_norm=d["qk_norm"] is not None, rope_max_len=d.get("rope_max_seq_len", 1024))
  fields.update(d.get("sama_jax", {}))
  fields["patch_size"] = tuple(fields["patch_size"])
  return model_config(**fields)


def _diffusers_config(c) -> dict:
  sama = {k: c[k] for k in ("source_mode", "source_rope", "semantic_rope", "semantic_dim",
                            "semantic_hidden_dim", "num_semantic_tokens", "in_channels")}
  return {
      "_class_name": "WanTransformer3DModel", "_diffusers_version": "0.35.0",
      "patch_size": list(c.patch_size), "num_attention_heads": c.num_heads,
      "attention_head_dim": c.dim // c.num_heads,
      "in_channels": c.in_channels * (2 if c.source_mode == "channel" else 1),
      "out_channels": c.out_channels, "text_dim": c.text_dim, "freq_dim": c.freq_dim,
      "ffn_dim": c.ffn_dim, "num_layers": c.num_layers, "cross_attn_norm": c.cross_attn_norm,
      "qk_norm": "rms_norm_across_heads" if c.qk_norm else None, "eps": c.eps,
      "image_dim": None, "added_kv_proj_dim": None, "rope_max_seq_len": c.rope_max_len,
      "pos_embed_seq_len": None, "sama_jax": sama,
  }


def _fresh_module_params(module: str, config, seed: int) -> dict:
  """Initial values of one of SAMA's modules, for checkpoints that lack it."""
  rngs = nnx.Rngs(seed)
  if module == "segment_embedding":
    return {module: jnp.zeros((config.num_segments, config.dim), jnp.dtype(config.param_dtype))}
  make = {"siglip_feat_mlp": SemanticProjector, "semantic_head": SemanticHead}[module]
  return flatten(nnx.to_pure_dict(nnx.state(make(config, rngs), nnx.Param)), module + ".")


def load_torch_dit(path: str, config=None, *, widen: str = "copy", seed: int = 0, progress=None):
  """Reads a PyTorch DiT checkpoint into a `SamaDiT`; returns (model, model_config).

  path:   a diffusers folder (sharded safetensors + index, or one file), or a single
          .safetensors file in diffusers or official naming (detected from the keys).
  config: a model config (or a config with `.model`); inferred from the checkpoint if None.
          A config whose shapes disagree with the checkpoint is an error naming the tensor.
  widen:  channel-mode config over a plain 16-channel checkpoint: the extra patch-embedding
          channels "copy" the old ones or are "zeros" (then all are scaled by sqrt(1/2)).
  SAMA modules the checkpoint lacks are freshly initialised (type embedding at zero).
  Every tensor of the checkpoint must be used; unknown tensors are an error.
  progress: called with each tensor's name once it is read (e.g. to advance a bar).
  Tensors are read one at a time (`torch_dit_params`), so the host holds the finished
  parameters plus one parameter's worth of staging, never a second model copy.
  """
  config = infer_config(path) if config is None else _model_config_of(config)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: SamaDiT(config, nnx.Rngs(seed))))
  values = {ours: jnp.asarray(x) for ours, x in torch_dit_params(path, config, widen=widen, seed=seed,
                                                                   progress=progress)}
  return merge_filled(graphdef, state, values, path), config


def torch_dit_params(path: str, config, *, widen: str = "copy", seed: int = 0, progress=None):
  """Yields (our '.'-joined parameter path, NumPy array in our layout and `param_dtype`),
  one parameter at a time, for every parameter of the `SamaDiT` of `config` (a model
  config): read from the checkpoint at `path`, or fresh for SAMA modules it lacks. The
  caller decides where each goes (host arrays, or shards of a global array). Arguments
  and errors as `load_torch_dit`; the checks on names are made before anything is read.
  A stacked parameter is staged whole (all layers)."""
  names = io.index_files(path)
  layout = detect_layout(names)
  config = _model_config_of(config)
  expected = flatten(nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: SamaDiT(config, nnx.Rngs(seed))))))
  dtype = jnp.dtype(config.param_dtype)
  patch = tuple(config.patch_size)

  present, used, missing_modules = [], set(), set()
  for rule in N.DIT_RULES:
    torch_names = ([rule.torch_name(layout).format(i=i) for i in range(config.num_layers)]
                   if rule.stacked else [rule.torch_name(layout)])
    absent = [n for n in torch_names if n not in names]
    if absent:
      if rule.optional:
        missing_modules.add(rule.ours.split(".")[0])
        continue
      raise KeyError(f"{layout}-layout checkpoint {path!r} lacks {absent[0]!r} "
                     f"(needed for {rule.ours}; config has {config.num_layers} layers)")
    present.append((rule, torch_names))
    used.update(torch_names)
  unused = sorted(set(names) - used)
  if unused:
    raise ValueError(f"{len(unused)} tensors of {path!r} have no place in the SAMA DiT "
                     f"(an image-to-video or otherwise different model?): {unused[:10]}")

  for rule, torch_names in present:
    x = None
    for i, name in enumerate(torch_names):
      t = io.read_tensor(names[name], name)
      if (rule.kind == "patch" and config.source_mode == "channel"
          and t.shape[1] == config.in_channels):
        t, _ = N.widen_patch_weight(t, None, widen)
      t = N.to_ours(rule.kind, t, patch)
      if not rule.stacked:
        x = t
      else:  # filled in place: no list of layers plus a stacked copy
        x = np.empty((len(torch_names), *t.shape), t.dtype) if x is None else x
        x[i] = t
      if progress is not None:
        progress(name)
    want = expected[rule.ours].shape
    if x.shape != tuple(want):
      raise ValueError(f"{torch_names[0]!r} has shape {x.shape} in our layout but the config "
                       f"needs {tuple(want)} for {rule.ours}; the config does not match the checkpoint")
    yield rule.ours, x.astype(dtype, copy=False)
    del x
  for module in sorted(missing_modules):
    for ours, x in _fresh_module_params(module, config, seed).items():
      yield ours, np.asarray(x)


def save_torch_dit(model: SamaDiT, config, out: str, layout: str = "diffusers", *,
                   dtype: str | None = None, max_shard_bytes: int = 5 * 2**30) -> list[str]:
  """Writes the model as a PyTorch checkpoint; returns the files written.

  layout "diffusers": `out` is a folder (config.json + weights, sharded above
  max_shard_bytes) that `WanTransformer3DModel.from_pretrained` reads unchanged; SAMA's
  modules are stored beside in `sama_modules.safetensors` under their released names,
  which `load_torch_dit` reads back. layout "official": `out` is one .safetensors
  file in the original Wan / SAMA naming. dtype casts on the way out (e.g. "bfloat16").
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r}; expected one of {LAYOUTS}")
  config = _model_config_of(config)
  if config.get("prediction", "velocity") != "velocity":
    raise ValueError(f"model.prediction={config.prediction!r}: PyTorch Wan / SAMA code reads the head "
                     "output as a velocity, so only velocity-predicting models can be exported")
  if config.get("source_skip", False):
    raise ValueError("model.source_skip=True: PyTorch Wan / SAMA code does not add the source to the "
                     "head output, so a source-skip model cannot be exported")
  if config.get("scale_input", False):
    raise ValueError("model.scale_input=True: PyTorch Wan / SAMA code feeds the noisy latents unscaled, "
                     "so such a model cannot be exported")
  if config.get("rope_theta", 10000.0) != 10000.0:
    raise ValueError(f"model.rope_theta={config.rope_theta}: PyTorch Wan / SAMA code rotates with base "
                     "10000 (not a config field there), so such a model cannot be exported")
  flat = flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  patch = tuple(config.patch_size)
  tensors, sama = {}, {}
  for rule in N.DIT_RULES:
    x = np.asarray(jax.device_get(flat[rule.ours]))
    if dtype is not None:
      x = x.astype(jnp.dtype(dtype))
    # diffusers keeps only its own tensors in its weights files; SAMA's go beside.
    into = sama if rule.optional and layout == "diffusers" else tensors
    if rule.stacked:
      for i in range(config.num_layers):
        into[rule.torch_name(layout).format(i=i)] = N.to_torch(rule.kind, x[i], patch)
    else:
      into[rule.torch_name(layout)] = N.to_torch(rule.kind, x, patch)
  if layout == "official":
    return io.write_official(tensors, out)
  files = io.write_sharded(tensors, out, max_shard_bytes)
  io.write_file(sama, os.path.join(out, io.SAMA_WEIGHTS))
  io.write_json(_diffusers_config(config), os.path.join(out, "config.json"))
  return files + [os.path.join(out, io.SAMA_WEIGHTS)]
