"""The declarative parameter-name tables for the text and vision encoders, used in both
directions: umT5 (transformers `UMT5EncoderModel` / `UMT5Model`) and the SigLIP vision tower
(transformers `SiglipVisionModel` / `SiglipModel.vision_model`).

One `TorchRule` per tensor: our path, its transformers name and its layout kind. `{i}`
marks the layer index of a parameter we store stacked along a leading `layers` axis.
SigLIP names are written without the `vision_model.` prefix that full `SiglipModel`
checkpoints (and older `SiglipVisionModel` saves) put in front; the loader strips it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from einops import rearrange


@dataclasses.dataclass(frozen=True)
class TorchRule:
  ours: str  # '.'-joined path in our parameter tree
  torch: str
  kind: str  # "copy" | "linear" | "patch" | "probe"
  aliases: tuple[str, ...] = ()  # other names of the same (tied) tensor, read if `torch` is absent

  @property
  def stacked(self) -> bool:
    return "{i}" in self.torch


def _linear(ours, torch, bias=True):
  rules = [TorchRule(f"{ours}.kernel", f"{torch}.weight", "linear")]
  if bias:
    rules.append(TorchRule(f"{ours}.bias", f"{torch}.bias", "copy"))
  return rules


def _layer_norm(ours, torch):
  return [TorchRule(f"{ours}.scale", f"{torch}.weight", "copy"),
          TorchRule(f"{ours}.bias", f"{torch}.bias", "copy")]


_T5_BLOCK = "encoder.block.{i}.layer"

UMT5_RULES: tuple[TorchRule, ...] = tuple(
    # UMT5EncoderModel ties encoder.embed_tokens to shared; saves keep either or both.
    [TorchRule("embedding", "shared.weight", "copy", aliases=("encoder.embed_tokens.weight",)),
     TorchRule("blocks.attn_norm.scale", f"{_T5_BLOCK}.0.layer_norm.weight", "copy"),
     TorchRule("blocks.attn.relative_bias", f"{_T5_BLOCK}.0.SelfAttention.relative_attention_bias.weight",
               "copy")]
    + [r for p in "qkvo" for r in _linear(f"blocks.attn.{p}", f"{_T5_BLOCK}.0.SelfAttention.{p}", bias=False)]
    + [TorchRule("blocks.ffn_norm.scale", f"{_T5_BLOCK}.1.layer_norm.weight", "copy")]
    + [r for w in ("wi_0", "wi_1", "wo")
       for r in _linear(f"blocks.ffn.{w}", f"{_T5_BLOCK}.1.DenseReluDense.{w}", bias=False)]
    + [TorchRule("final_norm.scale", "encoder.final_layer_norm.weight", "copy")]
)

# Parts of a full UMT5Model / UMT5ForConditionalGeneration that the encoder does not use.
UMT5_IGNORED_PREFIXES = ("decoder.", "lm_head.")

_SIGLIP_LAYER = "encoder.layers.{i}"

SIGLIP_RULES: tuple[TorchRule, ...] = tuple(
    [TorchRule("patch_embedding.kernel", "embeddings.patch_embedding.weight", "patch"),
     TorchRule("patch_embedding.bias", "embeddings.patch_embedding.bias", "copy"),
     TorchRule("position_embedding", "embeddings.position_embedding.weight", "copy")]
    + _layer_norm("layers.layer_norm1", f"{_SIGLIP_LAYER}.layer_norm1")
    + [r for p in ("q_proj", "k_proj", "v_proj", "out_proj")
       for r in _linear(f"layers.self_attn.{p}", f"{_SIGLIP_LAYER}.self_attn.{p}")]
    + _layer_norm("layers.layer_norm2", f"{_SIGLIP_LAYER}.layer_norm2")
    + _linear("layers.mlp.fc1", f"{_SIGLIP_LAYER}.mlp.fc1")
    + _linear("layers.mlp.fc2", f"{_SIGLIP_LAYER}.mlp.fc2")
    + _layer_norm("post_layernorm", "post_layernorm")
)

# The MAP head, present when the vision config has vision_use_head.
SIGLIP_HEAD_RULES: tuple[TorchRule, ...] = tuple(
    [TorchRule("head.probe", "head.probe", "probe"),
     TorchRule("head.in_proj.kernel", "head.attention.in_proj_weight", "linear"),
     TorchRule("head.in_proj.bias", "head.attention.in_proj_bias", "copy")]
    + _linear("head.out_proj", "head.attention.out_proj")
    + _layer_norm("head.layernorm", "head.layernorm")
    + _linear("head.mlp.fc1", "head.mlp.fc1")
    + _linear("head.mlp.fc2", "head.mlp.fc2")
)

SIGLIP_PREFIX = "vision_model."
# Parts of a full SiglipModel that the vision tower does not use: the text tower and the
# contrastive logit scale and bias.
SIGLIP_IGNORED_PREFIXES = ("text_model.", "logit_scale", "logit_bias")


def to_ours(kind: str, x: np.ndarray) -> np.ndarray:
  """A transformers-layout tensor in our layout."""
  if kind == "linear":  # torch Linear weight [out, in] -> kernel [in, out]
    return np.ascontiguousarray(x.T)
  if kind == "patch":  # Conv2d [D, C, p, q] -> Linear over channels-last patches [(p q C), D]
    return np.ascontiguousarray(rearrange(x, "d c p q -> (p q c) d"))
  if kind == "probe":  # [1, 1, D] -> [1, D]
    return x.reshape(x.shape[-2:])
  return x


def to_torch(kind: str, x: np.ndarray, patch_size: int = 0, channels: int = 3) -> np.ndarray:
  """Inverse of `to_ours` (`patch` needs the patch size and channel count)."""
  if kind == "linear":
    return np.ascontiguousarray(x.T)
  if kind == "patch":
    return np.ascontiguousarray(rearrange(x, "(p q c) d -> d c p q", p=patch_size, q=patch_size, c=channels))
  if kind == "probe":
    return x[None]
  return x
