"""Reading and writing video files with PyAV (FFmpeg) on the host.

`read_video` decodes any container/codec FFmpeg knows into upright uint8 RGB frames
[T, H, W, 3]; `write_video` writes such frames as an H.264 (yuv420p) MP4, atomically.
Every way a file can fail to give frames raises `VideoError`, so a data pipeline can skip
and count the record with its path (DESIGN.md §3).
"""

from __future__ import annotations

import math
import numbers
import os
import uuid
from fractions import Fraction

import av
import numpy as np

from sama_jax.data.frames import check_frames


class VideoError(ValueError):
  """A file that does not yield video frames: `path` says which, `reason` says why."""

  def __init__(self, path, reason: str):
    self.path = os.fspath(path)
    self.reason = reason
    super().__init__(f"{self.path}: {reason}")


# ---------------------------------------------------------------------------------------
# Orientation. Phones store portrait video as landscape pixels plus a display matrix
# (FFmpeg's DISPLAYMATRIX side data; the legacy `rotate` tag in old files); players rotate
# on display, so we rotate on decode or the model sees the clip sideways.
# An orientation is (transpose, flip_rows, flip_cols), applied in that order.


def _orientation_from_matrix(matrix: np.ndarray) -> tuple[bool, bool, bool]:
  """Reads the 90°-multiple rotation/flip out of a 3x3 display matrix (row-major, 16.16
  fixed point). It maps a source pixel (x, y) (y pointing down) to (a·x + c·y, b·x + d·y),
  so no transpose when |a|, |d| dominate and a sign flip wherever a coefficient is
  negative. Angles between multiples of 90° snap to the nearest, as players do."""
  a, b, c, d = (float(v) for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
  if abs(a) + abs(d) >= abs(b) + abs(c):
    return False, d < 0, a < 0
  return True, b < 0, c < 0


def _orientation_from_rotate_tag(degrees_clockwise: float) -> tuple[bool, bool, bool]:
  quarter_turns = round(degrees_clockwise / 90) % 4
  return [(False, False, False), (True, False, True), (False, True, True), (True, True, False)][quarter_turns]


def _orientation(frame: av.VideoFrame, stream) -> tuple[bool, bool, bool]:
  for side_data in frame.side_data:
    if getattr(side_data.type, "name", "") == "DISPLAYMATRIX":
      matrix = np.frombuffer(bytes(side_data), dtype=np.int32)
      if matrix.size >= 9:
        return _orientation_from_matrix(matrix)
  tags = {k.lower(): v for k, v in stream.metadata.items()}
  try:
    return _orientation_from_rotate_tag(float(tags.get("rotate", 0)))
  except ValueError:  # a malformed tag is no reason to reject the video
    return False, False, False


def _to_rgb(frame: av.VideoFrame, orientation) -> np.ndarray:
  """One decoded frame (any pixel format: yuv, 10-bit, gray, ...) as upright uint8 RGB
  [H, W, 3]. swscale converts with the colour matrix the frame is tagged with."""
  rgb = frame.to_ndarray(format="rgb24")
  transpose, flip_rows, flip_cols = orientation
  if transpose:
    rgb = rgb.transpose(1, 0, 2)
  if flip_rows:
    rgb = rgb[::-1]
  if flip_cols:
    rgb = rgb[:, ::-1]
  return rgb


# ---------------------------------------------------------------------------------------
# Reading.


def _open_for_reading(path: str):
  if not os.path.exists(path):
    raise VideoError(path, "file does not exist")
  if os.path.isdir(path):
    raise VideoError(path, "is a directory, not a video file")
  if os.path.getsize(path) == 0:
    raise VideoError(path, "file is empty (0 bytes)")
  try:
    container = av.open(path)
  except av.FFmpegError as e:
    raise VideoError(path, f"FFmpeg cannot open it as a media file ({e})") from e
  if not container.streams.video:
    kinds = sorted({s.type for s in container.streams}) or ["none"]
    container.close()
    raise VideoError(path, f"has no video stream (streams: {', '.join(kinds)})")
  return container


def _positive_rate(value, message: str) -> float:
  """`value` as a finite positive float, or ValueError(message.format(value))."""
  try:
    rate = float(value)
  except (TypeError, ValueError):
    raise ValueError(message.format(value)) from None
  if isinstance(value, bool) or not (math.isfinite(rate) and rate > 0):
    raise ValueError(message.format(value))
  return rate


def _stream_fps(stream) -> float | None:
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate and float(rate) > 0:
      return float(rate)
  return None


def _nearest_indices(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """For each target time, the index of the nearest frame time (the earlier on a tie,
  with a tolerance so float noise in timestamps does not decide ties)."""
  if len(times) == 1:
    return np.zeros(len(targets), dtype=np.int64)
  right = np.clip(np.searchsorted(times, targets), 1, len(times) - 1)
  left = right - 1
  take_right = (times[right] - targets) < (targets - times[left]) - 1e-9
  return np.where(take_right, right, left)


def read_video(path, *, max_frames: int | None = None, fps: float | None = None):
  """Decodes the main video stream of `path` (FFmpeg's best; audio is ignored).

  Args:
    path: any file FFmpeg can read (MP4, MKV, WebM, AVI, MOV, ...; any codec).
    max_frames: keep at most this many frames from the start (after resampling).
    fps: if given, resample to this rate by picking, for each output time
      t0 + j/fps, the decoded frame whose timestamp is nearest (no blending).
  Returns:
    (frames, fps): frames uint8 RGB [T, H, W, 3], upright per the stream's rotation
    metadata (so H, W are the displayed size); fps as a float — the source rate, or
    `fps` when resampling. Non-square pixel aspect ratios are not corrected.
  Raises:
    VideoError (a ValueError) with the path and the reason when the file is missing,
    empty, not a media file, has no video stream, fails to decode, or has no frames.
  """
  path = os.fspath(path)
  if max_frames is not None:
    if isinstance(max_frames, bool) or not isinstance(max_frames, numbers.Integral) or max_frames < 1:
      raise ValueError(f"max_frames={max_frames!r}; expected a positive integer or None")
    max_frames = int(max_frames)
  if fps is not None:
    fps = _positive_rate(fps, "fps={!r}; expected a positive frame rate or None")

  with _open_for_reading(path) as container:
    stream = container.streams.best("video") or container.streams.video[0]
    stream.thread_type = "AUTO"
    source_fps = _stream_fps(stream)
    decoded, times = [], []
    orientation, stopped_early = None, False
    try:
      for frame in container.decode(stream):
        if orientation is None:
          orientation = _orientation(frame, stream)
        # Without resampling every frame is kept: convert now rather than hold two copies.
        decoded.append(frame if fps is not None else _to_rgb(frame, orientation))
        times.append(frame.time)
        if max_frames is not None:
          # With resampling: frames come out in presentation order, so once one is at or
          # past the last output time, no later frame can be nearer to any output time.
          stopped_early = len(decoded) >= max_frames if fps is None else (
              frame.time is not None and times[0] is not None
              and frame.time - times[0] >= (max_frames - 1) / fps)
          if stopped_early:
            break
    except av.FFmpegError as e:
      raise VideoError(path, f"decoding failed after {len(decoded)} frames ({e})") from e
    if not decoded:
      raise VideoError(path, "no frames could be decoded")

  if any(t is None for t in times) or np.any(np.diff(np.asarray(times, dtype=np.float64)) <= 0):
    if source_fps is None:
      raise VideoError(path, "has neither a frame rate nor usable timestamps")
    times = [i / source_fps for i in range(len(decoded))]
  times = np.asarray(times, dtype=np.float64) - times[0]
  if source_fps is None:
    if len(times) < 2:
      raise VideoError(path, "has one frame and no frame rate")
    source_fps = (len(times) - 1) / times[-1]

  if fps is None:
    return np.stack(decoded[:max_frames]), source_fps
  duration = times[-1] + 1.0 / source_fps  # the last frame is shown for one period too
  count = max_frames if stopped_early else max(1, math.floor(duration * fps + 1e-6))
  selected = _nearest_indices(times, np.arange(count) / fps)[:max_frames]
  return np.stack([_to_rgb(decoded[i], orientation) for i in selected]), fps


# ---------------------------------------------------------------------------------------
# Writing.


def write_video(path, frames: np.ndarray, fps: float, *, crf: int = 18) -> None:
  """Writes uint8 RGB frames [T, H, W, 3] as an H.264 MP4 (yuv420p, `crf` quality:
  0 lossless luma, 18 visually near-lossless, 23 x264's default).

  yuv420p stores colour at half resolution, so H and W must be even (every SAMA bucket
  is a multiple of 32). The file appears complete or not at all: it is written under a
  temporary name in the same folder and renamed over `path` at the end.

  libx264 is repeatable at real sizes, but not on tiny frames (measured: 32x32 frames encode
  differently from run to run; 64x64 do not), so tests compare frames, not tiny files.
  """
  path = os.fspath(path)
  frames = check_frames(frames)
  _, height, width, _ = frames.shape
  if width % 2 or height % 2:
    raise ValueError(f"frames are {width}x{height} (WxH); H.264 yuv420p needs an even width "
                     "and height — crop or resize first (e.g. to a resolution bucket)")
  fps = _positive_rate(fps, "fps={!r}; expected a positive frame rate")
  rate = Fraction(fps).limit_denominator(1001)  # 29.97... -> 30000/1001, 24.0 -> 24
  if rate <= 0:
    raise ValueError(f"fps={fps!r} is too small to store as a frame rate")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")

  temp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    with av.open(temp, "w", format="mp4", options={"movflags": "faststart"}) as container:
      stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf)})
      stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
      for index, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = index  # in units of 1/rate, the stream's codec time base
        container.mux(stream.encode(frame))
      container.mux(stream.encode())
    os.replace(temp, path)
  except BaseException:
    if os.path.exists(temp):
      os.remove(temp)
    raise
