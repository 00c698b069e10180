"""Long videos: window layout and blending, continuous temporal RoPE, windowed editing.

One tiny random model serves every test (model construction is the slow part on CPU)."""

import copy
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from sama_jax import edit as edit_module
from sama_jax.config import model_config
from sama_jax.data import video as video_module
from sama_jax.data.video import read_video, write_video
from sama_jax.diffusion.windows import (blend, blend_weights, latent_window, overlap_frames, split_windows,
                                        window_starts, windowed_velocity)
from sama_jax.edit import EditBundle, edit, edit_config, main
from sama_jax.encoders import build_encoders, encoders_config
from sama_jax.models import SamaDiT
from sama_jax.models.dit import unpatchify
from sama_jax.models.rope import constant_rope, grid_rope

MODEL = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, freq_dim=32, in_channels=48,
             out_channels=48, semantic_dim=48, semantic_hidden_dim=32, num_semantic_tokens=5)


@pytest.fixture(scope="module")
def bundle():
  config = ml_collections.ConfigDict()
  config.model = model_config(**MODEL)
  config.encoders = encoders_config(text_len=16)
  config.edit = edit_config(area=32 * 32, factor=16, steps=2)
  model = SamaDiT(config.model, nnx.Rngs(0))
  # A random (not zero) output head and type embeddings, so every input matters.
  model.dit.head.proj_out.kernel[...] = 0.05 * jax.random.normal(jax.random.key(0),
                                                                 model.dit.head.proj_out.kernel.shape)
  model.segment_embedding[...] = 0.1 * jax.random.normal(jax.random.key(1), model.segment_embedding.shape)
  return EditBundle(model, build_encoders(config.encoders), config)


def with_config(model: SamaDiT, **overrides) -> SamaDiT:
  """The same parameters under a changed model config (no new initialisation)."""
  config = model_config(**{**model.config.to_dict(), **overrides})
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: SamaDiT(config, nnx.Rngs(0))))
  return nnx.merge(graphdef, nnx.state(model))


def clip(frames: int, seed: int = 0) -> np.ndarray:
  """A smooth moving gradient with noise: uint8 [T, 32, 32, 3]."""
  rng = np.random.default_rng(seed)
  t, y, x = np.meshgrid(np.arange(frames), np.arange(32), np.arange(32), indexing="ij")
  base = np.stack([(x + 2 * t) % 32 * 8, y * 8, (x + y + t) % 32 * 8], axis=-1)
  return np.clip(base + rng.integers(0, 30, base.shape), 0, 255).astype(np.uint8)


# --- window layout ----------------------------------------------------------------------

@pytest.mark.parametrize("length,window,overlap", [(11, 5, 1), (41, 17, 4), (33, 9, 2), (10, 3, 1), (100, 21, 5)])
def test_windows_cover_every_frame_with_equal_lengths_and_the_configured_overlap(length, window, overlap):
  starts = window_starts(length, window, overlap)
  assert starts[0] == 0 and starts[-1] + window == length
  assert all(0 <= s and s + window <= length for s in starts)
  covered = np.zeros(length, bool)
  for s in starts:
    covered[s:s + window] = True
  assert covered.all()
  shared = [a + window - b for a, b in zip(starts, starts[1:])]
  assert all(n == overlap for n in shared[:-1]) and shared[-1] >= overlap  # the last one is shifted back


def test_one_window_when_it_covers_the_video():
  assert window_starts(9, 9, 2) == (0,) and window_starts(5, 17, 4) == (0,)


@pytest.mark.parametrize("length,window,overlap", [(11, 5, 1), (41, 17, 4), (10, 3, 1), (9, 9, 2)])
def test_blend_weights_sum_to_one_on_every_frame(length, window, overlap):
  starts = window_starts(length, window, overlap)
  weights = blend_weights(starts, window, length)
  total = np.zeros(length)
  for s, w in zip(starts, weights):
    total[s:s + window] += w
  np.testing.assert_allclose(total, 1.0, atol=1e-6)
  assert (weights > 0).all()


def test_blending_the_windows_of_a_video_gives_the_video_back():
  x = jax.random.normal(jax.random.key(0), (2, 11, 3, 4))
  starts = window_starts(11, 5, 1)
  out = blend(split_windows(x, starts, 5), starts, blend_weights(starts, 5, 11), 11)
  np.testing.assert_allclose(out, x, atol=1e-6)


def test_overlaps_cross_fade_linearly():
  starts = window_starts(11, 5, 1)  # (0, 4, 6): windows 2 and 3 share frames 6, 7, 8
  w = blend_weights(starts, 5, 11)
  np.testing.assert_allclose(w[2, :3], [0.25, 0.5, 0.75])
  np.testing.assert_allclose(w[1, 2:], [0.75, 0.5, 0.25])


def test_latent_window_follows_the_codec_temporal_factor():
  assert latent_window(17, 41, 11) == 5  # Wan VAE: 4 frames per latent frame
  assert latent_window(17, 41, 41) == 17  # patch codec: none
  assert overlap_frames(5, 0.25) == 1 and overlap_frames(17, 0.25) == 4 and overlap_frames(2, 0.9) == 1


# --- continuous temporal RoPE -----------------------------------------------------------

def runs(model):
  """Inputs, and the jitted model on them at the default offset and at a traced frame
  offset (one compilation for every offset)."""
  keys = jax.random.split(jax.random.key(2), 4)
  inputs = dict(x=jax.random.normal(keys[0], (1, 3, 4, 4, 48)), t=jnp.array([500.0]),
                text=jax.random.normal(keys[1], (1, 5, 32)), source=jax.random.normal(keys[2], (1, 3, 4, 4, 48)),
                semantic=jax.random.normal(keys[3], (1, 5, 48)))
  call = lambda **kw: model(inputs["x"], inputs["t"], inputs["text"], source=inputs["source"],
                            semantic=inputs["semantic"], **kw)
  return inputs, jax.jit(call), jax.jit(lambda o: call(frame_offset=o))


@pytest.fixture(scope="module")
def identity_semantic(bundle):
  # Semantic tokens without rotation see absolute positions, so an offset changes the output.
  model = with_config(bundle.model, semantic_rope="identity")
  return (model, *runs(model))


def test_frame_offset_zero_is_bit_identical_static_or_traced(identity_semantic):
  _, _, plain, at = identity_semantic
  for a, b in zip(plain(), at(jnp.int32(0))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_frame_offset_moves_only_the_temporal_rope_positions(identity_semantic):
  model, inputs, plain, at = identity_semantic
  c = model.config
  # By hand: the unshifted sequence, with the RoPE tables of source and target built
  # 6 frames further on.
  grid, head_dim = (3, 2, 2), c.dim // c.num_heads
  table = grid_rope(grid, head_dim, c.rope_max_len, c.rope_theta, (6, 0, 0))
  parts = [table, constant_rope(5, head_dim, 1.0), table]
  rope = tuple(jnp.concatenate([p[i] for p in parts]) for i in range(2))

  @jax.jit
  def by_hand():
    tokens, _, (n_source, n_semantic, _) = model.assemble(inputs["x"], inputs["source"], inputs["semantic"])
    temb, mod, ctx = model.dit.condition_embedder(inputs["t"], inputs["text"])
    h = model.dit.run_blocks(tokens, ctx, mod, rope)
    return unpatchify(model.dit.head(h[:, n_source + n_semantic:], temb), grid, (1, 2, 2))

  moved = np.asarray(at(jnp.int32(6))[0])
  np.testing.assert_allclose(moved, np.asarray(by_hand()), atol=1e-6, rtol=0)
  assert np.abs(moved - np.asarray(plain()[0])).max() > 1e-3


def test_with_zero_rotated_semantic_tokens_an_offset_changes_nothing_but_rounding(bundle):
  # RoPE is relative: shifting source and target together leaves every q·k unchanged, and
  # the released "zero" rotation gives semantic tokens no position at all.
  _, plain, at = runs(with_config(bundle.model, source_rope="shifted"))
  np.testing.assert_allclose(np.asarray(at(jnp.int32(40))[0]), np.asarray(plain()[0]), atol=1e-5, rtol=0)


def test_frame_offset_beyond_the_rope_table_is_refused(identity_semantic):
  model, i, _, _ = identity_semantic
  with pytest.raises(ValueError, match="t positions reach 1025 but the RoPE table covers 1024"):
    model(i["x"], i["t"], i["text"], source=i["source"], frame_offset=1022)
  with pytest.raises(ValueError, match="frame_offset=-1"):
    model(i["x"], i["t"], i["text"], source=i["source"], frame_offset=-1)


# --- windowed editing -------------------------------------------------------------------

def test_one_window_covering_everything_equals_the_plain_model(identity_semantic):
  model, i, plain, _ = identity_semantic
  model_fn = lambda x, t, ctx, s, source_w, offset: model(x, t, ctx, source=source_w, semantic=s,
                                                          frame_offset=offset)
  windowed = jax.jit(windowed_velocity(model_fn, i["source"], (0,), 3))(i["x"], i["t"], i["text"], i["semantic"])
  for a, b in zip(windowed, plain()):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


def test_long_odd_length_video_edits_in_windows_and_keeps_its_frame_count(bundle):
  frames = clip(39)  # padded to 41 = 1 + 4·10; windows of 17 start at latent frames 0, 13, 24
  windowed = edit(bundle, frames, "make the red circle blue", max_window_frames=17)
  plain = edit(bundle, frames, "make the red circle blue")
  assert windowed.shape == plain.shape == (39, 32, 32, 3)
  assert np.abs(windowed.astype(int) - plain).max() > 0  # the windows did run
  # A window as long as the (padded) video is the plain edit, exactly.
  np.testing.assert_array_equal(edit(bundle, frames, "make the red circle blue", max_window_frames=41), plain)


def test_rope_table_too_short_for_the_video_is_refused(bundle):
  config = copy.deepcopy(bundle.config)
  config.model.rope_max_len = 16
  with pytest.raises(ValueError, match="positions up to 41, but model.rope_max_len=16"):
    edit(EditBundle(bundle.model, bundle.encoders, config), clip(39), "make it blue", max_window_frames=17)


@pytest.fixture
def cli(bundle, monkeypatch, tmp_path):
  """main() on a 17-frame clip, editing with the fixture bundle (loading is tested elsewhere)."""
  monkeypatch.setattr(edit_module, "load_bundle", lambda *args, **kwargs: bundle)
  video = str(tmp_path / "in.mp4")
  write_video(video, clip(17), 12.0)
  return lambda *flags: main(["--checkpoint", video, "--video", video, "--instruction", "make it blue",
                              "--out", str(tmp_path / "out.mp4"), *flags])


def test_cli_max_window_frames_edits_the_whole_video_in_windows(cli, bundle, tmp_path, monkeypatch):
  # Compare the frames the CLI encodes, not two H.264 files: libx264 is not repeatable on
  # 32x32 frames (the same frames encode differently from run to run, by up to ~30 levels).
  written = []
  real_write = video_module.write_video
  monkeypatch.setattr(video_module, "write_video", lambda path, frames, fps: (written.append(frames),
                                                                             real_write(path, frames, fps)))
  assert cli("--max-window-frames", "9") == 0
  frames, fps = read_video(str(tmp_path / "out.mp4"))
  assert (len(frames), fps) == (17, 12.0)
  # max_frames no longer cuts the video: the windows bound the memory instead.
  expected = edit(bundle, read_video(str(tmp_path / "in.mp4"))[0], "make it blue", max_window_frames=9,
                  max_frames=9)
  assert len(written) == 1
  np.testing.assert_array_equal(written[0], expected)


@pytest.mark.parametrize("value", ["8", "1", "-5"])
def test_bad_window_is_one_line_and_exit_code_2(cli, capsys, value):
  code = cli("--max-window-frames", value)
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert len(err.splitlines()) == 1 and err.startswith("error:")
  assert re.search(rf"max_window_frames={value}; expected 0 \(off\) or a window of 1 \+ 4k >= 5", err), err
