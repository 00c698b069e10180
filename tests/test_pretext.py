"""Motion Alignment pretext corruptions (sama_jax.data.pretext) against SAMA_METHOD.md
§1.5 and §5.2: exact frame bookkeeping, the task sentences and the 1:2:3:4 task mix."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from sama_jax.data import pretext as P

VIDEOS = os.path.join(REPO, "..", "shared", "testdata", "videos")


def clip(frames=9, height=8, width=12, seed=0) -> np.ndarray:
  """Random content in 1..255, so no frame is black unless a task blacks it out."""
  return np.random.default_rng(seed).integers(1, 256, (frames, height, width, 3), dtype=np.uint8)


def black_frames(frames: np.ndarray) -> list[int]:
  return [int(i) for i in np.flatnonzero(frames.reshape(len(frames), -1).max(axis=1) == 0)]


def run_task(name, frames, seed=0, **params):
  return P.TASKS[name](frames, np.random.default_rng(seed), **params)


# ---------------------------------------------------------------------------------------
# Every task.


@pytest.mark.parametrize("name", ["none", "cube", "speed", "tube"])
def test_tasks_keep_dtype_and_frame_size_return_the_clean_target_and_leave_the_input_alone(name):
  frames = clip()
  before = frames.copy()
  corrupted, target, prefix = run_task(name, frames)
  assert corrupted.dtype == np.uint8 and corrupted.shape[1:] == frames.shape[1:]
  assert target is frames and np.array_equal(frames, before)
  assert prefix == "" if name == "none" else prefix.startswith("[") and prefix.endswith(".]")


@pytest.mark.parametrize("name", ["cube", "speed", "tube"])
def test_tasks_are_deterministic_for_a_seed(name):
  frames = clip(frames=33)
  params = {"speed": (0.5, 2.0)} if name == "speed" else {}
  first = run_task(name, frames, seed=7, **params)
  np.testing.assert_array_equal(first[0], run_task(name, frames, seed=7, **params)[0])
  outputs = {run_task(name, frames, seed=s, **params)[0].tobytes() for s in range(10)}
  assert len(outputs) > 1  # and the seed matters


def test_task_sentences_are_the_papers_main_text():
  assert P.CUBE_SENTENCE == "[Complete the missing regions in the video.]"
  assert P.SPEED_SENTENCE == "[Restore the video to normal playback speed.]"
  assert P.TUBE_SENTENCE == "[Restore the correct spatio-temporal order of the video segments.]"


# ---------------------------------------------------------------------------------------
# Cube inpainting.


@pytest.mark.parametrize("count", [2, 3, 5, 9, 15, 16, 33, 49, 81])
def test_cube_blacks_out_one_contiguous_block_of_round_03_t_frames_never_frame_0(count):
  frames = clip(frames=count, height=2, width=2)
  k = min(round(count * 0.3), count - 1)  # Python round: 5 -> round(1.5) = 2, 15 -> round(4.5) = 4
  for seed in range(20):
    corrupted, _, _ = run_task("cube", frames, seed)
    black = black_frames(corrupted)
    assert len(black) == k and 0 not in black
    assert black == list(range(black[0], black[0] + k))  # one contiguous block
    kept = np.setdiff1d(np.arange(count), black)
    np.testing.assert_array_equal(corrupted[kept], frames[kept])
    assert np.all(corrupted[black] == 0)


def test_cube_rounds_half_to_even_like_the_released_code():
  assert len(black_frames(run_task("cube", clip(frames=15, height=1, width=1))[0])) == 4  # round(4.5)
  assert len(black_frames(run_task("cube", clip(frames=5, height=1, width=1))[0])) == 2  # round(1.5)


def test_cube_on_81_frames_masks_24_starting_anywhere_in_1_to_57():
  frames = clip(frames=81, height=1, width=1)
  rng = np.random.default_rng(0)
  starts = set()
  for _ in range(2000):
    black = black_frames(P.cube_inpainting(frames, rng)[0])
    assert len(black) == 24
    starts.add(black[0])
  # All 57 starts appear: P(some start never drawn in 2000) <= 57·(56/57)^2000 < 1e-13.
  assert starts == set(range(1, 58))


def test_cube_leaves_one_frame_clips_and_zero_ratio_unmasked():
  one = clip(frames=1)
  assert np.array_equal(run_task("cube", one)[0], one)
  frames = clip()
  assert np.array_equal(run_task("cube", frames, mask_ratio=0.0)[0], frames)
  assert black_frames(run_task("cube", frames, mask_ratio=1.0)[0]) == list(range(1, 9))  # capped at T - 1


# ---------------------------------------------------------------------------------------
# Speed perturbation.


def test_speed_2x_on_81_frames_keeps_frames_0_2_to_72_37_frames():
  frames = clip(frames=81, height=2, width=2)
  corrupted, target, prefix = run_task("speed", frames)
  assert corrupted.shape[0] == 37 and prefix == P.SPEED_SENTENCE
  np.testing.assert_array_equal(corrupted, frames[0:73:2])


@pytest.mark.parametrize("count", [1, 2, 5, 9, 37, 48, 49, 81, 121])
def test_speed_subsample_output_is_original_frames_at_the_stated_indices(count):
  frames = clip(frames=count, height=1, width=1)
  n_out = max(1, round(count / 2))  # then the largest 4k+1 prefix
  expected = [min(round(i * 2.0), count - 1) for i in range(n_out)][:(n_out - 1) // 4 * 4 + 1]
  corrupted = run_task("speed", frames)[0]
  assert (len(corrupted) - 1) % 4 == 0
  np.testing.assert_array_equal(corrupted, frames[expected])


def test_speed_half_slows_81_frames_to_161():
  frames = clip(frames=81, height=1, width=1)
  corrupted = run_task("speed", frames, speed=0.5)[0]
  np.testing.assert_array_equal(corrupted, frames[[min(round(i * 0.5), 80) for i in range(161)]])


def test_time_warp_keeps_the_length():
  frames = clip(frames=81, height=1, width=1)
  fast = run_task("speed", frames, mode="time_warp")[0]
  assert fast.shape == frames.shape
  np.testing.assert_array_equal(fast[:41], frames[0:81:2])  # the whole clip in the first half
  assert np.all(fast[41:] == frames[80])  # then the last frame held
  slow = run_task("speed", frames, speed=0.5, mode="time_warp")[0]
  np.testing.assert_array_equal(slow, frames[[round(0.5 * t) for t in range(81)]])


def test_released_alternating_speed_is_driven_by_an_explicit_call_index():
  assert [P.alternating_speed(i) for i in range(4)] == [2.0, 0.5, 2.0, 0.5]
  assert P.alternating_speed(5, choices=(2.0,)) == 2.0
  frames = clip(frames=81, height=1, width=1)
  lengths = [len(run_task("speed", frames, speed=(0.5, 2.0), call_index=i)[0]) for i in range(3)]
  assert lengths == [37, 161, 37]


def test_speed_choices_without_a_call_index_are_drawn_from_the_rng():
  frames = clip(frames=13, height=1, width=1)
  rng = np.random.default_rng(0)
  lengths = {len(P.speed_perturbation(frames, rng, speed=(0.5, 2.0))[0]) for _ in range(50)}
  assert lengths == {5, 25}  # 2x: round(6.5) = 6 -> 5; 0.5x: 26 -> 25


def test_bad_speed_arguments_are_clear_errors():
  with pytest.raises(ValueError, match="speed=0.0; expected a positive playback rate"):
    run_task("speed", clip(), speed=0)
  with pytest.raises(ValueError, match="'subsample' or 'time_warp'"):
    run_task("speed", clip(), mode="reverse")


# ---------------------------------------------------------------------------------------
# Tube shuffle.


def blocks_of(shape, splits=(2, 2, 2)):
  return P.tube_blocks(shape, splits)


def shape_of(block):
  return tuple(s.stop - s.start for s in block)


@pytest.mark.parametrize("keep_last_frame", [True, False])
def test_tube_shuffle_moves_whole_blocks_and_the_inverse_order_undoes_it(keep_last_frame):
  frames = clip(frames=9, height=8, width=12)
  body = frames[:-1] if keep_last_frame else frames
  for seed in range(10):
    corrupted, _, _, order = run_task("tube", frames, seed, keep_last_frame=keep_last_frame,
                                      return_permutation=True)
    assert sorted(order.tolist()) == list(range(8))
    blocks = blocks_of(body.shape)
    for dest, src in enumerate(order):
      np.testing.assert_array_equal(corrupted[blocks[dest]], body[blocks[src]])
    restored = P.permute_tubes(corrupted, np.argsort(order), keep_last_frame=keep_last_frame)
    np.testing.assert_array_equal(restored, frames)
    if keep_last_frame:
      np.testing.assert_array_equal(corrupted[-1], frames[-1])


def test_tube_shuffle_moves_blocks_across_time_when_the_last_frame_is_held_out():
  frames = clip(frames=81, height=4, width=4)
  assert [shape_of(b)[0] for b in blocks_of((80, 4, 4))[::4]] == [40, 40]
  crossed = 0
  for seed in range(20):
    order = run_task("tube", frames, seed, return_permutation=True)[3]
    crossed += any(src // 4 != dest // 4 for dest, src in enumerate(order))  # 4 tubes per half
  # A permutation of 8 keeps both halves to themselves with probability 4!·4!/8! = 1/70.
  assert crossed >= 15


def test_tube_shuffle_of_81_frames_without_holding_one_out_never_moves_in_time():
  frames = clip(frames=81, height=4, width=4)
  for seed in range(50):
    order = run_task("tube", frames, seed, keep_last_frame=False, return_permutation=True)[3]
    assert all(src // 4 == dest // 4 for dest, src in enumerate(order))  # halves are [41, 40]


def test_tube_shuffle_never_swaps_blocks_of_different_shapes():
  frames = clip(frames=9, height=10, width=7)  # t [5, 4], h [5, 5], w [4, 3]
  blocks = blocks_of(frames.shape)
  assert len({shape_of(b) for b in blocks}) == 4
  moved = False
  for seed in range(30):
    order = run_task("tube", frames, seed, keep_last_frame=False, return_permutation=True)[3]
    assert all(shape_of(blocks[dest]) == shape_of(blocks[src]) for dest, src in enumerate(order))
    moved |= not np.array_equal(order, np.arange(8))
  assert moved


def test_permute_tubes_rejects_an_order_that_mixes_shapes():
  frames = clip(frames=9, height=10, width=7)
  with pytest.raises(ValueError, match="only same-shape tubes can swap"):
    P.permute_tubes(frames, [1, 0, 2, 3, 4, 5, 6, 7], keep_last_frame=False)
  with pytest.raises(ValueError, match="not a permutation"):
    P.permute_tubes(frames, [0, 0, 2, 3, 4, 5, 6, 7], keep_last_frame=False)


def test_tube_shuffle_leaves_a_clip_smaller_than_the_grid_unchanged():
  frames = clip(frames=2)  # one frame once the last is held out; the grid needs 2
  corrupted, _, _, order = run_task("tube", frames, return_permutation=True)
  assert np.array_equal(corrupted, frames) and corrupted is not frames
  assert np.array_equal(order, np.arange(8))


def test_tube_shuffle_released_4x4x4_grid():
  frames = clip(frames=17, height=8, width=8)
  corrupted, _, _, order = run_task("tube", frames, splits=(4, 4, 4), return_permutation=True)
  assert len(order) == 64 and corrupted.shape == frames.shape
  np.testing.assert_array_equal(P.permute_tubes(corrupted, np.argsort(order), (4, 4, 4)), frames)


# ---------------------------------------------------------------------------------------
# Task mixing.


def test_default_mix_is_1_2_3_4():
  assert dict(P.DEFAULT_MIX) == {"none": 0.1, "cube": 0.2, "speed": 0.3, "tube": 0.4}
  assert set(P.TASKS) == set(P.DEFAULT_MIX)


@pytest.mark.parametrize("task,sentence", [("cube", P.CUBE_SENTENCE), ("speed", P.SPEED_SENTENCE),
                                           ("tube", P.TUBE_SENTENCE)])
def test_instruction_is_the_task_sentence_then_the_caption(task, sentence):
  frames = clip()
  sample = P.apply_random_pretext(frames, "A dog runs on the beach.", np.random.default_rng(0), mix={task: 1})
  assert sample["task"] == task and sample["target"] is frames
  assert sample["instruction"] == sentence + " A dog runs on the beach."
  assert sample["source"].dtype == np.uint8


def test_no_pretext_is_plain_text_to_video_or_identity_restoration():
  frames = clip()
  rng = np.random.default_rng(0)
  t2v = P.apply_random_pretext(frames, "A dog.", rng, mix={"none": 1})
  assert t2v == {"source": None, "target": frames, "instruction": "A dog.", "task": "none"}
  identity = P.apply_random_pretext(frames, "A dog.", rng, mix={"none": 1}, none_mode="identity")
  assert identity["source"] is frames and identity["instruction"] == "A dog."


def test_options_reach_their_task():
  frames = clip(frames=81, height=2, width=2)
  rng = np.random.default_rng(0)
  warp = P.apply_random_pretext(frames, "c", rng, mix={"speed": 1}, speed_mode="time_warp", mask_ratio=0.5)
  assert warp["source"].shape[0] == 81
  slow = P.apply_random_pretext(frames, "c", rng, mix={"speed": 1}, speed=(0.5, 2.0), speed_call_index=1)
  assert slow["source"].shape[0] == 161
  cube = P.apply_random_pretext(frames, "c", rng, mix={"cube": 1}, mask_ratio=0.5, splits=(4, 4, 4))
  assert len(black_frames(cube["source"])) == 40  # round(40.5) = 40
  whole = P.apply_random_pretext(frames, "c", rng, mix={"tube": 1}, splits=(1, 1, 1))
  assert np.array_equal(whole["source"], frames)  # one tube: nothing to shuffle


def test_apply_random_pretext_is_deterministic_for_a_seed():
  frames = clip(frames=17)
  for seed in range(10):
    a = P.apply_random_pretext(frames, "c", np.random.default_rng(seed))
    b = P.apply_random_pretext(frames, "c", np.random.default_rng(seed))
    assert a["task"] == b["task"] and a["instruction"] == b["instruction"]
    assert (a["source"] is None and b["source"] is None) or np.array_equal(a["source"], b["source"])


def chi_square_3_dof_survival(x: float) -> float:
  """P(χ²₃ > x) = erfc(√(x/2)) + √(2x/π)·e^(−x/2)."""
  return math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)


def test_task_frequencies_match_the_mix():
  frames = clip(frames=5, height=2, width=2)
  rng = np.random.default_rng(0)
  draws = 4000
  names = list(P.DEFAULT_MIX)
  counts = {name: 0 for name in names}
  for _ in range(draws):
    counts[P.apply_random_pretext(frames, "c", rng)["task"]] += 1
  expected = {name: draws * p for name, p in P.DEFAULT_MIX.items()}
  statistic = sum((counts[n] - expected[n]) ** 2 / expected[n] for n in names)
  # A correct sampler fails this with probability 1e-6 (χ² with 3 degrees of freedom; the
  # threshold is χ² ≈ 30.7). One off by 0.05 in a task (e.g. none at 0.15) scores ~100.
  assert chi_square_3_dof_survival(30.66) == pytest.approx(1e-6, rel=0.05)
  assert chi_square_3_dof_survival(statistic) > 1e-6, (counts, statistic)


def test_bad_mix_or_options_are_clear_errors():
  frames, rng = clip(), np.random.default_rng(0)
  with pytest.raises(ValueError, match="unknown tasks"):
    P.apply_random_pretext(frames, "c", rng, mix={"blur": 1})
  with pytest.raises(ValueError, match="non-negative task weights"):
    P.apply_random_pretext(frames, "c", rng, mix={"cube": -1, "tube": 2})
  with pytest.raises(TypeError, match="unknown options"):
    P.apply_random_pretext(frames, "c", rng, ratio=0.3)
  with pytest.raises(ValueError, match="'t2v' or 'identity'"):
    P.apply_random_pretext(frames, "c", rng, none_mode="copy")
  with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
    P.apply_random_pretext(frames[..., 0], "c", rng)


# ---------------------------------------------------------------------------------------
# On a real clip, and what the module may import.


def test_pretexts_on_a_real_37_frame_clip():
  path = os.path.join(VIDEOS, "highlight-07-source.mp4")
  if not os.path.exists(path):
    pytest.skip(f"real test clip {os.path.normpath(path)} is absent: the shared "
                "testdata/videos folder must sit beside the repository")
  from sama_jax.data.video import read_video
  frames, _ = read_video(path)
  assert len(black_frames(run_task("cube", frames)[0])) == 11  # round(11.1)
  assert len(run_task("speed", frames)[0]) == 17  # round(18.5) = 18 -> 17
  corrupted, _, _, order = run_task("tube", frames, return_permutation=True)  # halves [18, 18]
  np.testing.assert_array_equal(P.permute_tubes(corrupted, np.argsort(order)), frames)


def test_host_data_modules_import_neither_jax_nor_the_models():
  code = ("import sys, sama_jax.data.video, sama_jax.data.frames, sama_jax.data.pretext\n"
          "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax') or m.startswith('sama_jax.models')]\n"
          "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
