"""Temporal windows for editing videos longer than the model was trained on.

A long latent video [B, F, H, W, C] is covered by equal-length windows that overlap;
the last one is shifted back to end at the final frame, so every window has the same
length and the windows stack into one array (one compiled model call for all of them).
Per-window predictions are blended back with triangular weights that sum to 1 on
every frame, so each sampler step updates one global latent.

    starts = window_starts(length=11, window=5, overlap=1)   # (0, 4, 6)
    w = blend_weights(starts, window=5, length=11)           # [3, 5]
    v = blend(split_windows(x, starts, 5), starts, w, 11)    # == x
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def latent_window(video_window: int, video_frames: int, latent_frames: int) -> int:
  """Latent frames of a `video_window`-frame window of a video whose `video_frames`
  (1 + 4k) frames encode to `latent_frames`: the codec's temporal factor is
  (video_frames - 1) / (latent_frames - 1) (4 for the Wan VAE, 1 for the patch codec)."""
  if video_frames <= 1 or latent_frames <= 1:
    return min(video_window, latent_frames)
  factor = (video_frames - 1) // (latent_frames - 1)
  return 1 + (video_window - 1) // factor


def overlap_frames(window: int, fraction: float) -> int:
  """Frames a window shares with the next: `fraction` of the window, at least 1 and
  less than the window."""
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"window overlap is {fraction}; expected a fraction of the window in [0, 1)")
  if window < 2:
    raise ValueError(f"a window of {window} latent frame cannot overlap its neighbour; expected >= 2")
  return min(max(1, round(fraction * window)), window - 1)


def window_starts(length: int, window: int, overlap: int) -> tuple[int, ...]:
  """First frames of windows of `window` frames covering `length` frames, consecutive
  windows sharing at least `overlap`; the last window ends at the final frame (so it
  may share more). One window (start 0) when the window covers everything."""
  if window < 1 or length < 1:
    raise ValueError(f"window={window} and length={length} must both be positive")
  if window >= length:
    return (0,)
  if not 0 <= overlap < window:
    raise ValueError(f"overlap={overlap} frames; expected 0 <= overlap < window={window}")
  stride = window - overlap
  starts = list(range(0, length - window, stride))
  return tuple(starts + [length - window])


def blend_weights(starts: tuple[int, ...], window: int, length: int) -> np.ndarray:
  """float32 [n_windows, window]: triangular weights (highest mid-window, falling
  linearly towards both ends) normalised so the windows covering each frame sum to 1.
  A frame covered by one window gets weight 1 from it."""
  if min(starts) < 0 or max(starts) + window > length:
    raise ValueError(f"windows starting at {starts} of {window} frames do not fit in {length} frames")
  i = np.arange(window, dtype=np.float64)
  tent = np.minimum(i + 1, window - i)
  total = np.zeros(length)
  for s in starts:
    total[s:s + window] += tent
  if (total == 0).any():
    raise ValueError(f"windows starting at {starts} of {window} frames leave frames "
                     f"{np.flatnonzero(total == 0).tolist()} of {length} uncovered")
  return np.stack([tent / total[s:s + window] for s in starts]).astype(np.float32)


def split_windows(x: jax.Array, starts: tuple[int, ...], window: int) -> jax.Array:
  """x: [B, F, ...] -> [n_windows, B, window, ...]."""
  return jnp.stack([x[:, s:s + window] for s in starts])


def blend(windows: jax.Array, starts: tuple[int, ...], weights: np.ndarray, length: int) -> jax.Array:
  """windows: [n_windows, B, window, ...] -> [B, length, ...], each frame the weighted
  sum of the windows covering it (weights from `blend_weights`)."""
  n, b, window = windows.shape[:3]
  out = jnp.zeros((b, length) + windows.shape[3:], windows.dtype)
  for k, s in enumerate(starts):
    w = jnp.asarray(weights[k], windows.dtype).reshape((1, window) + (1,) * (windows.ndim - 3))
    out = out.at[:, s:s + window].add(w * windows[k])
  return out


def windowed_velocity(model_fn, source: jax.Array, starts: tuple[int, ...], window: int):
  """The sampler's velocity_fn over a whole long video, from a model run window by window.

  model_fn(x [B, window, ...], t [B], text [B, L, D], semantic [B, N, Ds] | None,
           source [B, window, ...], frame_offset int32 scalar) -> (velocity, semantic velocity | None).
  source: [B0, F, ...] clean source latents; a guided batch B = k·B0 repeats it k times.
  The windows run one after another under lax.map (one compiled model call, the memory of
  one window); their velocities are blended into [B, F, ...]; the semantic tokens are
  shared by all windows and move by the mean of their semantic velocities.
  """
  length = source.shape[1]
  weights = blend_weights(starts, window, length)
  offsets = jnp.asarray(starts, jnp.int32)

  def velocity(x, t, text, semantic):
    repeats = x.shape[0] // source.shape[0]
    sources = split_windows(jnp.concatenate([source] * repeats), starts, window)

    def one(args):
      x_w, source_w, offset = args
      return model_fn(x_w, t, text, semantic, source_w, offset)

    v, vs = jax.lax.map(one, (split_windows(x, starts, window), sources, offsets))
    return blend(v, starts, weights, length), None if vs is None else vs.mean(axis=0)

  return velocity
