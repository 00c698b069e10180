"""Contrastive pre-training of the world SigLIP stand-in (sama_jax/world_siglip.py)."""
import jax.numpy as jnp
import numpy as np
import pytest

from sama_jax.encoders import build_encoders, encoders_config
from sama_jax.data.synthetic_scene import SHAPES
from sama_jax.models.siglip import preprocess
from sama_jax.world_siglip import load_into, pretrain, save, sigmoid_loss, unit, world_frames

ENCODERS = dict(world_siglip_dim=16, world_image_size=16, world_patch=4, world_text_dim=16, text_len=8)


def test_sigmoid_loss_is_siglips_pairwise_loss():
  rng = np.random.default_rng(0)
  images, captions = (np.asarray(unit(jnp.asarray(rng.normal(size=(4, 8)), jnp.float32))) for _ in range(2))
  t, b = 1.3, -2.0
  logits = np.exp(t) * images @ captions.T + b
  labels = 2 * np.eye(4) - 1
  want = np.mean(np.sum(np.log1p(np.exp(-labels * logits)), axis=1))
  got = float(sigmoid_loss(jnp.asarray(images), jnp.asarray(captions), jnp.float32(t), jnp.float32(b)))
  assert np.isclose(got, want, rtol=1e-5)
  # Matched pairs aligned and the rest apart score lower than the same embeddings shuffled.
  aligned = float(sigmoid_loss(jnp.asarray(images), jnp.asarray(images), jnp.float32(t), jnp.float32(b)))
  assert aligned < float(sigmoid_loss(jnp.asarray(images), jnp.asarray(images[::-1]), jnp.float32(t), jnp.float32(b)))


def test_sigmoid_loss_counts_extra_captions_as_negatives_for_every_image():
  rng = np.random.default_rng(1)
  images = np.asarray(unit(jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)))
  captions = np.asarray(unit(jnp.asarray(rng.normal(size=(5, 8)), jnp.float32)))
  t, b = 0.7, -1.0
  logits = np.exp(t) * images @ captions.T + b
  labels = -np.ones((3, 5))
  labels[np.arange(3), np.arange(3)] = 1
  want = np.mean(np.sum(np.log1p(np.exp(-labels * logits)), axis=1))
  got = float(sigmoid_loss(jnp.asarray(images), jnp.asarray(captions), jnp.float32(t), jnp.float32(b)))
  assert np.isclose(got, want, rtol=1e-5)


def test_world_frames_are_captioned_training_scenes():
  frames, captions, swapped = world_frames(6, 0, 16, 16)
  assert frames.shape == (6, 16, 16, 3) and frames.dtype == np.uint8
  # One frame: the grammar calls every object still.
  assert all(c.startswith(("a ", "an ")) and " standing still on " in c and c.endswith("background")
             for c in captions)
  # The hard negative changes exactly one shape word and nothing else.
  for caption, other in zip(captions, swapped):
    words, changed = caption.split(), other.split()
    differ = [(a, b) for a, b in zip(words, changed) if a != b]
    assert len(words) == len(changed) and len(differ) == 1 and set(differ[0]) <= set(SHAPES)


def test_pretraining_lowers_the_loss_and_build_encoders_loads_the_result(tmp_path):
  config = encoders_config(**ENCODERS)
  random_siglip = build_encoders(config).siglip
  siglip, history = pretrain(config, steps=40, batch_size=8, pool=32, learning_rate=3e-3, height=16, width=16,
                             progress=False)
  losses = history["loss"]
  assert len(losses) == 40 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
  assert 0.0 <= history["retrieval"] <= 1.0 and 0.0 < history["retrieval_chance"] <= 1.0
  assert 0.0 <= history["shape_retrieval"] <= 1.0
  path = save(siglip, str(tmp_path / "siglip"))
  loaded = build_encoders(encoders_config(**ENCODERS, world_siglip_init=path)).siglip
  pixels = preprocess(jnp.asarray(world_frames(2, 5, 16, 16)[0]), 16)
  np.testing.assert_array_equal(np.asarray(loaded.semantic(pixels)), np.asarray(siglip.semantic(pixels)))
  assert not np.allclose(np.asarray(loaded.semantic(pixels)), np.asarray(random_siglip.semantic(pixels)))


def test_shape_negatives_join_the_batch_and_change_the_training():
  config = encoders_config(**ENCODERS)
  kwargs = dict(steps=3, batch_size=4, pool=8, height=16, width=16, progress=False)
  plain = pretrain(config, **kwargs)[1]
  hard = pretrain(config, shape_negatives=True, **kwargs)[1]
  # The same frames and init: only the extra negatives differ, so the first loss is larger.
  assert hard["loss"][0] > plain["loss"][0]
  assert 0.0 <= hard["shape_retrieval"] <= 1.0


def test_bad_arguments_and_a_missing_checkpoint_are_refused(tmp_path):
  config = encoders_config(**ENCODERS)
  with pytest.raises(ValueError, match="steps=0"):
    pretrain(config, steps=0)
  with pytest.raises(ValueError, match="only the world stand-in"):
    pretrain(encoders_config(**ENCODERS, semantic="none"), steps=1)
  with pytest.raises(FileNotFoundError, match="no world SigLIP checkpoint"):
    load_into(build_encoders(config).siglip, str(tmp_path / "missing"))


def test_prepare_points_both_stages_at_one_pretrained_siglip_and_reuses_it(tmp_path):
  from sama_jax.demo import demo_config
  from sama_jax.world_siglip import prepare

  demo = demo_config("smoke")
  assert demo.siglip.steps > 0 and demo_config("default").siglip.steps > 0
  path = prepare(demo, str(tmp_path), progress=False)
  assert path == str(tmp_path / "world_siglip") and (tmp_path / "world_siglip").is_dir()
  assert demo.stage1.encoders.world_siglip_init == demo.stage2.encoders.world_siglip_init == path
  stamp = (tmp_path / "world_siglip").stat().st_mtime_ns
  again = demo_config("smoke")
  assert prepare(again, str(tmp_path), progress=False) == path  # a rerun reuses the folder
  assert (tmp_path / "world_siglip").stat().st_mtime_ns == stamp
  off = demo_config("smoke")
  off.siglip.steps = 0
  assert prepare(off, str(tmp_path / "other"), progress=False) is None
  assert off.stage1.encoders.world_siglip_init == "" and not (tmp_path / "other").exists()
