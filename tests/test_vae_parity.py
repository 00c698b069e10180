"""The JAX Wan2.1 VAE equals diffusers' AutoencoderKLWan on the same random weights.

Tolerance: max |ours - ref| / max |ref| <= 1e-4 in float32. Both sides run float32 with
full-precision matmuls and convolutions; what differs is summation order (and our scan over
chunks against diffusers' Python loop), which stays far below 1e-4 at these sizes. Every
parameter is random (norm gammas and biases too), so a mixed-up tensor cannot hide.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from conftest import rel_error  # noqa: E402
from flax import nnx  # noqa: E402

from sama_jax.convert import load_torch_vae  # noqa: E402
from sama_jax.convert import safetensors_io as io  # noqa: E402
from sama_jax.convert.torch_to_safetensors import convert as pth_to_safetensors  # noqa: E402
from sama_jax.convert.vae import save_torch_vae  # noqa: E402
from sama_jax.models.vae import vae_config  # noqa: E402
from sama_jax.models.vae_tiling import decode_tiled, encode_tiled, tile_spans  # noqa: E402

TOL = 1e-4
TINY = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
            latents_mean=[0.1, -0.2, 0.3, 0.05], latents_std=[1.5, 0.7, 2.0, 1.2])


def tiny_diffusers_vae(seed=0, **kwargs):
  """An AutoencoderKLWan with every parameter random: gammas around 1, biases around 0,
  weights scaled by 1/sqrt(fan_in) so that decoded pixels mostly stay inside [-1, 1]."""
  from diffusers import AutoencoderKLWan

  torch.manual_seed(seed)
  model = AutoencoderKLWan(**(kwargs or TINY))
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("gamma"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn_like(p))
      else:
        p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
  return model.eval()


def _stats(model):
  return (np.asarray(model.config.latents_mean, np.float32), np.asarray(model.config.latents_std, np.float32))


def reference_encode(model, frames):
  """frames [B, T, H, W, 3] -> normalised posterior mean [B, T', h, w, z] (channels last)."""
  with torch.no_grad():
    mu = model.encode(torch.from_numpy(np.moveaxis(frames, -1, 1))).latent_dist.mean
  mean, std = _stats(model)
  return (np.moveaxis(mu.numpy(), 1, -1) - mean) / std


def reference_decode(model, latents):
  """normalised latents [B, T', h, w, z] -> frames [B, T, H, W, 3] in [-1, 1]."""
  mean, std = _stats(model)
  z = np.ascontiguousarray(np.moveaxis(latents * std + mean, -1, 1))
  with torch.no_grad():
    frames = model.decode(torch.from_numpy(z)).sample
  return np.moveaxis(frames.numpy(), 1, -1)


def jitted(vae):
  graphdef, state = nnx.split(vae)
  encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x))
  decode = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z))
  return (lambda x: np.asarray(encode(state, x))), (lambda z: np.asarray(decode(state, z)))


def video(batch, frames, height, width, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, frames, height, width, 3)).astype(np.float32)


def latents(batch, frames, height, width, channels=4, seed=1):
  return np.random.default_rng(seed).standard_normal((batch, frames, height, width, channels)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(torch model, its diffusers folder, our VAE loaded from it, jitted (encode, decode))."""
  model = tiny_diffusers_vae()
  folder = str(tmp_path_factory.mktemp("wan_vae"))
  model.save_pretrained(folder, safe_serialization=True)
  vae, _ = load_torch_vae(folder)
  return model, folder, vae, jitted(vae)


SIZES = [
    (1, 1, 16, 24),  # an image: the first chunk only
    (2, 5, 24, 16),  # batch 2, one 4-frame chunk after the first, taller than wide
    (1, 9, 16, 24),  # two scanned chunks
]


def test_config_read_from_diffusers_folder(reference):
  _, folder, vae, _ = reference
  c = vae.config
  assert (c.base_dim, c.z_dim, tuple(c.dim_mult), c.num_res_blocks) == (8, 4, (1, 2, 2, 2), 1)
  assert tuple(c.temporal_downsample) == (False, True, True)
  np.testing.assert_allclose(c.latents_std, TINY["latents_std"])


@pytest.mark.parametrize("batch,frames,height,width", SIZES)
def test_encode_matches_reference(reference, batch, frames, height, width):
  model, _, _, (encode, _) = reference
  x = video(batch, frames, height, width)
  ref = reference_encode(model, x)
  ours = encode(x)
  assert ours.shape == ref.shape == (batch, 1 + (frames - 1) // 4, height // 8, width // 8, 4)
  assert rel_error(ours, ref) <= TOL


@pytest.mark.parametrize("batch,frames,height,width", SIZES)
def test_decode_matches_reference(reference, batch, frames, height, width):
  model, _, _, (_, decode) = reference
  z = latents(batch, 1 + (frames - 1) // 4, height // 8, width // 8)
  ref = reference_decode(model, z)
  ours = decode(z)
  assert ours.shape == ref.shape == (batch, frames, height, width, 3)
  assert np.mean(np.abs(ref) >= 1.0) < 0.2  # the clamp leaves most pixels to compare
  assert rel_error(ours, ref) <= TOL
  assert ours.min() >= -1.0 and ours.max() <= 1.0


def test_whole_clip_equals_chunked_scan(reference):
  """config.chunked=False (all frames after the first in one pass) computes the same numbers."""
  _, folder, vae, (encode, decode) = reference
  whole, _ = load_torch_vae(folder, vae_config(**{**TINY, "chunked": False}))
  encode_whole, decode_whole = jitted(whole)
  x, z = video(1, 9, 16, 16), latents(1, 3, 2, 2)
  assert rel_error(encode_whole(x), encode(x)) <= 1e-5
  assert rel_error(decode_whole(z), decode(z)) <= 1e-5


def test_tiles_covering_the_frame_equal_untiled(reference):
  """One tile holds the whole frame (the default 30x52 tile at this size): the same
  computation as untiled, so equal to float32 rounding (1e-6)."""
  _, _, vae, (encode, decode) = reference
  x, z = video(1, 5, 16, 24), latents(1, 2, 2, 3)
  assert tile_spans(2, 30, 15) == [(0, 2)]
  assert rel_error(encode_tiled(vae, x), encode(x)) <= 1e-6
  assert rel_error(decode_tiled(vae, z), decode(z)) <= 1e-6


def test_overlapping_tiles_blend_with_linear_ramps(reference):
  """Latent width 6, tile 4, stride 2: tiles at columns [0, 4) and [2, 6); the origin 4 is
  skipped because the tile at 2 reaches the end. On the 2-column overlap the left tile's
  weights fall and the right tile's rise, (i+1)/L with L = 2 latents (16 pixels decoded)."""
  _, _, vae, _ = reference
  graphdef, state = nnx.split(vae)
  enc = jax.jit(lambda x: nnx.merge(graphdef, state).encode(x))
  dec = jax.jit(lambda z: nnx.merge(graphdef, state).decode(z, clamp=False))
  assert tile_spans(6, 4, 2) == [(0, 4), (2, 6)]

  x = video(1, 5, 16, 48)
  left, right = np.asarray(enc(x[:, :, :, :32])), np.asarray(enc(x[:, :, :, 16:]))
  ours = encode_tiled(vae, x, tile=(4, 4), stride=(2, 2))
  want = np.concatenate([left[:, :, :, :2], (left[:, :, :, 2:3] + 0.5 * right[:, :, :, 0:1]) / 1.5,
                         (0.5 * left[:, :, :, 3:4] + right[:, :, :, 1:2]) / 1.5, right[:, :, :, 2:]], axis=3)
  np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-6)
  assert rel_error(ours, np.asarray(enc(x))) > 1e-3  # tiles see less context: it really blends

  z = latents(1, 2, 2, 6)
  left, right = np.asarray(dec(z[:, :, :, :4])), np.asarray(dec(z[:, :, :, 2:]))
  i = np.arange(16, dtype=np.float32)
  w_left, w_right = (16 - i) / 16, (i + 1) / 16  # per pixel column of the overlap
  overlap = (left[:, :, :, 16:] * w_left[:, None] + right[:, :, :, :16] * w_right[:, None]) / (17 / 16)
  want = np.clip(np.concatenate([left[:, :, :, :16], overlap, right[:, :, :, 16:]], axis=3), -1, 1)
  np.testing.assert_allclose(decode_tiled(vae, z, tile=(4, 4), stride=(2, 2)), want, rtol=1e-5, atol=1e-6)


def test_official_layout_matches_diffusers_converter_and_reference(tmp_path):
  """The original Wan2.1_VAE naming written from our table is exactly what diffusers' own
  single-file converter maps back onto AutoencoderKLWan (which hard-codes the published
  2 residual blocks x 4 levels, hence this model's shape); a .pth in that naming converts to
  safetensors and loads with the architecture inferred from shapes alone."""
  from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

  model = tiny_diffusers_vae(seed=1, base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2)
  model.save_pretrained(tmp_path / "diffusers", safe_serialization=True)
  vae, config = load_torch_vae(str(tmp_path / "diffusers"))
  official = str(tmp_path / "official.safetensors")
  save_torch_vae(vae, config, official, layout="official")
  names = io.index_files(official)
  tensors = {name: io.read_tensor(file, name) for name, file in names.items()}
  assert "decoder.upsamples.4.shortcut.weight" in tensors and "encoder.downsamples.5.time_conv.weight" in tensors
  mapped = convert_wan_vae_to_diffusers(tensors)
  expected = {k: v.numpy() for k, v in model.state_dict().items()}
  assert sorted(mapped) == sorted(expected)
  for name, value in mapped.items():
    np.testing.assert_array_equal(value, expected[name], err_msg=name)

  pth = str(tmp_path / "Wan2.1_VAE.pth")
  torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, pth)
  pth_to_safetensors(pth, str(tmp_path / "from_pth.safetensors"))
  vae, config = load_torch_vae(str(tmp_path / "from_pth.safetensors"))  # config from shapes
  assert (config.base_dim, config.z_dim, tuple(config.dim_mult), config.num_res_blocks) == (4, 16, (1, 2, 4, 4), 2)
  encode, decode = jitted(vae)
  x, z = video(1, 5, 16, 16), latents(1, 2, 2, 2, channels=16)
  assert rel_error(encode(x), reference_encode(model, x)) <= TOL
  assert rel_error(decode(z), reference_decode(model, z)) <= TOL


def test_diffusers_layout_round_trips(reference, tmp_path):
  from diffusers import AutoencoderKLWan

  model, _, vae, _ = reference
  save_torch_vae(vae, vae.config, str(tmp_path), layout="diffusers")
  reloaded = AutoencoderKLWan.from_pretrained(str(tmp_path))
  assert reloaded.config.latents_std == model.config.latents_std
  for name, value in reloaded.state_dict().items():
    np.testing.assert_array_equal(value.numpy(), model.state_dict()[name].numpy(), err_msg=name)


@pytest.mark.parametrize("method,shape,message", [
    ("encode", (1, 3, 16, 16, 3), "video has 3 frames; the VAE needs 1 + 4k"),
    ("encode", (1, 3, 5, 16, 16), "channels first"),
    ("encode", (1, 5, 20, 16, 3), "frame size 20x16 (HxW) is not divisible by 8"),
    ("encode", (5, 16, 16, 3), "the VAE takes [B, T, H, W, 3]"),
    ("decode", (1, 2, 2, 2, 16), "the VAE decodes [B, T_lat, h, w, 4]"),
])
def test_bad_inputs_raise_clear_errors(reference, method, shape, message):
  _, _, vae, _ = reference
  with pytest.raises(ValueError) as error:
    getattr(vae, method)(np.zeros(shape, np.float32))
  assert message in str(error.value)


def test_bad_tiles_and_configs_raise_clear_errors(reference):
  _, folder, vae, _ = reference
  with pytest.raises(ValueError, match="stride <= size"):
    encode_tiled(vae, video(1, 1, 16, 16), tile=(2, 2), stride=(3, 3))
  with pytest.raises(ValueError, match="does not match the checkpoint"):
    load_torch_vae(folder, vae_config(**{**TINY, "base_dim": 12}))
  with pytest.raises(ValueError, match="needs exactly 2 True"):
    vae_config(temporal_downsample=(True, True, True))
  with pytest.raises(ValueError, match="latents_mean has 16 entries"):
    vae_config(z_dim=4)
