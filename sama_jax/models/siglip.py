"""The SigLIP vision tower in Flax NNX (transformers `SiglipVisionModel` semantics): the
encoder of SAMA's semantic anchor targets (SAMA_METHOD.md §3).

Data flow (channels last):
  pixels [B, S, S, 3] in [-1, 1] --patchify, Linear--> + position table --> x [B, N, D],
  N = (S/p)^2 (so400m-patch14-384: 27 x 27 = 729)
  x --N x (x += Attn(LN x); x += MLP(LN x))--> post-LN --> last_hidden_state [B, N, D]
  last_hidden_state --MAP head (optional)--> pooled [B, D]

`preprocess` gives the pixels (the HF processor's squash-resize, rescale and normalise) and
`semantic_tokens` turns the patch features into SAMA's 64 local + 1 global tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from einops import rearrange
from flax import nnx

from sama_jax.models import layers
from sama_jax.models.attention import IMPLEMENTATIONS, attention
from sama_jax.models.dit import BATCH, EMBED, LENGTH
from sama_jax.models.layers import REMAT_POLICIES
DTYPES = ("float32", "bfloat16", "float16")
GLOBAL_TOKENS = ("mean", "pooler")


def siglip_config(**overrides) -> ml_collections.ConfigDict:
  """SigLIP vision config: google/siglip-so400m-patch14-384 shapes unless overridden."""
  c = ml_collections.ConfigDict()
  c.hidden_size = 1152
  c.intermediate_size = 4304
  c.num_layers = 27
  c.num_heads = 16
  c.patch_size = 14
  c.image_size = 384  # square input side; 384 // 14 = 27 patches per side (the remainder is cut)
  c.num_channels = 3
  c.eps = 1e-6
  c.use_head = True  # the MAP (attention-pooling) head giving `pooled`
  # SAMA's semantic tokens (SAMA_METHOD.md §3): grid x grid average-pooled local tokens,
  # then one global token, placed last.
  c.semantic_grid = 8
  c.global_token = "pooler"  # SAMA_METHOD.md decision 3: the pooled (MAP head) output; "mean": mean of all patches
  # Numerics: matmuls in `dtype`; LayerNorms, softmax and the outputs stay float32.
  c.dtype = "float32"
  c.param_dtype = "float32"
  # Execution.
  c.attention = "xla"  # "xla" | "cudnn" | "splash"
  c.remat = "none"
  c.scan_layers = True
  c.update(overrides)
  validate_siglip_config(c)
  return c


def validate_siglip_config(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field, its value and what is allowed."""
  for name, allowed in (("dtype", DTYPES), ("param_dtype", DTYPES), ("attention", IMPLEMENTATIONS),
                        ("remat", REMAT_POLICIES), ("global_token", GLOBAL_TOKENS)):
    if c[name] not in allowed:
      raise ValueError(f"siglip.{name}={c[name]!r}; expected one of {allowed}")
  if c.hidden_size % c.num_heads:
    raise ValueError(f"siglip.hidden_size={c.hidden_size} is not divisible by siglip.num_heads={c.num_heads}")
  if c.image_size < c.patch_size:
    raise ValueError(f"siglip.image_size={c.image_size} is smaller than one patch ({c.patch_size})")
  if c.global_token == "pooler" and not c.use_head:
    raise ValueError("siglip.global_token='pooler' needs the MAP head (siglip.use_head=True)")
  if c.semantic_grid < 1:  # the upper bound, the patch grid side, is checked by semantic_tokens
    raise ValueError(f"siglip.semantic_grid={c.semantic_grid} must be positive")


class Attention(nnx.Module):
  """Scaled multi-head self-attention with biases."""

  def __init__(self, config, rngs: nnx.Rngs):
    d = config.hidden_size
    self.q_proj = layers.dense(d, d, ("embed", "heads"), config, rngs)
    self.k_proj = layers.dense(d, d, ("embed", "heads"), config, rngs)
    self.v_proj = layers.dense(d, d, ("embed", "heads"), config, rngs)
    self.out_proj = layers.dense(d, d, ("heads", "embed"), config, rngs)
    self.num_heads, self.impl = config.num_heads, config.attention

  def __call__(self, x: jax.Array) -> jax.Array:
    split = lambda y: rearrange(y, "b l (h d) -> b l h d", h=self.num_heads)
    out = attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), impl=self.impl)
    return self.out_proj(rearrange(out, "b l h d -> b l (h d)"))


class MLP(nnx.Module):
  def __init__(self, config, rngs: nnx.Rngs):
    self.fc1 = layers.dense(config.hidden_size, config.intermediate_size, ("embed", "mlp"), config, rngs)
    self.fc2 = layers.dense(config.intermediate_size, config.hidden_size, ("mlp", "embed"), config, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(layers.gelu_tanh(self.fc1(x)))


def _norm(norm: nnx.LayerNorm, x: jax.Array) -> jax.Array:
  return norm(x.astype(jnp.float32)).astype(x.dtype)


def _residual(x: jax.Array, y: jax.Array) -> jax.Array:
  return (x.astype(jnp.float32) + y.astype(jnp.float32)).astype(x.dtype)


class EncoderLayer(nnx.Module):
  """x += Attn(LN x); x += MLP(LN x)."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.layer_norm1 = layers.layer_norm(config.hidden_size, config.eps, config, rngs)
    self.self_attn = Attention(config, rngs)
    self.layer_norm2 = layers.layer_norm(config.hidden_size, config.eps, config, rngs)
    self.mlp = MLP(config, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = _residual(x, self.self_attn(_norm(self.layer_norm1, x)))
    x = _residual(x, self.mlp(_norm(self.layer_norm2, x)))
    return layers.constrain(x, (BATCH, LENGTH, EMBED))


class MAPHead(nnx.Module):
  """Multi-head attention pooling: one learned probe attends over the patches, then
  h += MLP(LN h). The q/k/v projections are stored fused, as torch's MultiheadAttention does."""

  def __init__(self, config, rngs: nnx.Rngs):
    d = config.hidden_size
    self.probe = layers.param(nnx.initializers.normal(1.0), (1, d), (None, "embed"), config, rngs)
    self.in_proj = layers.dense(d, 3 * d, ("embed", "heads"), config, rngs)
    self.out_proj = layers.dense(d, d, ("heads", "embed"), config, rngs)
    self.layernorm = layers.layer_norm(d, config.eps, config, rngs)
    self.mlp = MLP(config, rngs)
    self.num_heads = config.num_heads

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, N, D] -> pooled [B, D]."""
    d = x.shape[-1]
    split = lambda y: rearrange(y, "b l (h d) -> b l h d", h=self.num_heads)
    probe = jnp.broadcast_to(self.probe[...].astype(x.dtype), (x.shape[0], 1, d))
    q = self.in_proj(probe)[..., :d]
    kv = self.in_proj(x)  # the q third is wasted; one fused kernel keeps the name table 1:1
    # One query: the einsum reference is as fast as any fused kernel here.
    h = attention(split(q), split(kv[..., d:2 * d]), split(kv[..., 2 * d:]), impl="xla")
    h = self.out_proj(rearrange(h, "b l h d -> b l (h d)"))
    h = _residual(h, self.mlp(_norm(self.layernorm, h)))
    return h[:, 0]


class SiglipVision(nnx.Module):
  """`siglip(pixels [B, S, S, 3]) -> (last_hidden_state [B, N, D], pooled [B, D] or None)`, float32."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.config = config
    d, p = config.hidden_size, config.patch_size
    side = config.image_size // p
    self.patch_embedding = layers.dense(p * p * config.num_channels, d, (None, "embed"), config, rngs,
                                        nnx.initializers.lecun_normal())
    self.position_embedding = layers.param(nnx.initializers.normal(d ** -0.5), (side * side, d),
                                           (None, "embed"), config, rngs)

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_layers(rngs: nnx.Rngs) -> EncoderLayer:
      return EncoderLayer(config, rngs)

    self.layers = make_layers(rngs)
    self.post_layernorm = layers.layer_norm(d, config.eps, config, rngs)
    self.head = MAPHead(config, rngs) if config.use_head else None

  def run_layers(self, x: jax.Array) -> jax.Array:
    """Applies every encoder layer to x: [B, N, D] (scanned or looped, with the remat policy)."""
    return layers.run_stacked(self.layers, x, lambda layer, x: layer(x), remat=self.config.remat,
                              scan=self.config.scan_layers)

  def __call__(self, pixels: jax.Array):
    """pixels: [B, S, S, C] normalised to [-1, 1] (see `preprocess`), S = config.image_size.

    Returns (last_hidden_state [B, N, D] after the post-LayerNorm, pooled [B, D] from the MAP
    head or None without one), both float32. Patch tokens are row-major over the grid.
    """
    c = self.config
    want = (c.image_size, c.image_size, c.num_channels)
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != want:
      raise ValueError(f"siglip takes pixels [B, {c.image_size}, {c.image_size}, {c.num_channels}] "
                       f"(channels last, see preprocess); got shape {tuple(pixels.shape)}")
    p, side = c.patch_size, c.image_size // c.patch_size
    x = pixels[:, :side * p, :side * p].astype(jnp.dtype(c.dtype))  # a "valid" conv drops the rest
    x = rearrange(x, "b (h p) (w q) c -> b (h w) (p q c)", p=p, q=p)
    x = self.patch_embedding(x) + self.position_embedding[...].astype(x.dtype)[None]
    x = self.run_layers(layers.constrain(x, (BATCH, LENGTH, EMBED)))
    hidden = self.post_layernorm(x.astype(jnp.float32))
    pooled = None if self.head is None else self.head(hidden.astype(x.dtype)).astype(jnp.float32)
    return hidden, pooled

  def semantic(self, pixels: jax.Array) -> jax.Array:
    """pixels [B, S, S, C] -> SAMA's semantic tokens [B, grid^2 + 1, D] per the config."""
    hidden, pooled = self(pixels)
    return semantic_tokens(hidden, self.config.semantic_grid, self.config.global_token, pooled)


def preprocess(frames: jax.Array, size: int = 384) -> jax.Array:
  """uint8 frames [B, H, W, 3] -> pixels [B, size, size, 3] float32 in [-1, 1].

  The HF SigLIP processor's steps: squash-resize (no crop, aspect ratio not kept) with
  bicubic resampling to an 8-bit image, rescale by 1/255, normalise with mean 0.5 and
  std 0.5. The resize follows PIL's: Keys cubic (a = -0.5) widened by the scale when
  shrinking, width first, then height, each pass rounded and clipped to 8 bits (PIL's
  intermediate image is 8-bit, which cuts the cubic's overshoot). It agrees with PIL to
  within one 8-bit level, on under 1% of pixels (tests/test_encoders_parity.py).
  """
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != jnp.uint8:
    raise ValueError(f"preprocess takes uint8 RGB frames [B, H, W, 3]; got {frames.dtype} "
                     f"{tuple(frames.shape)}")
  x = frames.astype(jnp.float32)
  for shape in ((x.shape[0], x.shape[1], size, 3), (x.shape[0], size, size, 3)):
    if shape != x.shape:  # PIL skips a pass that keeps the size
      x = jax.image.resize(x, shape, method="bicubic", antialias=True)
      x = jnp.clip(jnp.round(x), 0.0, 255.0)
  return (x / 255.0 - 0.5) / 0.5


def adaptive_pool_matrix(n: int, grid: int) -> np.ndarray:
  """[grid, n] row-stochastic matrix of adaptive average pooling from n cells to `grid` bins:
  bin i averages cells floor(i n / grid) .. ceil((i + 1) n / grid) - 1 (torch's
  adaptive_avg_pool bins, overlapping when grid does not divide n)."""
  m = np.zeros((grid, n), np.float32)
  for i in range(grid):
    start, stop = (i * n) // grid, -(-((i + 1) * n) // grid)
    m[i, start:stop] = 1.0 / (stop - start)
  return m


def semantic_tokens(hidden: jax.Array, grid: int = 8, global_token: str = "mean",
                    pooled: jax.Array | None = None) -> jax.Array:
  """SAMA's semantic tokens from SigLIP patch features (SAMA_METHOD.md §3).

  hidden: [B, N, D] patch features, N = n * n, row-major over the n x n patch grid.
  Returns [B, grid * grid + 1, D] float32: the grid x grid adaptive-average-pooled local
  tokens in row-major order, then ONE global token LAST. The paper does not say where the
  global token goes; the semantic slots carry no position (complex-zero RoPE) and the type
  embedding and head are per-token, so only consistency between training and inference
  matters, and we fix "last" everywhere.
  global_token: "mean" = mean over all N patches; "pooler" = `pooled` [B, D], the MAP head output.
  """
  if hidden.ndim != 3:
    raise ValueError(f"semantic_tokens takes patch features [B, N, D]; got shape {tuple(hidden.shape)}")
  n = int(round(hidden.shape[1] ** 0.5))
  if n * n != hidden.shape[1]:
    raise ValueError(f"semantic_tokens needs a square patch grid; N = {hidden.shape[1]} is not a square")
  if not 1 <= grid <= n:
    raise ValueError(f"grid={grid}; expected 1..{n} for a {n} x {n} patch grid")
  if global_token not in GLOBAL_TOKENS:
    raise ValueError(f"global_token={global_token!r}; expected one of {GLOBAL_TOKENS}")
  hidden = hidden.astype(jnp.float32)
  pool = jnp.asarray(adaptive_pool_matrix(n, grid))
  cells = rearrange(hidden, "b (h w) d -> b h w d", h=n, w=n)
  local = jnp.einsum("ih,jw,bhwd->bijd", pool, pool, cells, precision=jax.lax.Precision.HIGHEST)
  if global_token == "mean":
    glob = hidden.mean(axis=1)
  elif pooled is None:
    raise ValueError("global_token='pooler' needs the MAP head output: pass pooled [B, D]")
  else:
    glob = pooled.astype(jnp.float32)
  return jnp.concatenate([rearrange(local, "b i j d -> b (i j) d"), glob[:, None]], axis=1)
