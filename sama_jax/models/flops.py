"""Analytic FLOP count of the SAMA DiT, the numerator of model-FLOPs utilisation (MFU).

Counts matmul FLOPs (2·m·n·k each), the MFU convention: elementwise work, norms and
softmax are left out, and so is rematerialisation (it is not model work). The backward
pass costs two matmuls per forward matmul (input and weight gradients), except where the
input is data that needs no gradient (latents, sinusoid, text, raw SigLIP tokens): there
only the weight gradient is computed.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class FlopCount:
  forward: float
  backward: float
  breakdown: dict  # forward FLOPs per part

  @property
  def train(self) -> float:
    """One forward + backward (a training step without optimizer work)."""
    return self.forward + self.backward


def dit_flops(config, *, batch: int, frames: int, height: int, width: int, text_len: int,
              source_frames: int | None = None, num_semantic: int = 0) -> FlopCount:
  """FLOPs of one call of `SamaDiT` on latents [batch, frames, height, width, C].

  source_frames: frames of the source latents (token mode), None for no source.
  num_semantic: semantic tokens in the sequence (0 for none).
  """
  c = config
  pt, ph, pw = c.patch_size
  per_frame = (height // ph) * (width // pw)
  target = (frames // pt) * per_frame
  channel_mode = c.source_mode == "channel"
  source = 0 if channel_mode or source_frames is None else (source_frames // pt) * per_frame
  length = source + num_semantic + target
  d, b, patch = c.dim, batch, math.prod(c.patch_size)
  in_channels = c.in_channels * (2 if channel_mode else 1)

  parts = {}  # name -> (forward FLOPs, whether the input needs a gradient)
  mm = lambda m, k, n: 2.0 * b * m * k * n
  parts["patch_embedding"] = (mm(source + target, patch * in_channels, d), False)
  parts["time_embedding"] = (mm(1, c.freq_dim, d), False)
  parts["time_mlp"] = (mm(1, d, d) + mm(1, d, 6 * d), True)
  parts["text_embedding"] = (mm(text_len, c.text_dim, d), False)
  parts["text_mlp"] = (mm(text_len, d, d), True)
  if num_semantic:
    parts["semantic_in"] = (mm(num_semantic, c.semantic_dim, c.semantic_hidden_dim), False)
    parts["semantic_mlp"] = (mm(num_semantic, c.semantic_hidden_dim, d), True)
    parts["semantic_head"] = (mm(num_semantic, d, c.semantic_dim), True)
  layers = c.num_layers
  parts["self_attention_proj"] = (layers * 4 * mm(length, d, d), True)
  parts["self_attention_scores"] = (layers * 2 * mm(length, d, length), True)  # q·kᵀ and p·v
  parts["cross_attention_proj"] = (layers * (2 * mm(length, d, d) + 2 * mm(text_len, d, d)), True)
  parts["cross_attention_scores"] = (layers * 2 * mm(length, d, text_len), True)
  parts["ffn"] = (layers * 2 * mm(length, d, c.ffn_dim), True)
  parts["head"] = (mm(target, d, patch * c.out_channels), True)

  forward = sum(f for f, _ in parts.values())
  backward = sum(f * (2 if needs_grad else 1) for f, needs_grad in parts.values())
  return FlopCount(forward, backward, {k: f for k, (f, _) in parts.items()})
