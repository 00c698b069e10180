"""The umT5 text encoder in Flax NNX (transformers `UMT5EncoderModel` semantics), as Wan2.1
and SAMA use it (SAMA_METHOD.md §6.4).

Data flow:
  ids [B, L] --embedding--> x [B, L, D]
  x --N x (x += Attn(RMSNorm x) with this layer's relative position bias;
           x += FFN(RMSNorm x))--> RMSNorm --> [B, L, D], zero where attention_mask == 0

umT5 differs from a textbook transformer in three ways that the checkpoint depends on:
every layer owns its relative position bias (T5 shares the first layer's); attention
logits are not scaled by 1/sqrt(d_kv) (the scale is folded into the weights); and the
FFN is gated: wo(GELU_tanh(wi_0 x) * wi_1 x). No tensor has a bias.

Layers are stored stacked (leading `layers` axis) and run with `jax.lax.scan`, as in the DiT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from einops import rearrange
from flax import nnx

from sama_jax.models import layers
from sama_jax.models.dit import BATCH, EMBED, LENGTH
from sama_jax.models.layers import REMAT_POLICIES

DTYPES = ("float32", "bfloat16", "float16")


def umt5_config(**overrides) -> ml_collections.ConfigDict:
  """umT5 encoder config: google/umt5-xxl shapes (the Wan2.1 text encoder) unless overridden."""
  c = ml_collections.ConfigDict()
  c.vocab_size = 256384
  c.d_model = 4096
  c.d_kv = 64  # per-head width; heads * d_kv need not equal d_model
  c.num_heads = 64
  c.d_ff = 10240
  c.num_layers = 24
  c.num_buckets = 32  # relative position buckets, half per direction
  c.max_distance = 128  # distances beyond this share the last bucket
  c.eps = 1e-6
  c.text_len = 512  # Wan pads and truncates every prompt to this many tokens
  # Numerics: matmuls in `dtype`; RMSNorm statistics, softmax and the output stay float32.
  c.dtype = "float32"
  c.param_dtype = "float32"
  # Execution.
  c.remat = "none"  # "none" | "full" | "dots_saveable" | "offload_dots"
  c.scan_layers = True
  c.update(overrides)
  validate_umt5_config(c)
  return c


def validate_umt5_config(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field, its value and what is allowed."""
  for name in ("dtype", "param_dtype"):
    if c[name] not in DTYPES:
      raise ValueError(f"umt5.{name}={c[name]!r}; expected one of {DTYPES}")
  if c.remat not in REMAT_POLICIES:
    raise ValueError(f"umt5.remat={c.remat!r}; expected one of {REMAT_POLICIES}")
  for name in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers", "max_distance",
               "text_len"):
    if int(c[name]) <= 0:
      raise ValueError(f"umt5.{name}={c[name]} must be positive")
  if c.num_buckets < 4 or c.num_buckets % 4:
    raise ValueError(f"umt5.num_buckets={c.num_buckets}; expected a multiple of 4 (two directions, "
                     "each half exact and half logarithmic)")


def relative_position_buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """Bidirectional T5 buckets of (key position - query position): [q_len, k_len] int32.

  Per direction: distances below num_buckets/4 get one bucket each, larger ones share
  logarithmically wider buckets up to max_distance, beyond which all share the last.
  Keys after the query use the upper half. Computed in float32 NumPy, mirroring the
  reference's float32 logarithm so the bucket edges fall on the same distances.
  """
  rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
  half = num_buckets // 2
  max_exact = half // 2
  distance = np.abs(rel)
  scaled = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
  scaled = scaled / np.float32(np.log(max_distance / max_exact)) * np.float32(half - max_exact)
  large = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
  bucket = np.where(distance < max_exact, distance, large) + (rel > 0) * half
  return bucket.astype(np.int32)


class SelfAttention(nnx.Module):
  """Unscaled multi-head self-attention plus this layer's relative position bias."""

  def __init__(self, config, rngs: nnx.Rngs):
    d, inner = config.d_model, config.num_heads * config.d_kv
    normal = lambda fan: nnx.initializers.normal(fan ** -0.5)
    # Mesh-TF initialisation: q is 1/sqrt(d_kv) smaller, standing in for the missing logit scale.
    self.q = layers.dense(d, inner, ("embed", "heads"), config, rngs, normal(d * config.d_kv), use_bias=False)
    self.k = layers.dense(d, inner, ("embed", "heads"), config, rngs, normal(d), use_bias=False)
    self.v = layers.dense(d, inner, ("embed", "heads"), config, rngs, normal(d), use_bias=False)
    self.o = layers.dense(inner, d, ("heads", "embed"), config, rngs, normal(inner), use_bias=False)
    self.relative_bias = layers.param(normal(d), (config.num_buckets, config.num_heads), (None, None),
                                      config, rngs)
    self.num_heads = config.num_heads

  def __call__(self, x: jax.Array, buckets: jax.Array, key_mask: jax.Array) -> jax.Array:
    """x: [B, L, D]; buckets: [L, L] int32; key_mask: [B, L] bool (False: padding key)."""
    split = lambda y: rearrange(y, "b l (h d) -> b l h d", h=self.num_heads)
    q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
    bias = rearrange(self.relative_bias[...].astype(jnp.float32)[buckets], "q k h -> h q k")
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) + bias[None]
    # The reference adds the dtype's most negative value (not -inf), so a row of padding
    # keys only would still be finite; padded queries are zeroed at the output anyway.
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32).astype(x.dtype)
    return self.o(rearrange(out, "b l h d -> b l (h d)"))


class GatedFeedForward(nnx.Module):
  """wo(GELU_tanh(wi_0 x) * wi_1 x)."""

  def __init__(self, config, rngs: nnx.Rngs):
    d, f = config.d_model, config.d_ff
    self.wi_0 = layers.dense(d, f, ("embed", "mlp"), config, rngs, nnx.initializers.normal(d ** -0.5),
                             use_bias=False)
    self.wi_1 = layers.dense(d, f, ("embed", "mlp"), config, rngs, nnx.initializers.normal(d ** -0.5),
                             use_bias=False)
    self.wo = layers.dense(f, d, ("mlp", "embed"), config, rngs, nnx.initializers.normal(f ** -0.5),
                           use_bias=False)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = layers.gelu_tanh(self.wi_0(x)) * self.wi_1(x)
    return self.wo(layers.constrain(h, (BATCH, LENGTH, "activation_mlp")))


class EncoderBlock(nnx.Module):
  """x += Attn(RMSNorm x); x += FFN(RMSNorm x), residual sums in float32."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.attn_norm = layers.rms_norm(config.d_model, config.eps, config, rngs, name="embed")
    self.attn = SelfAttention(config, rngs)
    self.ffn_norm = layers.rms_norm(config.d_model, config.eps, config, rngs, name="embed")
    self.ffn = GatedFeedForward(config, rngs)

  def __call__(self, x: jax.Array, buckets: jax.Array, key_mask: jax.Array) -> jax.Array:
    residual = lambda x, y: (x.astype(jnp.float32) + y.astype(jnp.float32)).astype(x.dtype)
    norm = lambda n, y: n(y.astype(jnp.float32)).astype(y.dtype)
    x = residual(x, self.attn(norm(self.attn_norm, x), buckets, key_mask))
    x = residual(x, self.ffn(norm(self.ffn_norm, x)))
    return layers.constrain(x, (BATCH, LENGTH, EMBED))


class UMT5Encoder(nnx.Module):
  """`umt5(input_ids [B, L], attention_mask [B, L]) -> [B, L, D]` float32, zero where the mask is 0."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.config = config
    self.embedding = layers.param(nnx.initializers.normal(1.0), (config.vocab_size, config.d_model),
                                  ("vocab", "embed"), config, rngs)

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs: nnx.Rngs) -> EncoderBlock:
      return EncoderBlock(config, rngs)

    self.blocks = make_blocks(rngs)
    self.final_norm = layers.rms_norm(config.d_model, config.eps, config, rngs, name="embed")

  def run_blocks(self, x: jax.Array, buckets: jax.Array, key_mask: jax.Array) -> jax.Array:
    """Applies every block to x: [B, L, D] (scanned or looped, with the remat policy)."""
    return layers.run_stacked(self.blocks, x, lambda block, x: block(x, buckets, key_mask),
                              remat=self.config.remat, scan=self.config.scan_layers)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """input_ids: [B, L] int; attention_mask: [B, L] (1 real token, 0 padding) -> [B, L, D] float32.

    Positions with attention_mask == 0 come out as exact zeros: Wan zeroes everything past
    the prompt's length before the DiT sees it (SAMA_METHOD.md §6.4).
    """
    c = self.config
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
      raise ValueError(f"umt5 takes input_ids [B, L] and attention_mask of the same shape; got "
                       f"{input_ids.shape} and {attention_mask.shape}")
    length = input_ids.shape[1]
    buckets = jnp.asarray(relative_position_buckets(length, length, c.num_buckets, c.max_distance))
    key_mask = attention_mask != 0
    x = self.embedding[...][input_ids].astype(jnp.dtype(c.dtype))
    x = self.run_blocks(layers.constrain(x, (BATCH, LENGTH, EMBED)), buckets, key_mask)
    x = self.final_norm(x.astype(jnp.float32))
    return jnp.where(key_mask[..., None], x, 0.0)
