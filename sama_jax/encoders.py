"""The frozen encoders that turn host batches (pixels and strings) into model inputs:
the latent codec (Wan VAE or the world's patch codec), umT5 with its tokenizer, and
SigLIP for the semantic anchor tokens.

    encoders = build_encoders(encoders_config(...))
    batch = encode_batch(encoders, raw)       # raw: the data pipeline's batch contract

raw (NumPy): target uint8 [B, T, H, W, 3], source uint8 [B, Ts, H, W, 3] (optional),
anchor uint8 [B, H, W, 3] (optional), instruction str [B], task int32 [B].
model batch (jax): latents, source (optional), semantic (optional), text, task.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sama_jax.models.codec import PatchCodec
from sama_jax.models.siglip import SiglipVision, preprocess, siglip_config
from sama_jax.models.text import clean_text, load_tokenizer, tokenize, word_tokenizer
from sama_jax.models.umt5 import UMT5Encoder, relative_position_buckets, umt5_config

CODECS = ("patch", "wan_vae")
TEXT_ENCODERS = ("umt5", "world")
SEMANTIC_ENCODERS = ("siglip", "world", "none")


def encoders_config(**overrides) -> ml_collections.ConfigDict:
  """Which encoders to use and where their weights live. "world" encoders are tiny,
  randomly initialised from `seed` and frozen: the synthetic world's stand-ins."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.codec = "patch"  # "patch" (space-to-depth, lossless) | "wan_vae"
  c.codec_factor = 4
  c.vae_path = ""  # diffusers AutoencoderKLWan folder or original-naming safetensors
  c.text = "world"  # "umt5" (real weights) | "world"
  c.umt5_path = ""
  c.tokenizer_path = ""
  c.text_len = 512
  c.semantic = "world"  # "siglip" (real weights) | "world" | "none"
  c.siglip_path = ""
  # Tiny "world" encoder shapes.
  c.world_text_dim = 32
  # Relative-position bias of the world umT5's heads towards fixed neighbours (offsets
  # -1, +1, -2, +2 by head): with its random init (std 0.18) every head averages the
  # whole prompt, so "make the red circle blue" and "make the blue circle red" encode to
  # the same set of features and no model can tell the old colour from the new one. A
  # pretrained encoder's features depend on word order; this gives the stand-in that.
  # 0 keeps the plain random init.
  c.world_text_local_bias = 8.0
  c.world_siglip_dim = 48
  c.world_image_size = 32
  c.world_patch = 4
  c.world_semantic_grid = 2
  # A folder written by `python -m sama_jax.world_siglip` (contrastive pre-training on world
  # frames and captions): the world SigLIP starts from it instead of its random init.
  c.world_siglip_init = ""
  c.update(overrides)
  for name, allowed in (("codec", CODECS), ("text", TEXT_ENCODERS), ("semantic", SEMANTIC_ENCODERS)):
    if c[name] not in allowed:
      raise ValueError(f"encoders.{name}={c[name]!r}; expected one of {allowed}")
  return c


@dataclasses.dataclass
class Encoders:
  codec: Any  # PatchCodec or WanVAE: encode(frames) / decode(latents)
  tokenizer: Any
  text_encoder: UMT5Encoder
  siglip: SiglipVision | None
  text_len: int

  @property
  def latent_channels(self) -> int:
    return self.codec.channels if isinstance(self.codec, PatchCodec) else self.codec.config.z_dim

  @property
  def text_dim(self) -> int:
    return self.text_encoder.config.d_model

  @property
  def semantic_dim(self) -> int | None:
    return None if self.siglip is None else self.siglip.config.hidden_size


def world_vocabulary() -> tuple[str, ...]:
  """Words the world's instructions, captions and task sentences use."""
  from sama_jax.data.pretext import CUBE_SENTENCE, SPEED_SENTENCE, TUBE_SENTENCE
  from sama_jax.data.synthetic_grammar import vocabulary
  return tuple(vocabulary()) + (CUBE_SENTENCE, SPEED_SENTENCE, TUBE_SENTENCE, "[Video edit]")


def build_encoders(c: ml_collections.ConfigDict, tokenizer_dir: str | None = None) -> Encoders:
  """Builds (or loads) every encoder `c` names."""
  from sama_jax.convert import load_torch_siglip, load_torch_umt5

  rngs = nnx.Rngs(c.seed)
  if c.codec == "patch":
    codec = PatchCodec(c.codec_factor)
  else:
    from sama_jax.convert import load_torch_vae
    codec, _ = load_torch_vae(c.vae_path)
  if c.text == "umt5":
    tokenizer = load_tokenizer(c.tokenizer_path)
    text_encoder, _ = load_torch_umt5(c.umt5_path, text_len=c.text_len)
  else:
    folder = tokenizer_dir or tempfile.mkdtemp(prefix="sama_world_tokenizer_")
    tokenizer = word_tokenizer(world_vocabulary(), folder)
    d = c.world_text_dim
    text_encoder = UMT5Encoder(umt5_config(vocab_size=len(tokenizer), d_model=d, d_kv=d // 4, num_heads=4,
                                           d_ff=2 * d, num_layers=2, text_len=c.text_len), rngs)
    # A config saved before this option existed keeps the encoder its model was trained with.
    if c.get("world_text_local_bias", 0.0):
      bias = text_encoder.blocks.attn.relative_bias
      bias[...] = bias[...] + local_bias(text_encoder.config, c.world_text_local_bias)
  if c.semantic == "siglip":
    siglip, _ = load_torch_siglip(c.siglip_path)
  elif c.semantic == "world":
    d = c.world_siglip_dim
    siglip = SiglipVision(siglip_config(hidden_size=d, intermediate_size=2 * d, num_layers=2, num_heads=4,
                                        patch_size=c.world_patch, image_size=c.world_image_size,
                                        semantic_grid=c.world_semantic_grid), rngs)
    if c.get("world_siglip_init", ""):
      from sama_jax.world_siglip import load_into
      load_into(siglip, c.world_siglip_init)
  else:
    siglip = None
  return Encoders(codec, tokenizer, text_encoder, siglip, c.text_len)


LOCAL_OFFSETS = (-1, 1, -2, 2)  # key position - query position, per head (cycled)


def local_bias(config: ml_collections.ConfigDict, strength: float) -> np.ndarray:
  """float32 [layers, buckets, heads]: `strength` at head h's bucket for the relative
  offset LOCAL_OFFSETS[h % 4], zero elsewhere, so each head attends mostly to one
  neighbour (the prompt's own tokens; padding keys stay masked)."""
  reach = max(abs(o) for o in LOCAL_OFFSETS)
  buckets = relative_position_buckets(2 * reach + 1, 2 * reach + 1, config.num_buckets, config.max_distance)
  out = np.zeros((config.num_layers, config.num_buckets, config.num_heads), np.float32)
  for head in range(config.num_heads):
    out[:, buckets[reach, reach + LOCAL_OFFSETS[head % len(LOCAL_OFFSETS)]], head] = strength
  return out


def frames_to_unit(frames: jax.Array) -> jax.Array:
  """uint8 [..., 3] -> float32 in [-1, 1] (x / 127.5 - 1, as the released pipeline)."""
  return frames.astype(jnp.float32) / 127.5 - 1.0


def make_encode_fn(encoders: Encoders):
  """A jitted pure function (arrays) -> model batch; the encoders' weights are closed over
  as constants of the trace, so it takes only the batch."""
  codec, text_encoder, siglip = encoders.codec, encoders.text_encoder, encoders.siglip

  @jax.jit
  def encode(arrays: dict) -> dict:
    out = {"latents": codec.encode(frames_to_unit(arrays["target"])),
           "text": text_encoder(arrays["input_ids"], arrays["attention_mask"]),
           "task": arrays["task"]}
    if "source" in arrays:
      out["source"] = codec.encode(frames_to_unit(arrays["source"]))
    if "anchor" in arrays and siglip is not None:
      out["semantic"] = siglip.semantic(preprocess(arrays["anchor"], siglip.config.image_size))
    return out

  return encode


def host_arrays(encoders: Encoders, raw: dict, prefix: str = "") -> dict:
  """The host half: tokenizes the instructions (with an optional prompt prefix) and keeps
  the arrays the jitted half needs. Returns a dict of NumPy arrays."""
  prompts = [prefix + clean_text(str(s)) for s in raw["instruction"]]
  ids, mask = tokenize(encoders.tokenizer, prompts, encoders.text_len)
  arrays = {"target": raw["target"], "input_ids": ids, "attention_mask": mask,
            "task": np.asarray(raw.get("task", np.zeros(len(prompts))), np.int32)}
  for key in ("source", "anchor"):
    if key in raw:
      arrays[key] = raw[key]
  return arrays
