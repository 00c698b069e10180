"""From a source's raw item to one training example, and examples to a batch.

Three pure steps, each a grain transform in `pipeline.py`:

1. `load_example(item, kind, frames)` (a map): decodes files (or takes in-memory
   arrays), applies the dataset rules of SAMA_METHOD.md §5.3 — the first `num_frames`
   frames, source/target length must agree, both resized with crop_and_resize into one
   (w, h) — and returns {"target": uint8 [T, h, w, 3], "source": (edits) the same,
   "text": str, "id": str} with T = 1 for images and T = num_frames for clips. Any bad
   input returns a skips.Skipped instead; nothing raises for bad data.
2. `training_example(example, rng, task)` (a random map, rng seeded per example): the
   pretext corruption for clips, the anchor frame, the instruction and the task id.
3. `stack_batch(examples)`: the batch contract of `pipeline.py`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sama_jax.data.frames import check_frames, crop_and_resize
from sama_jax.data.pretext import apply_random_pretext
from sama_jax.data.skips import Skipped
from sama_jax.data.video import VideoError, read_video
from sama_jax.train.config import TASK_NAMES

MIN_FRAMES = 5  # the shortest 4k+1 clip with motion (k = 1)
# Pretext task name -> training task id name ("none" is plain text-to-video).
PRETEXT_TASK_IDS = {"none": "t2v", "cube": "cube", "speed": "speed", "tube": "tube"}


@dataclasses.dataclass(frozen=True)
class FrameSpec:
  """How raw frames become model frames. size = (w, h); short_clips: what to do with a
  clip of MIN_FRAMES..num_frames-1 frames ("skip" it, or "pad" by repeating its last
  frame); trim_leading: ((substring, n), ...) drops the first n frames of both videos
  when the target path contains substring (the released OpenVE-3M rule); fps: resample
  to this rate (None = the file's own frames, as the released dataset does)."""
  num_frames: int
  size: tuple
  short_clips: str = "skip"
  trim_leading: tuple = ()
  fps: float | None = None


def _file_problem(path: str, where: str) -> Skipped | None:
  if not os.path.exists(path):
    return Skipped(path, "missing_file", f"{where}: file does not exist")
  if os.path.isdir(path):
    return Skipped(path, "missing_file", f"{where}: is a directory, not a file")
  if os.path.getsize(path) == 0:
    return Skipped(path, "empty_file", f"{where}: file is empty (0 bytes)")
  return None


def _read_image(path: str, where: str):
  try:
    with Image.open(path) as image:
      rgb = ImageOps.exif_transpose(image).convert("RGB")  # upright, as viewers show it
      return np.asarray(rgb)[None]
  except (UnidentifiedImageError, OSError, ValueError) as e:
    return Skipped(path, "corrupt", f"{where}: PIL cannot decode it ({e})")


def _raw_frames(value, kind: str, spec: FrameSpec, trim: int, where: str):
  """A path or an array as uint8 [T, H, W, 3] (images: T = 1), at most trim +
  num_frames frames, the first `trim` dropped; or Skipped."""
  if isinstance(value, str):
    if (problem := _file_problem(value, where)) is not None:
      return problem
    if kind == "image_edit":
      return _read_image(value, where)
    try:
      frames, _ = read_video(value, max_frames=spec.num_frames + trim, fps=spec.fps)
    except VideoError as e:
      return Skipped(value, "corrupt", f"{where}: {e.reason}")
    return frames[trim:]
  frames = np.asarray(value)
  if frames.ndim == 3:
    frames = frames[None]
  try:
    frames = check_frames(frames, "record frames")
  except ValueError as e:
    return Skipped(where, "bad_record", str(e))
  return frames[:1] if kind == "image_edit" else frames[trim:trim + spec.num_frames]


def _fit_length(frames: np.ndarray, spec: FrameSpec, path: str, where: str):
  count = frames.shape[0]
  if count < MIN_FRAMES:
    return Skipped(path, "too_short", f"{where}: video has {count} frames; SAMA needs at least {MIN_FRAMES} (4k+1)")
  if count >= spec.num_frames:
    return frames[:spec.num_frames]
  if spec.short_clips == "skip":
    return Skipped(path, "shorter_than_num_frames", f"{where}: video has {count} frames; batches take "
                   f"num_frames={spec.num_frames} (set data.short_clips='pad' or lower data.num_frames)")
  return np.concatenate([frames, np.repeat(frames[-1:], spec.num_frames - count, axis=0)])


def load_example(item, kind: str, spec: FrameSpec):
  """raw item (see sources.py) -> {"target": uint8 [T, h, w, 3], "source": (edits) the
  same shape, "text": str, "id": str}, or the Skipped explaining why not."""
  if isinstance(item, Skipped):
    return item
  where = str(item.get("id", "?")) if isinstance(item, dict) else "?"
  needed = ("target", "text") + (() if kind == "clip" else ("source",))
  if not isinstance(item, dict) or any(k not in item for k in needed) or not isinstance(item["text"], str):
    return Skipped(where, "bad_record", f"record needs fields {needed} (text a str); got "
                   f"{sorted(item) if isinstance(item, dict) else type(item).__name__}")
  target_name = item["target"] if isinstance(item["target"], str) else where
  trim = next((n for pattern, n in spec.trim_leading if pattern in target_name), 0)
  names = ("target",) if kind == "clip" else ("target", "source")
  frames = {}
  for name in names:
    frames[name] = _raw_frames(item[name], kind, spec, trim, where)
    if isinstance(frames[name], Skipped):
      return frames[name]
  if kind != "image_edit":
    if kind == "video_edit" and len(frames["source"]) != len(frames["target"]):
      return Skipped(target_name, "frame_count_mismatch", f"{where}: source has {len(frames['source'])} frames, "
                     f"target {len(frames['target'])} (within the first {spec.num_frames + trim})")
    for name in names:
      frames[name] = _fit_length(frames[name], spec, target_name, where)
      if isinstance(frames[name], Skipped):
        return frames[name]
  out = {name: crop_and_resize(f, spec.size) for name, f in frames.items()}
  return {**out, "text": item["text"], "id": where}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What one sub-pipeline makes of its examples. kind: a sources.KINDS entry; task: a
  pretext task name for clips (pretext.TASKS), ignored otherwise; anchor: "uniform" (a
  uniformly drawn target frame, the paper) or "first" (the released code);
  pretext_options: apply_random_pretext options as ((name, value), ...)."""
  kind: str
  task: str = ""
  anchor: str = "uniform"
  none_mode: str = "t2v"
  prefix: str = ""
  pretext_options: tuple = ()


def task_id(spec: TaskSpec) -> int:
  name = PRETEXT_TASK_IDS[spec.task] if spec.kind == "clip" else spec.kind
  return TASK_NAMES.index(name)


def training_example(example, rng: np.random.Generator, spec: TaskSpec):
  """A loaded example -> {"target": [T, H, W, 3], "source": [Ts, H, W, 3] (absent for
  plain text-to-video), "anchor": [H, W, 3], "instruction": str, "task": int32}.
  All draws (pretext, anchor) come from `rng`; Skipped passes through."""
  if isinstance(example, Skipped):
    return example
  if spec.kind == "clip":
    made = apply_random_pretext(example["target"], example["text"], rng, mix={spec.task: 1.0},
                                none_mode=spec.none_mode, **dict(spec.pretext_options))
    target, source, instruction = made["target"], made["source"], made["instruction"]
  else:
    target, source, instruction = example["target"], example["source"], spec.prefix + example["text"]
  index = int(rng.integers(target.shape[0])) if spec.anchor == "uniform" else 0
  out = {"target": target, "anchor": target[index], "instruction": instruction,
         "task": np.int32(task_id(spec))}
  if source is not None:
    out["source"] = source
  return out


def stack_batch(examples) -> dict:
  """[example] -> {"target": uint8 [B, T, H, W, 3], "source": uint8 [B, Ts, H, W, 3] (if
  the examples have it), "anchor": uint8 [B, H, W, 3], "instruction": object [B] of str,
  "task": int32 [B]}. Raises when the examples differ in keys or shapes (a sub-pipeline
  must be homogeneous; mixing happens between batches)."""
  keys = set(examples[0])
  for example in examples[1:]:
    if set(example) != keys:
      raise ValueError(f"cannot batch examples with keys {sorted(keys)} and {sorted(example)}")
  batch = {}
  for key in sorted(keys):
    values = [e[key] for e in examples]
    if key == "instruction":
      batch[key] = np.array(values, dtype=object)
    elif key == "task":
      batch[key] = np.asarray(values, dtype=np.int32)
    else:
      shapes = {np.shape(v) for v in values}
      if len(shapes) != 1:
        raise ValueError(f"cannot batch {key!r} arrays of different shapes {sorted(shapes)}")
      batch[key] = np.stack(values)
  return batch
