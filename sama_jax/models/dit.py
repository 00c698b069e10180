"""The Wan2.1 video DiT backbone in Flax NNX (diffusers `WanTransformer3DModel` semantics).

Data flow (channels last):
  latents [B, F, H, W, C] --patchify--> tokens [B, L, D], L = F/pt · H/ph · W/pw
  timestep [B] --sinusoid--> MLP --> temb [B, D] --SiLU, Linear--> mod [B, 6, D]
  text [B, Lt, D_text] --Linear, GELU(tanh), Linear--> ctx [B, Lt, D]
  tokens --N x DiTBlock(ctx, mod, rope)--> --head(temb)--> [B, L, pt·ph·pw·C_out] --> velocity

Blocks are stored stacked (leading `layers` axis) and run with `jax.lax.scan` (or a
Python loop) under the configured remat policy.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import nnx

from sama_jax.models import layers
from sama_jax.models.attention import attention
from sama_jax.models.rope import apply_rope, grid_rope
from sama_jax.parallel import ulysses  # a module import: ulysses imports models.attention

BATCH, LENGTH, EMBED = "activation_batch", "activation_length", "activation_embed"


def timestep_sinusoid(t: jax.Array, dim: int) -> jax.Array:
  """[cos | sin] features of t (on the 0..1000 scale). t: [B] -> [B, dim] float32."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def patchify(x: jax.Array, patch: tuple[int, int, int]) -> jax.Array:
  """x: [B, F, H, W, C] -> [B, (F/pt)(H/ph)(W/pw), pt·ph·pw·C], tokens row-major over (f, h, w)."""
  pt, ph, pw = patch
  return rearrange(x, "b (f pt) (h ph) (w pw) c -> b (f h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)


def unpatchify(y: jax.Array, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> jax.Array:
  """y: [B, f·h·w, pt·ph·pw·C] -> [B, f·pt, h·ph, w·pw, C]."""
  (f, h, w), (pt, ph, pw) = grid, patch
  return rearrange(y, "b (f h w) (pt ph pw c) -> b (f pt) (h ph) (w pw) c",
                   f=f, h=h, w=w, pt=pt, ph=ph, pw=pw)


def token_grid(shape: tuple[int, ...], patch: tuple[int, int, int]) -> tuple[int, int, int]:
  """(f, h, w) token grid of a latent video [B, F, H, W, C]."""
  return tuple(n // p for n, p in zip(shape[1:4], patch))


class ConditionEmbedder(nnx.Module):
  """Timestep and text conditioning (diffusers `condition_embedder`)."""

  def __init__(self, config, rngs: nnx.Rngs):
    d, normal = config.dim, nnx.initializers.normal(0.02)
    self.time_linear_1 = layers.dense(config.freq_dim, d, (None, "embed"), config, rngs, normal)
    self.time_linear_2 = layers.dense(d, d, (None, "embed"), config, rngs, normal)
    self.time_proj = layers.dense(d, 6 * d, (None, "embed"), config, rngs)
    self.text_linear_1 = layers.dense(config.text_dim, d, (None, "embed"), config, rngs, normal)
    self.text_linear_2 = layers.dense(d, d, ("embed", None), config, rngs, normal)
    self.freq_dim, self.timestep_bf16 = config.freq_dim, config.timestep_bf16

  def __call__(self, timestep: jax.Array, text: jax.Array):
    """timestep [B], text [B, Lt, D_text] -> temb [B, D] f32, mod [B, 6, D] f32, ctx [B, Lt, D]."""
    t = timestep.astype(jnp.float32)
    if self.timestep_bf16:  # the released pipeline embeds bf16-rounded timesteps
      t = t.astype(jnp.bfloat16).astype(jnp.float32)
    features = timestep_sinusoid(t, self.freq_dim)
    if self.timestep_bf16:
      features = features.astype(jnp.bfloat16).astype(jnp.float32)
    temb = self.time_linear_2(jax.nn.silu(self.time_linear_1(features))).astype(jnp.float32)
    mod = self.time_proj(jax.nn.silu(temb)).astype(jnp.float32)
    mod = rearrange(mod, "b (six d) -> b six d", six=6)
    ctx = self.text_linear_2(layers.gelu_tanh(self.text_linear_1(text)))
    return temb, mod, layers.constrain(ctx, (BATCH, None, EMBED))


class Attention(nnx.Module):
  """Self- or cross-attention with RMSNorm on q and k across all heads."""

  def __init__(self, config, rngs: nnx.Rngs):
    d = config.dim
    self.to_q = layers.dense(d, d, ("embed", "heads"), config, rngs)
    self.to_k = layers.dense(d, d, ("embed", "heads"), config, rngs)
    self.to_v = layers.dense(d, d, ("embed", "heads"), config, rngs)
    self.to_out = layers.dense(d, d, ("heads", "embed"), config, rngs)
    self.norm_q = layers.rms_norm(d, config.eps, config, rngs) if config.qk_norm else None
    self.norm_k = layers.rms_norm(d, config.eps, config, rngs) if config.qk_norm else None
    self.num_heads, self.impl = config.num_heads, config.attention
    self.sequence_parallel = config.get("sequence_parallel", "none")

  def __call__(self, x: jax.Array, context: jax.Array | None = None, rope=None,
               kv_length: int | None = None) -> jax.Array:
    """x: [B, L, D]; context: [B, Lc, D] (None: self-attention); rope: (cos, sin) [L, D/2/H].
    kv_length: self-attention only; tokens from kv_length on are padding, not attended to."""
    source = x if context is None else context
    # Text keys and values are replicated over the sequence (context) axis, not split.
    kv_seq_axis = LENGTH if context is None else None
    split = lambda y, length_axis: layers.constrain(
        rearrange(y, "b l (h d) -> b l h d", h=self.num_heads),
        (BATCH, length_axis, "activation_heads", None))
    norm = lambda n, y: y if n is None else n(y).astype(y.dtype)
    q = split(norm(self.norm_q, self.to_q(x)), LENGTH)
    k = split(norm(self.norm_k, self.to_k(source)), kv_seq_axis)
    v = split(self.to_v(source), kv_seq_axis)
    if rope is not None:
      q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    if self.sequence_parallel == "ulysses":
      out = ulysses.ulysses_attention(q, k, v, impl=self.impl, kv_sharded=context is None,
                                      kv_length=kv_length)
    else:
      out = attention(q, k, v, impl=self.impl, kv_length=kv_length)
    return self.to_out(rearrange(out, "b l h d -> b l (h d)"))


class FeedForward(nnx.Module):
  def __init__(self, config, rngs: nnx.Rngs):
    self.proj_in = layers.dense(config.dim, config.ffn_dim, ("embed", "mlp"), config, rngs)
    self.proj_out = layers.dense(config.ffn_dim, config.dim, ("mlp", "embed"), config, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = layers.constrain(layers.gelu_tanh(self.proj_in(x)), (BATCH, LENGTH, "activation_mlp"))
    return self.proj_out(h)


class DiTBlock(nnx.Module):
  """x += g_a·SelfAttn(mod(LN x)); x += CrossAttn(LN_affine x, ctx); x += g_f·FFN(mod(LN x))."""

  def __init__(self, config, rngs: nnx.Rngs):
    d = config.dim
    self.attn1 = Attention(config, rngs)
    self.attn2 = Attention(config, rngs)
    self.norm1 = layers.layer_norm(d, config.eps, config, rngs, affine=False)
    self.norm2 = layers.layer_norm(d, config.eps, config, rngs) if config.cross_attn_norm else None
    self.norm3 = layers.layer_norm(d, config.eps, config, rngs, affine=False)
    self.ffn = FeedForward(config, rngs)
    self.modulation = layers.param(nnx.initializers.normal(d ** -0.5), (6, d), (None, "embed"),
                                   config, rngs)

  def __call__(self, x: jax.Array, ctx: jax.Array, mod: jax.Array, rope,
               kv_length: int | None = None) -> jax.Array:
    """x: [B, L, D]; ctx: [B, Lt, D]; mod: [B, 6, D] float32; rope: (cos, sin);
    kv_length: the real tokens of x (None: all), the rest padding that no token attends to."""
    m = self.modulation[...].astype(jnp.float32)[None] + mod
    shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = (m[:, i:i + 1] for i in range(6))
    residual = lambda x, y, gate=1.0: (x.astype(jnp.float32) + y.astype(jnp.float32) * gate).astype(x.dtype)
    x = residual(x, self.attn1(layers.modulate(x, self.norm1, shift_a, scale_a), rope=rope,
                                     kv_length=kv_length), gate_a)
    cross_in = x if self.norm2 is None else self.norm2(x.astype(jnp.float32)).astype(x.dtype)
    x = residual(x, self.attn2(cross_in, context=ctx))
    x = residual(x, self.ffn(layers.modulate(x, self.norm3, shift_f, scale_f)), gate_f)
    return layers.constrain(x, (BATCH, LENGTH, EMBED))


class Head(nnx.Module):
  """Final modulated LayerNorm and projection to pt·ph·pw·C_out channels per token."""

  def __init__(self, config, rngs: nnx.Rngs):
    d = config.dim
    self.norm = layers.layer_norm(d, config.eps, config, rngs, affine=False)
    self.proj_out = layers.dense(d, config.out_channels * math.prod(config.patch_size),
                                 ("embed", None), config, rngs, nnx.initializers.zeros_init())
    self.modulation = layers.param(nnx.initializers.normal(d ** -0.5), (2, d), (None, "embed"),
                                   config, rngs)

  def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
    """x: [B, L, D]; temb: [B, D] float32 -> [B, L, pt·ph·pw·C_out] float32."""
    m = self.modulation[...].astype(jnp.float32)[None] + temb[:, None]
    shift, scale = m[:, 0:1], m[:, 1:2]
    return self.proj_out(layers.modulate(x, self.norm, shift, scale)).astype(jnp.float32)


class WanDiT(nnx.Module):
  """Wan2.1 DiT. `__call__` is the plain text-to-video model; `SamaDiT` composes the parts."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.config = config
    in_channels = config.in_channels * (2 if config.source_mode == "channel" else 1)
    self.patch_embedding = layers.dense(in_channels * math.prod(config.patch_size), config.dim,
                                        (None, "embed"), config, rngs)
    self.condition_embedder = ConditionEmbedder(config, rngs)

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs: nnx.Rngs) -> DiTBlock:
      return DiTBlock(config, rngs)

    self.blocks = make_blocks(rngs)
    self.head = Head(config, rngs)

  def embed_tokens(self, latents: jax.Array) -> jax.Array:
    """latents [B, F, H, W, C_in] -> tokens [B, L, D] in the compute dtype."""
    x = patchify(latents.astype(jnp.dtype(self.config.dtype)), tuple(self.config.patch_size))
    return layers.constrain(self.patch_embedding(x), (BATCH, LENGTH, EMBED))

  def run_blocks(self, x: jax.Array, ctx: jax.Array, mod: jax.Array, rope,
                 kv_length: int | None = None) -> jax.Array:
    """Applies every block to x: [B, L, D] (scanned or looped, with the remat policy).
    kv_length: x's real tokens when the rest is padding (`pad_for_context`), else None."""
    return layers.run_stacked(self.blocks, x, lambda block, x: block(x, ctx, mod, rope, kv_length),
                              remat=self.config.remat, scan=self.config.scan_layers)

  def pad_for_context(self, x: jax.Array, rope):
    """Pads the sequence to divide over the context mesh axis under Ulysses (else unchanged).

    x: [B, L, D]; rope: (cos, sin) [L, D/2/H] -> x, rope with L rounded up and the
    kv_length for run_blocks: L when padded, None when not (so nothing changes then).
    """
    multiple = ulysses.padded_multiple(self.config.get("sequence_parallel", "none"))
    padded_x, padded_rope = pad_tokens(x, rope, multiple)
    return padded_x, padded_rope, (x.shape[1] if padded_x.shape[1] != x.shape[1] else None)

  def rope(self, grid, offset=(0, 0, 0)):
    c = self.config
    return grid_rope(grid, c.dim // c.num_heads, c.rope_max_len, c.rope_theta, offset)

  def __call__(self, latents: jax.Array, timestep: jax.Array, text: jax.Array) -> jax.Array:
    """Plain Wan2.1 T2V: latents [B, F, H, W, C], timestep [B], text [B, Lt, D_text]
    -> velocity [B, F, H, W, C_out] float32."""
    patch = tuple(self.config.patch_size)
    grid = token_grid(latents.shape, patch)
    temb, mod, ctx = self.condition_embedder(timestep, text)
    tokens = self.embed_tokens(latents)
    x, rope, kv_length = self.pad_for_context(tokens, self.rope(grid))
    x = self.run_blocks(layers.constrain(x, (BATCH, LENGTH, EMBED)), ctx, mod, rope, kv_length)
    return unpatchify(self.head(x[:, :tokens.shape[1]], temb), grid, patch)


def pad_tokens(x: jax.Array, rope, multiple: int):
  """Appends zero tokens with identity rotations (cos 1, sin 0) up to a multiple of `multiple`.

  x: [B, L, D]; rope: (cos, sin) [L, d] -> x [B, L', D], rope [L', d], L' = L rounded up.
  Returns the inputs themselves when L already divides.
  """
  pad = -x.shape[1] % multiple
  if not pad:
    return x, rope
  cos, sin = rope
  return (jnp.pad(x, ((0, 0), (0, pad), (0, 0))),
          (jnp.pad(cos, ((0, pad), (0, 0)), constant_values=1.0), jnp.pad(sin, ((0, pad), (0, 0)))))


def param_count(module: nnx.Module) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
