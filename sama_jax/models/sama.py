"""SAMA conditioning around the Wan DiT (SAMA_METHOD.md §2).

Sequence (token mode): [source ; semantic ; target], each group plus its learned type
embedding (ids 0 / 1 / 2). Source tokens share the target's RoPE positions ("same") or
sit after the target grid ("shifted"); semantic tokens get the complex-zero rotation of
the released code ("zero") or none ("identity"). Every token sees the same noisy
timestep. The semantic head reads the semantic slots after the last block; the output
head reads only the target slots. Under Ulysses sequence parallelism the sequence is
padded at its end to divide over the context mesh axis (`WanDiT.pad_for_context`); no
token attends to the padding and its outputs are dropped. In channel mode the source is concatenated to the
noisy latents along channels instead, and there are no source tokens.

With no source, no semantic tokens and a zero type embedding (its initial value) the
model computes exactly the plain Wan DiT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sama_jax.diffusion.flow import velocity_from_x0
from sama_jax.diffusion.schedule import NUM_TRAIN_TIMESTEPS
from sama_jax.models import layers
from sama_jax.models.dit import BATCH, EMBED, LENGTH, WanDiT, token_grid, unpatchify
from sama_jax.models.rope import constant_rope, grid_rope_at

SOURCE, SEMANTIC, TARGET = 0, 1, 2  # type-embedding ids


class SemanticProjector(nnx.Module):
  """`siglip_feat_mlp`: LayerNorm -> Linear -> GELU(erf) -> Linear, SigLIP width -> DiT width."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.norm = layers.layer_norm(config.semantic_dim, config.eps, config, rngs, name=None)
    self.fc1 = layers.dense(config.semantic_dim, config.semantic_hidden_dim, (None, "mlp"), config, rngs)
    self.fc2 = layers.dense(config.semantic_hidden_dim, config.dim, ("mlp", "embed"), config, rngs)

  def __call__(self, s: jax.Array) -> jax.Array:
    """s: [B, N, D_sem] -> [B, N, D]."""
    h = self.norm(s.astype(jnp.float32)).astype(jnp.dtype(self.fc1.dtype))
    return self.fc2(layers.gelu_erf(self.fc1(h)))


class SemanticHead(nnx.Module):
  """`semantic_head`: LayerNorm -> Linear, DiT width -> SigLIP width; no modulation."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.norm = layers.layer_norm(config.dim, config.eps, config, rngs)
    self.proj = layers.dense(config.dim, config.semantic_dim, ("embed", None), config, rngs)
    self.proj.bias[...] = 1e-3 * jax.random.normal(rngs.params(), self.proj.bias.shape,
                                                    self.proj.bias.dtype)

  def __call__(self, h: jax.Array) -> jax.Array:
    """h: [B, N, D] -> [B, N, D_sem] float32."""
    return self.proj(self.norm(h.astype(jnp.float32)).astype(h.dtype)).astype(jnp.float32)


def scale_noisy_input(x: jax.Array | None, timestep: jax.Array) -> jax.Array | None:
  """(1 − σ)·x_σ with σ = timestep / 1000 (model.scale_input): x [B, ...] -> x [B, ...].
  At σ = 1 the input is pure noise, which says nothing about x0; scaled, it is zero there
  and cannot drown the source features it shares tokens with (channel mode)."""
  if x is None:
    return None
  scale = 1.0 - timestep.astype(jnp.float32) / NUM_TRAIN_TIMESTEPS
  return (x * scale.reshape((-1,) + (1,) * (x.ndim - 1))).astype(x.dtype)


class SamaDiT(nnx.Module):
  """The SAMA video-editing DiT: `model(latents, timestep, text, source=, semantic=)`."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.config = config
    self.dit = WanDiT(config, rngs)
    # Zero at start, so a plain Wan checkpoint starts as plain Wan (released code does the same).
    self.segment_embedding = layers.param(nnx.initializers.zeros_init(), (config.num_segments, config.dim),
                                          (None, "embed"), config, rngs)
    self.siglip_feat_mlp = SemanticProjector(config, rngs)
    self.semantic_head = SemanticHead(config, rngs)

  def __call__(self, latents: jax.Array, timestep: jax.Array, text: jax.Array, *,
               source: jax.Array | None = None, semantic: jax.Array | None = None,
               frame_offset: int | jax.Array = 0):
    """Predicts the flow-matching velocity of the target (and of the semantic tokens).

    latents:  [B, F, H, W, C] noisy target latents.
    timestep: [B] on the 0..1000 scale (1000·sigma).
    text:     [B, Lt, D_text] umT5 embeddings.
    source:   [B, Fs, H, W, C] clean source latents, or None. Channel mode needs Fs == F.
    semantic: [B, N, D_sem] noisy SigLIP tokens, or None.
    frame_offset: temporal RoPE position of the first token frame (source and target alike;
      the latent frame index when patch_size[0] == 1): a window's place in a longer video. An int (checked against
      model.rope_max_len) or a traced int32 scalar (the caller checks the range).
    Returns (velocity [B, F, H, W, C_out] float32, semantic_pred [B, N, D_sem] float32 or None):
    the head's output (x̂0 for model.prediction="x0"), with the source added or subtracted
    under model.source_skip where the source has the latents' shape (`skip_source`).
    """
    check_inputs(self.config, latents, timestep, text, source, semantic)
    if self.config.get("scale_input", False):
      latents, semantic = scale_noisy_input(latents, timestep), scale_noisy_input(semantic, timestep)
    temb, mod, ctx = self.dit.condition_embedder(timestep, text)
    x, rope, (num_source, num_semantic, num_target) = self.assemble(latents, source, semantic, frame_offset)
    length = num_source + num_semantic + num_target
    x = self.dit.run_blocks(x, ctx, mod, rope, kv_length=length if x.shape[1] != length else None)
    semantic_pred = None
    if semantic is not None:
      semantic_pred = self.semantic_head(x[:, num_source:num_source + num_semantic])
    grid = token_grid(latents.shape, tuple(self.config.patch_size))
    out = unpatchify(self.dit.head(x[:, length - num_target:length], temb), grid,
                     tuple(self.config.patch_size))
    if self.config.get("source_skip", False) and source is not None and source.shape == latents.shape:
      out = self.skip_source(out, source)
    return out, semantic_pred

  def skip_source(self, out, source):
    """The head predicts the change from the source (model.source_skip): x̂0 = source + head
    for x0 models, v̂ = head − source for velocity models (v = ε − x0). [B, F, H, W, C]."""
    sign = -1.0 if self.config.get("prediction", "velocity") == "velocity" else 1.0
    return out + sign * source.astype(jnp.float32)

  def velocity(self, latents: jax.Array, timestep: jax.Array, text: jax.Array, *,
               source: jax.Array | None = None, semantic: jax.Array | None = None,
               frame_offset: int | jax.Array = 0):
    """The flow velocities the sampler integrates, whatever the head predicts
    (model.prediction): the head's output itself for "velocity"; for "x0" the predicted
    clean latents and semantic tokens turned into v = (x_σ − x̂0) / σ with σ = t / 1000
    (`velocity_from_x0`; t > 0). Arguments and return as `__call__`."""
    out, semantic_pred = self(latents, timestep, text, source=source, semantic=semantic,
                              frame_offset=frame_offset)
    if self.config.get("prediction", "velocity") == "velocity":
      return out, semantic_pred
    sigma = timestep.astype(jnp.float32) / NUM_TRAIN_TIMESTEPS
    semantic_v = None if semantic_pred is None else velocity_from_x0(semantic_pred, semantic, sigma)
    return velocity_from_x0(out, latents, sigma), semantic_v

  def assemble(self, latents, source=None, semantic=None, frame_offset: int | jax.Array = 0):
    """The input sequence [source ; semantic ; target] with type embeddings added, the
    temporal RoPE positions of source and target moved on by `frame_offset`.

    Returns x [B, L, D], rope (cos, sin) [L, head_dim/2] and the group lengths
    (num_source, num_semantic, num_target); absent groups have length 0. L is their sum,
    except under Ulysses on a context mesh, where zero tokens are appended to divide
    (`WanDiT.pad_for_context`); run_blocks must then get kv_length = the sum.
    """
    c, dit = self.config, self.dit
    patch, head_dim = tuple(c.patch_size), c.dim // c.num_heads
    table = self.segment_embedding[...].astype(jnp.dtype(c.dtype))
    grid = token_grid(latents.shape, patch)
    if c.source_mode == "channel":
      cond = source if source is not None else jnp.zeros_like(latents)
      latents, source = jnp.concatenate([latents, cond.astype(latents.dtype)], axis=-1), None

    groups = []  # (tokens [B, n, D], (cos, sin)) in sequence order
    if source is not None:
      offset = grid if c.source_rope == "shifted" else (0, 0, 0)
      groups.append((dit.embed_tokens(source) + table[SOURCE],
                     self.grid_rope(token_grid(source.shape, patch), offset, frame_offset)))
    if semantic is not None:
      rotation = 0.0 if c.semantic_rope == "zero" else 1.0
      groups.append((self.siglip_feat_mlp(semantic) + table[SEMANTIC],
                     constant_rope(semantic.shape[1], head_dim, rotation)))
    groups.append((dit.embed_tokens(latents) + table[TARGET], self.grid_rope(grid, (0, 0, 0), frame_offset)))

    x = jnp.concatenate([g[0] for g in groups], axis=1)
    rope = tuple(jnp.concatenate([g[1][i] for g in groups], axis=0) for i in range(2))
    x, rope, _ = dit.pad_for_context(x, rope)
    x = layers.constrain(x, (BATCH, LENGTH, EMBED))
    num_source = groups[0][0].shape[1] if source is not None else 0
    num_semantic = semantic.shape[1] if semantic is not None else 0
    return x, rope, (num_source, num_semantic, groups[-1][0].shape[1])

  def grid_rope(self, grid, offset, frame_offset):
    """RoPE (cos, sin) of a token grid at `offset`, moved on in time by `frame_offset`."""
    if isinstance(frame_offset, (int, np.integer)):
      if frame_offset < 0:
        raise ValueError(f"frame_offset={frame_offset}; expected a non-negative latent frame index")
      return self.dit.rope(grid, (offset[0] + int(frame_offset), offset[1], offset[2]))
    c = self.config
    return grid_rope_at(grid, c.dim // c.num_heads, c.rope_max_len, c.rope_theta, offset, frame_offset)


def check_inputs(c, latents, timestep, text, source, semantic) -> None:
  """Raises ValueError naming the expected form of any argument with a wrong shape."""
  def fail(name, value, expected):
    raise ValueError(f"{name} has shape {tuple(value.shape)}; expected {expected}")

  pt, ph, pw = c.patch_size
  if latents.ndim != 5 or latents.shape[-1] != c.in_channels:
    fail("latents", latents, f"[B, F, H, W, {c.in_channels}] (channels last)")
  b, f, h, w, _ = latents.shape
  if f % pt or h % ph or w % pw:
    fail("latents", latents, f"F, H, W divisible by the patch size {tuple(c.patch_size)}")
  if timestep.shape != (b,):
    fail("timestep", timestep, f"[{b}] (one value per batch element, 0..1000)")
  if text.ndim != 3 or text.shape[0] != b or text.shape[-1] != c.text_dim:
    fail("text", text, f"[{b}, L, {c.text_dim}]")
  if source is not None:
    if c.source_mode == "channel" and source.shape != latents.shape:
      fail("source", source, f"{tuple(latents.shape)} (channel mode: the latents' shape)")
    if (source.ndim != 5 or source.shape[0] != b or source.shape[-1] != c.in_channels
        or source.shape[1] % pt or source.shape[2] % ph or source.shape[3] % pw):
      fail("source", source, f"[{b}, Fs, Hs, Ws, {c.in_channels}] with Fs, Hs, Ws divisible by "
           f"the patch size {tuple(c.patch_size)}")
  if semantic is not None and (semantic.ndim != 3 or semantic.shape[0] != b
                               or semantic.shape[-1] != c.semantic_dim or semantic.shape[1] < 1):
    fail("semantic", semantic, f"[{b}, N, {c.semantic_dim}] with N >= 1")
