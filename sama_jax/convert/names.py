"""The declarative parameter-name table for the DiT, used in both directions.

One `Rule` per tensor: our path, its diffusers (`WanTransformer3DModel`) name, its name in
the original Wan / DiffSynth / official SAMA checkpoints, and its layout kind. `{i}`
marks the block index of a parameter we store stacked along a leading `layers` axis.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from einops import rearrange


@dataclasses.dataclass(frozen=True)
class Rule:
  ours: str  # '.'-joined path in our parameter tree
  diffusers: str
  official: str
  kind: str  # a key of LAYOUTS
  optional: bool = False  # SAMA's own modules: absent from a plain Wan checkpoint

  @property
  def stacked(self) -> bool:
    return "{i}" in self.diffusers

  def torch_name(self, layout: str) -> str:
    return {"diffusers": self.diffusers, "official": self.official}[layout]


def _linear(prefix_ours, diffusers, official, optional=False):
  return [Rule(f"{prefix_ours}.kernel", f"{diffusers}.weight", f"{official}.weight", "linear", optional),
          Rule(f"{prefix_ours}.bias", f"{diffusers}.bias", f"{official}.bias", "copy", optional)]


def _norm(prefix_ours, diffusers, official, bias=True, optional=False):
  rules = [Rule(f"{prefix_ours}.scale", f"{diffusers}.weight", f"{official}.weight", "copy", optional)]
  if bias:
    rules.append(Rule(f"{prefix_ours}.bias", f"{diffusers}.bias", f"{official}.bias", "copy", optional))
  return rules


def _attention(ours, diffusers, official):
  rules = []
  for o, d, w in (("to_q", "to_q", "q"), ("to_k", "to_k", "k"), ("to_v", "to_v", "v"), ("to_out", "to_out.0", "o")):
    rules += _linear(f"{ours}.{o}", f"{diffusers}.{d}", f"{official}.{w}")
  rules += _norm(f"{ours}.norm_q", f"{diffusers}.norm_q", f"{official}.norm_q", bias=False)
  rules += _norm(f"{ours}.norm_k", f"{diffusers}.norm_k", f"{official}.norm_k", bias=False)
  return rules


DIT_RULES: tuple[Rule, ...] = tuple(
    [Rule("dit.patch_embedding.kernel", "patch_embedding.weight", "patch_embedding.weight", "patch"),
     Rule("dit.patch_embedding.bias", "patch_embedding.bias", "patch_embedding.bias", "copy")]
    + _linear("dit.condition_embedder.time_linear_1", "condition_embedder.time_embedder.linear_1", "time_embedding.0")
    + _linear("dit.condition_embedder.time_linear_2", "condition_embedder.time_embedder.linear_2", "time_embedding.2")
    + _linear("dit.condition_embedder.time_proj", "condition_embedder.time_proj", "time_projection.1")
    + _linear("dit.condition_embedder.text_linear_1", "condition_embedder.text_embedder.linear_1", "text_embedding.0")
    + _linear("dit.condition_embedder.text_linear_2", "condition_embedder.text_embedder.linear_2", "text_embedding.2")
    + _attention("dit.blocks.attn1", "blocks.{i}.attn1", "blocks.{i}.self_attn")
    + _attention("dit.blocks.attn2", "blocks.{i}.attn2", "blocks.{i}.cross_attn")
    # The cross-attention LayerNorm is diffusers' norm2 and the original's norm3.
    + _norm("dit.blocks.norm2", "blocks.{i}.norm2", "blocks.{i}.norm3")
    + _linear("dit.blocks.ffn.proj_in", "blocks.{i}.ffn.net.0.proj", "blocks.{i}.ffn.0")
    + _linear("dit.blocks.ffn.proj_out", "blocks.{i}.ffn.net.2", "blocks.{i}.ffn.2")
    + [Rule("dit.blocks.modulation", "blocks.{i}.scale_shift_table", "blocks.{i}.modulation", "table")]
    + _linear("dit.head.proj_out", "proj_out", "head.head")
    + [Rule("dit.head.modulation", "scale_shift_table", "head.modulation", "table")]
    # SAMA's modules keep the released checkpoint's names in both layouts.
    + [Rule("segment_embedding", "segment_embedding.weight", "segment_embedding.weight", "copy", True)]
    + _norm("siglip_feat_mlp.norm", "siglip_feat_mlp.norm", "siglip_feat_mlp.norm", optional=True)
    + _linear("siglip_feat_mlp.fc1", "siglip_feat_mlp.fc1", "siglip_feat_mlp.fc1", optional=True)
    + _linear("siglip_feat_mlp.fc2", "siglip_feat_mlp.fc2", "siglip_feat_mlp.fc2", optional=True)
    + _norm("semantic_head.norm", "semantic_head.norm", "semantic_head.norm", optional=True)
    + _linear("semantic_head.proj", "semantic_head.proj", "semantic_head.proj", optional=True)
)

OPTIONAL_MODULES = ("segment_embedding", "siglip_feat_mlp", "semantic_head")


def to_ours(kind: str, x: np.ndarray, patch: tuple[int, int, int]) -> np.ndarray:
  """A torch-layout tensor in our layout."""
  if kind == "linear":  # torch Linear weight [out, in] -> kernel [in, out]
    return np.ascontiguousarray(x.T)
  if kind == "patch":  # Conv3d [D, C, pt, ph, pw] -> Linear over patches [(pt ph pw C), D]
    return rearrange(x, "o c t h w -> (t h w c) o")
  if kind == "table":  # [1, n, D] -> [n, D]
    return x.reshape(x.shape[-2:])
  return x


def to_torch(kind: str, x: np.ndarray, patch: tuple[int, int, int]) -> np.ndarray:
  """Inverse of `to_ours`."""
  if kind == "linear":
    return np.ascontiguousarray(x.T)
  if kind == "patch":
    pt, ph, pw = patch
    c = x.shape[0] // math.prod(patch)
    return np.ascontiguousarray(rearrange(x, "(t h w c) o -> o c t h w", t=pt, h=ph, w=pw, c=c))
  if kind == "table":
    return x[None]
  return x


def widen_patch_weight(weight: np.ndarray, bias: np.ndarray, fill: str = "copy"):
  """Plain-Wan patch embedding [D, C, ...] -> channel-mode [D, 2C, ...] (SAMA_METHOD.md §2.3):
  new channels copy the old weight (or are zero), then the whole weight is scaled by sqrt(1/2)."""
  if fill not in ("copy", "zeros"):
    raise ValueError(f"fill={fill!r}; expected 'copy' or 'zeros'")
  extra = weight if fill == "copy" else np.zeros_like(weight)
  return np.concatenate([weight, extra], axis=1) * np.sqrt(0.5).astype(weight.dtype), bias
