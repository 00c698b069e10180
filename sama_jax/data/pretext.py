"""Motion Alignment pretext corruptions (SAMA_METHOD.md §1.5, §5.2, "Our decisions" 4).

Stage 0 trains on raw text-to-video clips by corrupting the *source* and asking the model
to restore the clean clip. Each task is a pure function

  (frames [T, H, W, 3] uint8, rng: np.random.Generator, **params)
      -> (corrupted [T', H, W, 3] uint8, target [T, H, W, 3] uint8, instruction_prefix)

where the target is the clean clip itself (not a copy: treat outputs as read-only), the
corrupted clip is a new array, and every random draw comes from `rng`. Integer rounding
uses Python's round (half to even) because the released operators do.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

from sama_jax.data.frames import check_frames

# The bracketed task sentences of the paper's main text (§1.5); the model learns them as
# task tokens, so they must match what it is trained and prompted with character for character.
CUBE_SENTENCE = "[Complete the missing regions in the video.]"
SPEED_SENTENCE = "[Restore the video to normal playback speed.]"
TUBE_SENTENCE = "[Restore the correct spatio-temporal order of the video segments.]"


def no_pretext(frames: np.ndarray, rng: np.random.Generator):
  """The identity: (frames, frames, ""). `rng` is unused; it keeps the task signature."""
  del rng
  frames = check_frames(frames)
  return frames, frames, ""


# ---------------------------------------------------------------------------------------
# Cube inpainting.


def cube_inpainting(frames: np.ndarray, rng: np.random.Generator, mask_ratio: float = 0.3):
  """Blacks out one contiguous block of k = round(T·mask_ratio) whole frames, never
  frame 0 (the released `MaskRandomFrames`): k is capped at T − 1 and the block starts
  at an index drawn uniformly from [1, T − k]. T = 81 -> k = 24, start in [1, 57].
  Clips of one frame, or k = 0, come back unmasked (as a copy)."""
  frames = check_frames(frames)
  corrupted = frames.copy()
  count = frames.shape[0]
  if count <= 1 or mask_ratio <= 0:
    return corrupted, frames, CUBE_SENTENCE
  k = min(max(round(count * mask_ratio), 0), count)
  if k == 0:
    return corrupted, frames, CUBE_SENTENCE
  k = min(k, count - 1)  # frame 0 stays visible to anchor content and colours
  start = int(rng.integers(1, count - k + 1))
  corrupted[start:start + k] = 0  # black, i.e. −1 after the VAE's x/127.5 − 1
  return corrupted, frames, CUBE_SENTENCE


# ---------------------------------------------------------------------------------------
# Speed perturbation.


def alternating_speed(call_index: int, choices=(0.5, 2.0)) -> float:
  """The released `SpeedChangeFrames` schedule without its hidden counter: call 0 uses
  the larger speed, call 1 the smaller, and so on. A single choice is always used."""
  choices = tuple(float(c) for c in choices)
  if not choices or len(choices) > 2:
    raise ValueError(f"choices={choices}; the alternating schedule takes one or two speeds")
  return max(choices) if call_index % 2 == 0 else min(choices)


def subsample_indices(count: int, speed: float) -> np.ndarray:
  """Frame indices of the accelerated clip: round(count/speed) outputs (at least 1),
  output i = input min(round(i·speed), count − 1), then cut to the largest 4k+1 length.
  count = 81, speed = 2 -> 40 indices 0, 2, ..., 78 -> the first 37."""
  n_out = max(1, round(count / speed))
  indices = [min(round(i * speed), count - 1) for i in range(n_out)]
  return np.asarray(indices[:(len(indices) - 1) // 4 * 4 + 1], dtype=np.int64)


def time_warp_indices(count: int, speed: float) -> np.ndarray:
  """Length-keeping warp (the released `TimeWarpFrames`): output t shows input
  round(min(1, speed·t/(count−1))·(count−1)). speed = 2 plays the clip in the first half
  and holds the last frame; speed = 0.5 plays the first half in slow motion."""
  if count == 1:
    return np.zeros(1, dtype=np.int64)
  last = count - 1
  return np.asarray([round(min(1.0, speed * t / last) * last) for t in range(count)], dtype=np.int64)


def speed_perturbation(frames: np.ndarray, rng: np.random.Generator, speed=2.0,
                       mode: str = "subsample", call_index: int | None = None):
  """Plays the clip at `speed` x and asks for normal speed back.

  Args:
    frames: [T, H, W, 3] uint8.
    rng: draws the speed when `speed` is a tuple of choices and `call_index` is None.
    speed: a float (the paper: 2.0), or a tuple of choices (the released code: (0.5, 2.0)).
    mode: "subsample" keeps every speed-th frame, so the clip is shorter (T = 81 at 2x
      -> 37 frames, a 4k+1 length); "time_warp" keeps T frames (see time_warp_indices).
    call_index: with a tuple `speed`, selects the released code's alternating schedule
      (alternating_speed); the caller owns the counter, so no state hides in here.
  Returns:
    (corrupted [T', H, W, 3], target = frames, SPEED_SENTENCE).
  """
  frames = check_frames(frames)
  if isinstance(speed, (tuple, list)):
    choices = tuple(float(s) for s in speed)
    if not choices:
      raise ValueError("speed=(); give a speed or a non-empty tuple of speeds")
    if call_index is not None:
      speed = alternating_speed(call_index, choices)
    else:
      speed = choices[int(rng.integers(len(choices)))]
  speed = float(speed)
  if not (math.isfinite(speed) and speed > 0):
    raise ValueError(f"speed={speed}; expected a positive playback rate (2.0 = twice as fast)")
  if mode == "subsample":
    indices = subsample_indices(frames.shape[0], speed)
  elif mode == "time_warp":
    indices = time_warp_indices(frames.shape[0], speed)
  else:
    raise ValueError(f"mode={mode!r}; expected 'subsample' or 'time_warp'")
  return frames[indices], frames, SPEED_SENTENCE


# ---------------------------------------------------------------------------------------
# Tube shuffle.


def _split_bounds(length: int, parts: int) -> list[tuple[int, int]]:
  """`parts` contiguous ranges of sizes ⌊L/P⌋, the first L mod P of them one larger."""
  sizes = [length // parts + (1 if i < length % parts else 0) for i in range(parts)]
  starts = np.cumsum([0] + sizes[:-1])
  return [(int(s), int(s) + n) for s, n in zip(starts, sizes)]


def tube_blocks(shape, splits) -> list[tuple[slice, slice, slice]]:
  """The (t, h, w) slices of the tube grid over a [T, H, W, ...] clip, t-major then h then w."""
  (t_len, h_len, w_len), (t_parts, h_parts, w_parts) = shape[:3], splits
  return [(slice(*t), slice(*h), slice(*w))
          for t in _split_bounds(t_len, t_parts)
          for h in _split_bounds(h_len, h_parts)
          for w in _split_bounds(w_len, w_parts)]


def _block_shape(block) -> tuple[int, int, int]:
  return tuple(s.stop - s.start for s in block)


def _check_splits(splits) -> tuple[int, int, int]:
  try:
    parts = tuple(int(p) for p in splits)
  except (TypeError, ValueError):
    parts = ()
  if len(parts) != 3 or min(parts) < 1:
    raise ValueError(f"splits={splits!r}; expected three positive counts (t, h, w), e.g. (2, 2, 2)")
  return parts


def _tube_grid_fits(shape, splits) -> bool:
  return all(length >= parts for length, parts in zip(shape[:3], splits))


def permute_tubes(frames: np.ndarray, order, splits=(2, 2, 2), keep_last_frame: bool = True) -> np.ndarray:
  """Rearranges the tube grid: output block j holds input block order[j] (blocks numbered
  as tube_blocks). `np.argsort(order)` undoes it. With keep_last_frame the last frame
  stays out of the grid and is re-appended. [T, H, W, 3] -> [T, H, W, 3], a new array."""
  frames = check_frames(frames)
  splits = _check_splits(splits)
  body = frames[:-1] if keep_last_frame else frames
  out = frames.copy()
  if not _tube_grid_fits(body.shape, splits):
    if not np.array_equal(order, np.arange(len(order))):
      raise ValueError(f"a {body.shape[:3]} clip is smaller than the {splits} tube grid; "
                       "only the identity order applies")
    return out
  blocks = tube_blocks(body.shape, splits)
  order = np.asarray(order)
  if sorted(order.tolist()) != list(range(len(blocks))):
    raise ValueError(f"order={order.tolist()} is not a permutation of the {len(blocks)} tubes")
  for dest, src in enumerate(order):
    if _block_shape(blocks[dest]) != _block_shape(blocks[src]):
      raise ValueError(f"order moves tube {src} {_block_shape(blocks[src])} into tube {dest} "
                       f"{_block_shape(blocks[dest])}; only same-shape tubes can swap")
    out[blocks[dest]] = body[blocks[src]]
  return out


def tube_shuffle(frames: np.ndarray, rng: np.random.Generator, splits=(2, 2, 2),
                 keep_last_frame: bool = True, return_permutation: bool = False):
  """Splits the clip into a t×h×w grid of tubes and permutes them at random, each tube
  only among tubes of the same shape (the released `SwapFourBlocks`; identity allowed).

  keep_last_frame (our default) holds the last frame out, so T = 81 splits into equal
  halves [40, 40] and tubes can move in time; without it the halves are [41, 40] and only
  spatial quadrants swap. Clips smaller than the grid come back unchanged (as a copy).
  Returns (corrupted, target = frames, TUBE_SENTENCE), plus `order` (permute_tubes'
  argument; np.argsort(order) restores the clip) when return_permutation is True.
  """
  frames = check_frames(frames)
  splits = _check_splits(splits)
  body_shape = (frames.shape[0] - 1 if keep_last_frame else frames.shape[0],) + frames.shape[1:]
  if not _tube_grid_fits(body_shape, splits):
    order = np.arange(math.prod(splits))
  else:
    blocks = tube_blocks(body_shape, splits)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for index, block in enumerate(blocks):
      groups.setdefault(_block_shape(block), []).append(index)
    order = np.arange(len(blocks))
    for members in groups.values():  # in order of first appearance, so draws are reproducible
      order[members] = np.asarray(members)[rng.permutation(len(members))]
  corrupted = permute_tubes(frames, order, splits, keep_last_frame)
  if return_permutation:
    return corrupted, frames, TUBE_SENTENCE, order
  return corrupted, frames, TUBE_SENTENCE


# ---------------------------------------------------------------------------------------
# Task mixing.

TASKS = MappingProxyType({
    "none": no_pretext,
    "cube": cube_inpainting,
    "speed": speed_perturbation,
    "tube": tube_shuffle,
})

# none : cube : speed : tube = 1 : 2 : 3 : 4 on T2V clips (paper §1.5).
DEFAULT_MIX = MappingProxyType({"none": 0.1, "cube": 0.2, "speed": 0.3, "tube": 0.4})

# apply_random_pretext's options -> (task, parameter of that task's function).
_OPTIONS = MappingProxyType({
    "mask_ratio": ("cube", "mask_ratio"),
    "speed": ("speed", "speed"),
    "speed_mode": ("speed", "mode"),
    "speed_call_index": ("speed", "call_index"),
    "splits": ("tube", "splits"),
    "keep_last_frame": ("tube", "keep_last_frame"),
})


def _mix_probabilities(mix) -> tuple[list[str], np.ndarray]:
  names = list(mix)
  unknown = [n for n in names if n not in TASKS]
  if unknown:
    raise ValueError(f"mix names unknown tasks {unknown}; expected some of {list(TASKS)}")
  weights = np.asarray([float(mix[n]) for n in names], dtype=np.float64)
  if not names or np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
    raise ValueError(f"mix={dict(mix)}; expected non-negative task weights with a positive sum")
  return names, weights / weights.sum()


def apply_random_pretext(frames: np.ndarray, caption: str, rng: np.random.Generator, mix=DEFAULT_MIX,
                         none_mode: str = "t2v", **options) -> dict:
  """Draws a task from `mix` (weights, normalised) and applies it to one T2V clip.

  Args:
    frames: the clean clip, [T, H, W, 3] uint8.
    caption: the clip's caption; the instruction is "[task sentence] " + caption.
    rng: the only source of randomness (task choice, then the task's own draws).
    mix: task name -> weight, over the names in TASKS.
    none_mode: for the "none" task, "t2v" (no source; plain text-to-video, our default)
      or "identity" (the clean clip is both source and target).
    options: task parameters: mask_ratio (cube); speed, speed_mode, speed_call_index
      (speed: its `speed`, `mode`, `call_index`); splits, keep_last_frame (tube).
  Returns:
    {"source": [T', H, W, 3] uint8 or None, "target": [T, H, W, 3] uint8,
     "instruction": str, "task": name}.
  """
  unknown = sorted(set(options) - set(_OPTIONS))
  if unknown:
    raise TypeError(f"apply_random_pretext got unknown options {unknown}; expected some of {sorted(_OPTIONS)}")
  if none_mode not in ("t2v", "identity"):
    raise ValueError(f"none_mode={none_mode!r}; expected 't2v' or 'identity'")
  names, probabilities = _mix_probabilities(mix)
  task = names[int(rng.choice(len(names), p=probabilities))]
  params = {param: options[key] for key, (owner, param) in _OPTIONS.items() if owner == task and key in options}
  source, target, prefix = TASKS[task](frames, rng, **params)
  if task == "none":
    return {"source": source if none_mode == "identity" else None, "target": target,
            "instruction": caption, "task": task}
  return {"source": source, "target": target, "instruction": f"{prefix} {caption}", "task": task}
