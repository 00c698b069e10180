"""Fitting a clip to the model's grid: resolution buckets, resizing and 4k+1 frame counts
(SAMA_METHOD.md §4.2, §5.3).

Every function takes and returns frames as a uint8 RGB array [T, H, W, 3]; sizes are
given as (width, height), the order the buckets are published in.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# The published inference grid: 480·832-pixel buckets on a stride of 32 with aspect
# ratios (w/h) from 1:2 to 2:1 (SAMA_METHOD.md §4.2).
DEFAULT_PIXELS = 480 * 832


def check_frames(frames, name: str = "frames") -> np.ndarray:
  """Returns `frames` as an array after checking it is uint8 RGB [T, H, W, 3] with
  T, H, W >= 1; raises ValueError naming the value and the expected form otherwise."""
  if not isinstance(frames, np.ndarray):
    raise ValueError(f"{name} must be a NumPy uint8 array [T, H, W, 3]; got {type(frames).__name__}")
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"{name} must be a uint8 array [T, H, W, 3] (RGB); "
                     f"got {frames.dtype} with shape {frames.shape}")
  if min(frames.shape[:3]) < 1:
    raise ValueError(f"{name} has shape {frames.shape}; T, H and W must all be at least 1")
  return frames


def resolution_buckets(pixels: int = DEFAULT_PIXELS, factor: int = 32, min_ar: float = 0.5,
                       max_ar: float = 2.0) -> list[tuple[int, int]]:
  """The released `get_all_resolution`: for every height h on the `factor` grid between
  √(pixels/max_ar) and √(pixels/min_ar), the width w = round(pixels/h/factor)·factor
  that keeps the area near `pixels`, kept if min_ar <= w/h <= max_ar.
  Returns [(w, h)] with h ascending; the defaults give the 15 buckets of §4.2."""
  if pixels <= 0 or factor <= 0 or not 0 < min_ar <= max_ar:
    raise ValueError(f"resolution_buckets(pixels={pixels}, factor={factor}, min_ar={min_ar}, "
                     f"max_ar={max_ar}) needs pixels, factor > 0 and 0 < min_ar <= max_ar")
  h_lo = math.floor(math.sqrt(pixels / max_ar) / factor) * factor
  h_hi = math.ceil(math.sqrt(pixels / min_ar) / factor) * factor
  buckets = []
  for h in range(max(h_lo, factor), h_hi + 1, factor):
    # Python's round (half to even), as the released code: 399360/640/32 = 19.5 -> 20.
    w = round(pixels / h / factor) * factor
    if w > 0 and min_ar <= w / h <= max_ar:
      buckets.append((w, h))
  return buckets


def closest_bucket(width: int, height: int, buckets) -> tuple[int, int]:
  """The (w, h) bucket whose aspect ratio w/h is nearest width/height; the first of
  equally near buckets wins, as `find_closest_resolution` does."""
  if width < 1 or height < 1:
    raise ValueError(f"frame size {width}x{height}; width and height must be positive")
  buckets = list(buckets)
  if not buckets:
    raise ValueError("no resolution buckets to choose from")
  ratio = width / height
  errors = [abs(w / h - ratio) for w, h in buckets]
  return tuple(buckets[int(np.argmin(errors))])


def _check_size(size) -> tuple[int, int]:
  try:
    width, height = (int(v) for v in size)
  except (TypeError, ValueError):
    raise ValueError(f"size must be (width, height); got {size!r}") from None
  if width < 1 or height < 1:
    raise ValueError(f"size must be a positive (width, height); got {size!r}")
  return width, height


def _resize(frames: np.ndarray, width: int, height: int, resample) -> np.ndarray:
  if frames.shape[1:3] == (height, width):
    return frames.copy()
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), resample)) for f in frames])


def center_crop_resize(frames: np.ndarray, size) -> np.ndarray:
  """Inference's source preparation (§4.2): centre-crop each frame to the aspect ratio of
  size = (w, h), then resize to it with PIL bicubic. [T, H, W, 3] -> [T, h, w, 3]."""
  frames = check_frames(frames)
  width, height = _check_size(size)
  src_h, src_w = frames.shape[1:3]
  if src_w * height > src_h * width:  # source is wider than the bucket: trim the sides
    crop_w, crop_h = max(1, min(src_w, round(src_h * width / height))), src_h
  else:
    crop_w, crop_h = src_w, max(1, min(src_h, round(src_w * height / width)))
  top, left = (src_h - crop_h) // 2, (src_w - crop_w) // 2
  cropped = frames[:, top:top + crop_h, left:left + crop_w]
  return _resize(cropped, width, height, Image.Resampling.BICUBIC)


def crop_and_resize(frames: np.ndarray, size) -> np.ndarray:
  """The training dataset's `ImageCropAndResize` (§5.3): scale by max(w_t/w, h_t/h) so
  the frame covers the target, bilinear resize (PIL, antialiased) to (round(w·scale),
  round(h·scale)), then centre-crop to size = (w_t, h_t). [T, H, W, 3] -> [T, h_t, w_t, 3]."""
  frames = check_frames(frames)
  width, height = _check_size(size)
  src_h, src_w = frames.shape[1:3]
  scale = max(width / src_w, height / src_h)
  # max() guards against a float product landing just under the target (e.g. 479.9999).
  new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
  resized = _resize(frames, new_w, new_h, Image.Resampling.BILINEAR)
  # torchvision's center_crop offsets: int(round((size - crop) / 2)).
  top, left = int(round((new_h - height) / 2)), int(round((new_w - width) / 2))
  return resized[:, top:top + height, left:left + width]


def to_4k_plus_1(frames: np.ndarray, mode: str = "pad", min_frames: int = 1) -> np.ndarray:
  """Makes the frame count 4k+1, which the Wan VAE's 4x temporal compression needs.
  mode="pad" repeats the last frame up to the next 4k+1 (inference, §4.2);
  mode="truncate" keeps the largest 4k+1 prefix (the dataset's short clips, §5.3).
  Raises if the clip has fewer than `min_frames` frames. [T, H, W, 3] -> [T', H, W, 3];
  the result may share memory with `frames` (it is `frames` itself when T is already 4k+1)."""
  frames = check_frames(frames)
  count = frames.shape[0]
  if count < min_frames:
    raise ValueError(f"video has {count} frames; SAMA needs at least {min_frames} (4k+1)")
  if mode == "pad":
    extra = (-(count - 1)) % 4
    if extra == 0:
      return frames
    return np.concatenate([frames, np.repeat(frames[-1:], extra, axis=0)])
  if mode == "truncate":
    return frames[:(count - 1) // 4 * 4 + 1]
  raise ValueError(f"mode={mode!r}; expected 'pad' or 'truncate'")
