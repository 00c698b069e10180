"""Reference-side helpers for parity tests: tiny random diffusers Wan transformers and the
original Wan naming written out independently of sama_jax's conversion table."""

import re

import numpy as np
import torch


def tiny_diffusers_wan(seed=0, heads=2, head_dim=32, layers=2, ffn=128, text_dim=32, freq_dim=32,
                       in_channels=16, out_channels=16):
  """A WanTransformer3DModel with every parameter (norms and tables too) random."""
  from diffusers import WanTransformer3DModel

  torch.manual_seed(seed)
  model = WanTransformer3DModel(
      patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
      in_channels=in_channels, out_channels=out_channels, text_dim=text_dim, freq_dim=freq_dim,
      ffn_dim=ffn, num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
      eps=1e-6, rope_max_seq_len=1024)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      else:
        p.copy_(torch.randn_like(p) * (0.5 / max(1, p.shape[-1]) ** 0.5 if p.ndim > 1 else 0.1))
  return model.eval()


def run_diffusers(model, latents, timestep, text):
  """latents [B, F, H, W, C] numpy (channels last) -> velocity [B, F, H, W, C] numpy."""
  with torch.no_grad():
    out = model(torch.from_numpy(np.moveaxis(latents, -1, 1)).float(), torch.from_numpy(timestep).float(),
                torch.from_numpy(text).float(), return_dict=False)[0]
  return np.moveaxis(out.numpy(), 1, -1)


# diffusers -> original Wan naming, as DiffSynth / the Wan repo write it (SAMA_METHOD.md §6.1).
_TO_OFFICIAL = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"\.attn1\.to_out\.0\.", ".self_attn.o."),
    (r"\.attn2\.to_out\.0\.", ".cross_attn.o."),
    (r"\.attn1\.to_([qkv])\.", r".self_attn.\1."),
    (r"\.attn2\.to_([qkv])\.", r".cross_attn.\1."),
    (r"\.attn1\.norm_", ".self_attn.norm_"),
    (r"\.attn2\.norm_", ".cross_attn.norm_"),
    (r"\.norm2\.", ".norm3."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
    (r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"^scale_shift_table$", "head.modulation"),
]


def official_state_dict(model) -> dict:
  """The diffusers model's weights under original Wan names, as float32 numpy arrays."""
  out = {}
  for name, tensor in model.state_dict().items():
    for pattern, repl in _TO_OFFICIAL:
      name = re.sub(pattern, repl, name)
    out[name] = tensor.detach().float().numpy()
  return out


def sama_extra_tensors(dim, semantic_dim, hidden, seed=0) -> dict:
  """Random tensors with the released SAMA module names and shapes (SAMA_METHOD.md §2.1)."""
  rng = np.random.default_rng(seed)
  r = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)
  return {
      "segment_embedding.weight": r(3, dim),
      "siglip_feat_mlp.norm.weight": 1 + r(semantic_dim), "siglip_feat_mlp.norm.bias": r(semantic_dim),
      "siglip_feat_mlp.fc1.weight": r(hidden, semantic_dim), "siglip_feat_mlp.fc1.bias": r(hidden),
      "siglip_feat_mlp.fc2.weight": r(dim, hidden), "siglip_feat_mlp.fc2.bias": r(dim),
      "semantic_head.norm.weight": 1 + r(dim), "semantic_head.norm.bias": r(dim),
      "semantic_head.proj.weight": r(semantic_dim, dim), "semantic_head.proj.bias": r(semantic_dim),
  }
