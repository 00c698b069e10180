"""The Wan2.1 causal 3D VAE in Flax NNX (diffusers `AutoencoderKLWan` semantics), channels last.

  frames [B, T, H, W, 3] in [-1, 1], T = 1 + 4k
    --encoder, chunks [1 | 4 | 4 | ...]--> [B, 1+k, H/8, W/8, 2z] --quant_conv--> first z = μ
    --(μ - mean) / std--> latents [B, 1+k, H/8, W/8, z]
  latents --·std + mean, post_quant_conv--> --decoder, one latent frame at a time-->
    frames [B, 1+4k, H, W, 3], clamped to [-1, 1]

After the first chunk every chunk has the same shape, so the chunk loop is a `lax.scan` that
carries the causal history (vae_blocks.History): compile time and activation memory do not
grow with the clip length. `config.chunked = False` instead runs every frame after the first
as one chunk (the same numbers; for comparison in benchmarks/vae_memory.py).
Spatial tiling is in `vae_tiling.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from einops import rearrange
from flax import nnx

from sama_jax.models.vae_blocks import CausalConv3d, ChannelRMSNorm, History, MidBlock, Resample, ResidualBlock

CHUNK_FRAMES = 4  # frames per encoder chunk after the first; also the temporal compression
DTYPES = ("float32", "bfloat16", "float16")

# Per-channel statistics of Wan2.1 VAE latents (published with Wan2.1_VAE; SAMA_METHOD.md §6.3,
# and diffusers `AutoencoderKLWan` config fields latents_mean / latents_std).
WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def vae_config(**overrides) -> ml_collections.ConfigDict:
  """The VAE config: the published Wan2.1 VAE (SAMA_METHOD.md §6.3) unless overridden."""
  c = ml_collections.ConfigDict()
  c.base_dim = 96
  c.decoder_base_dim = None  # None: same as base_dim
  c.z_dim = 16
  c.dim_mult = (1, 2, 4, 4)
  c.num_res_blocks = 2
  c.temporal_downsample = (False, True, True)  # per encoder level; the decoder mirrors it
  c.in_channels = 3
  c.out_channels = 3
  c.latents_mean = WAN21_LATENTS_MEAN
  c.latents_std = WAN21_LATENTS_STD
  c.dtype = "float32"  # compute dtype of the convolutions; norms and softmax stay float32
  c.param_dtype = "float32"
  c.chunked = True  # scan over 4-frame chunks (reference); False: all frames after the first at once
  c.tile_size = (30, 52)  # spatial tiles in latent units (DiffSynth defaults, SAMA_METHOD.md §4.8)
  c.tile_stride = (15, 26)
  c.update(overrides)
  validate_vae_config(c)
  return c


def validate_vae_config(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field, its value and what is allowed."""
  for name in ("dtype", "param_dtype"):
    if c[name] not in DTYPES:
      raise ValueError(f"vae.{name}={c[name]!r}; expected one of {DTYPES}")
  if len(c.temporal_downsample) != len(c.dim_mult) - 1:
    raise ValueError(f"vae.temporal_downsample={tuple(c.temporal_downsample)} needs one entry per "
                     f"downsampling level, {len(c.dim_mult) - 1} for dim_mult={tuple(c.dim_mult)}")
  if 2 ** sum(map(bool, c.temporal_downsample)) != CHUNK_FRAMES:
    raise ValueError(f"vae.temporal_downsample={tuple(c.temporal_downsample)} compresses time "
                     f"{2 ** sum(map(bool, c.temporal_downsample))}x; the Wan2.1 chunking needs exactly 2 True (4x)")
  for name in ("latents_mean", "latents_std"):
    if len(c[name]) != c.z_dim:
      raise ValueError(f"vae.{name} has {len(c[name])} entries; z_dim={c.z_dim} needs one per channel")
  if min(c.latents_std) <= 0:
    raise ValueError(f"vae.latents_std must be positive; got {tuple(c.latents_std)}")
  for name in ("base_dim", "z_dim", "num_res_blocks", "in_channels", "out_channels"):
    if int(c[name]) <= 0:
      raise ValueError(f"vae.{name}={c[name]} must be positive")
  for name in ("tile_size", "tile_stride"):
    if len(c[name]) != 2 or min(c[name]) <= 0:
      raise ValueError(f"vae.{name}={tuple(c[name])}; expected two positive latent sizes (h, w)")


def spatial_factor(config) -> int:
  return 2 ** (len(config.dim_mult) - 1)


class Encoder(nnx.Module):
  """One chunk [B, T, H, W, C_in] -> [B, 1 or T/4, H/8, W/8, 2z]: T = 1 on the first chunk of a
  clip, then 4 (or every remaining frame at once with config.chunked False)."""

  def __init__(self, config, rngs: nnx.Rngs):
    dims = [config.base_dim * m for m in (1, *config.dim_mult)]
    self.conv_in = CausalConv3d(config.in_channels, dims[0], (3, 3, 3), config, rngs)
    blocks = []
    for level, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      for _ in range(config.num_res_blocks):
        blocks.append(ResidualBlock(in_dim, out_dim, config, rngs))
        in_dim = out_dim
      if level < len(config.dim_mult) - 1:
        mode = "downsample3d" if config.temporal_downsample[level] else "downsample2d"
        blocks.append(Resample(out_dim, mode, config, rngs))
    self.down_blocks = nnx.List(blocks)  # flat, in the reference's order (the names follow it)
    self.mid_block = MidBlock(dims[-1], config, rngs)
    self.norm_out = ChannelRMSNorm(dims[-1], config, rngs)
    self.conv_out = CausalConv3d(dims[-1], 2 * config.z_dim, (3, 3, 3), config, rngs)

  def __call__(self, x: jax.Array, history: History) -> jax.Array:
    x = self.conv_in(x, history)
    for block in self.down_blocks:
      x = block(x, history)
    x = self.mid_block(x, history)
    return self.conv_out(jax.nn.silu(self.norm_out(x)), history)


class UpBlock(nnx.Module):
  """num_res_blocks + 1 residual blocks, then an optional Resample."""

  def __init__(self, in_dim: int, out_dim: int, mode: str | None, config, rngs: nnx.Rngs):
    resnets = []
    for _ in range(config.num_res_blocks + 1):
      resnets.append(ResidualBlock(in_dim, out_dim, config, rngs))
      in_dim = out_dim
    self.resnets = nnx.List(resnets)
    self.upsampler = None if mode is None else Resample(out_dim, mode, config, rngs)

  def __call__(self, x: jax.Array, history: History) -> jax.Array:
    for resnet in self.resnets:
      x = resnet(x, history)
    return x if self.upsampler is None else self.upsampler(x, history)


class Decoder(nnx.Module):
  """One chunk [B, T, h, w, z] -> [B, 1 or 4T, 8h, 8w, C_out]: T = 1 latent frame at a time, or
  every latent frame after the first at once with config.chunked False."""

  def __init__(self, config, rngs: nnx.Rngs):
    base = config.decoder_base_dim or config.base_dim
    mult = tuple(config.dim_mult)
    dims = [base * m for m in (mult[-1], *mult[::-1])]
    temporal_upsample = tuple(config.temporal_downsample)[::-1]
    self.conv_in = CausalConv3d(config.z_dim, dims[0], (3, 3, 3), config, rngs)
    self.mid_block = MidBlock(dims[0], config, rngs)
    blocks = []
    for level, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      if level > 0:  # the previous level's upsampler halved the channels
        in_dim //= 2
      mode = None
      if level < len(mult) - 1:
        mode = "upsample3d" if temporal_upsample[level] else "upsample2d"
      blocks.append(UpBlock(in_dim, out_dim, mode, config, rngs))
    self.up_blocks = nnx.List(blocks)
    self.norm_out = ChannelRMSNorm(dims[-1], config, rngs)
    self.conv_out = CausalConv3d(dims[-1], config.out_channels, (3, 3, 3), config, rngs)

  def __call__(self, x: jax.Array, history: History) -> jax.Array:
    x = self.mid_block(self.conv_in(x, history), history)
    for block in self.up_blocks:
      x = block(x, history)
    return self.conv_out(jax.nn.silu(self.norm_out(x)), history)


def check_frames(shape: tuple[int, ...], config) -> None:
  """Raises ValueError unless `shape` is a video the VAE can encode: [B, 1 + 4k, H, W, C_in]."""
  if len(shape) != 5:
    raise ValueError(f"frames have shape {tuple(shape)}; the VAE takes [B, T, H, W, {config.in_channels}] "
                     "(batch, frames, height, width, channels last)")
  _, t, h, w, c = shape
  if c != config.in_channels:
    hint = " (channels first? move them last)" if config.in_channels in shape[1:3] else ""
    raise ValueError(f"frames have {c} channels in the last axis; the VAE takes {config.in_channels}"
                     f" as [B, T, H, W, C]{hint}")
  if t < 1 or (t - 1) % CHUNK_FRAMES:
    below = 1 + max(0, (t - 1) // CHUNK_FRAMES) * CHUNK_FRAMES
    raise ValueError(f"video has {t} frames; the VAE needs 1 + {CHUNK_FRAMES}k (e.g. {below} or "
                     f"{below + CHUNK_FRAMES})")
  f = spatial_factor(config)
  if h % f or w % f:
    raise ValueError(f"frame size {h}x{w} (HxW) is not divisible by {f}; the VAE downsamples "
                     f"space {f}x (crop or pad to {h - h % f}x{w - w % f} or larger)")


def check_latents(shape: tuple[int, ...], config) -> None:
  """Raises ValueError unless `shape` is [B, T_lat >= 1, h, w, z_dim]."""
  if len(shape) != 5 or shape[-1] != config.z_dim or shape[1] < 1:
    raise ValueError(f"latents have shape {tuple(shape)}; the VAE decodes [B, T_lat, h, w, {config.z_dim}] "
                     "(channels last, at least one latent frame)")


class WanVAE(nnx.Module):
  """Wan2.1 VAE: `encode` frames to normalised posterior-mean latents, `decode` them back."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.config = config
    z = config.z_dim
    self.encoder = Encoder(config, rngs)
    self.quant_conv = CausalConv3d(2 * z, 2 * z, (1, 1, 1), config, rngs)
    self.post_quant_conv = CausalConv3d(z, z, (1, 1, 1), config, rngs)
    self.decoder = Decoder(config, rngs)

  def _stats(self) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(self.config.latents_mean, np.float32),
            np.asarray(self.config.latents_std, np.float32))

  def encode(self, frames: jax.Array) -> jax.Array:
    """frames [B, 1+4k, H, W, C_in] in [-1, 1] -> latents [B, 1+k, H/8, W/8, z] float32,
    (μ - latents_mean) / latents_std: deterministic, the posterior mean."""
    check_frames(frames.shape, self.config)
    x = frames.astype(jnp.dtype(self.config.dtype))
    first = History()
    out = self.encoder(x[:, :1], first)
    rest = x[:, 1:]
    if rest.shape[1]:
      if self.config.chunked:
        chunks = rearrange(rest, "b (n f) h w c -> n b f h w c", f=CHUNK_FRAMES)
        out_rest = _scan_chunks(self.encoder, first.left, chunks)
      else:
        out_rest = self.encoder(rest, History(first.left))
      out = jnp.concatenate([out, out_rest], axis=1)
    mu = self.quant_conv(out)[..., :self.config.z_dim].astype(jnp.float32)
    mean, std = self._stats()
    return (mu - mean) / std

  def decode(self, latents: jax.Array, clamp: bool = True) -> jax.Array:
    """latents [B, T_lat, h, w, z] (normalised) -> frames [B, 1 + 4(T_lat-1), 8h, 8w, C_out]
    float32, clamped to [-1, 1] unless clamp=False (tiled decoding clamps after blending)."""
    check_latents(latents.shape, self.config)
    mean, std = self._stats()
    z = (latents.astype(jnp.float32) * std + mean).astype(jnp.dtype(self.config.dtype))
    z = self.post_quant_conv(z)
    first = History()
    out = self.decoder(z[:, :1], first)
    rest = z[:, 1:]
    if rest.shape[1]:
      if self.config.chunked:
        out_rest = _scan_chunks(self.decoder, first.left, rearrange(rest, "b n h w c -> n b 1 h w c"))
      else:
        out_rest = self.decoder(rest, History(first.left))
      out = jnp.concatenate([out, out_rest], axis=1)
    out = out.astype(jnp.float32)
    return jnp.clip(out, -1.0, 1.0) if clamp else out


def _scan_chunks(net: nnx.Module, past: list[jax.Array], chunks: jax.Array) -> jax.Array:
  """Runs `net` over chunks [N, B, F, H, W, C] in order, carrying the causal history;
  returns the outputs joined in time, [B, N·F', H', W', C']."""

  def step(carry, chunk):
    history = History(carry)
    y = net(chunk, history)
    return history.left, y

  _, ys = jax.lax.scan(step, past, chunks)
  return rearrange(ys, "n b f h w c -> b (n f) h w c")
