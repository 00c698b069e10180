"""Rendering synthetic-world scenes to RGB clips, with exact per-object coverage.

Edges are anti-aliased from signed distances: a pixel's coverage is
clip(0.5 - d, 0, 1) for the distance d (pixels, negative inside) from its centre to the
shape's boundary, which is the exact area fraction for a straight edge crossing the
pixel and a close estimate elsewhere. Objects are composited back to front, so the
frame is fully determined by the scene: re-rendering an edited scene gives the edit's
ground truth.
"""

from __future__ import annotations

import math

import numpy as np

from sama_jax.data.synthetic_scene import (COLOURS, CROSS_ARM_HALF_WIDTH, SQUARE_HALF_SIDE,
                                           TRIANGLE_CIRCUMRADIUS, Background, Scene, trajectories)


def _box_distance(dy: np.ndarray, dx: np.ndarray, half_y: float, half_x: float) -> np.ndarray:
  qy, qx = np.abs(dy) - half_y, np.abs(dx) - half_x
  outside = np.hypot(np.maximum(qy, 0), np.maximum(qx, 0))
  return outside + np.minimum(np.maximum(qy, qx), 0)


def _triangle_distance(dy: np.ndarray, dx: np.ndarray, half_side: float) -> np.ndarray:
  # Exact distance to an equilateral triangle centred on its centroid, apex up (the
  # standard folding construction; y is flipped because image rows grow downwards).
  k = math.sqrt(3.0)
  px, py = np.abs(dx) - half_side, -dy + half_side / k
  fold = px + k * py > 0
  px, py = np.where(fold, (px - k * py) / 2, px), np.where(fold, (-k * px - py) / 2, py)
  px = px - np.clip(px, -2 * half_side, 0)
  return -np.hypot(px, py) * np.sign(py)


def signed_distance(shape: str, radius: float, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
  """Distance (pixels) from offsets (dy, dx) to the shape's boundary, negative inside."""
  if shape == "circle":
    return np.hypot(dy, dx) - radius
  if shape == "square":
    return _box_distance(dy, dx, SQUARE_HALF_SIDE * radius, SQUARE_HALF_SIDE * radius)
  if shape == "triangle":
    return _triangle_distance(dy, dx, TRIANGLE_CIRCUMRADIUS * radius * math.sqrt(3.0) / 2)
  if shape == "cross":
    arm = CROSS_ARM_HALF_WIDTH * radius
    return np.minimum(_box_distance(dy, dx, radius, arm), _box_distance(dy, dx, arm, radius))
  raise ValueError(f"shape {shape!r} is not one of circle/square/triangle/cross")


def shape_coverage(shape: str, radius: float, centres: np.ndarray, height: int, width: int) -> np.ndarray:
  """Anti-aliased coverage of one shape per frame: float32 [T, H, W] in [0, 1].

  centres: [T, 2] as (y, x) in continuous pixel coordinates.
  """
  centres = np.asarray(centres, np.float64).reshape(-1, 2)
  dy = (np.arange(height) + 0.5)[None, :, None] - centres[:, 0, None, None]
  dx = (np.arange(width) + 0.5)[None, None, :] - centres[:, 1, None, None]
  return np.clip(0.5 - signed_distance(shape, radius, dy, dx), 0, 1).astype(np.float32)


def background_image(background: Background, height: int, width: int) -> np.ndarray:
  """The background as float32 [H, W, 3] in 0..255 (a gradient is linear in RGB)."""
  ends = np.array([COLOURS[c] for c in background.colours], np.float32)
  if len(ends) == 1:
    return np.broadcast_to(ends[0], (height, width, 3)).copy()
  cos, sin = math.cos(background.angle), math.sin(background.angle)
  y = np.arange(height)[:, None] + 0.5 - height / 2
  x = np.arange(width)[None, :] + 0.5 - width / 2
  reach = (abs(cos) * width + abs(sin) * height) / 2  # projection of the frame's corners
  s = ((x * cos + y * sin) / (2 * reach) + 0.5).astype(np.float32)[..., None]
  return (1 - s) * ends[0] + s * ends[1]


def render_layers(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Renders a scene, keeping what each object contributes.

  Returns:
    frames: uint8 [T, H, W, 3].
    visible: float32 [T, n_objects, H, W], each object's coverage after the objects in
      front of it have taken theirs; frames = background * (1 - sum) + sum of
      visible * colour, before rounding.
    centres: float32 [T, n_objects, 2], (y, x) object centres (the shape's centroid).
  """
  t, h, w, n = scene.frames, scene.height, scene.width, len(scene.objects)
  centres = trajectories(scene)
  visible = np.zeros((t, n, h, w), np.float32)
  uncovered = np.ones((t, h, w), np.float32)  # share of each pixel still showing through
  for i in reversed(range(n)):  # front to back, so each object takes what is left
    obj = scene.objects[i]
    coverage = shape_coverage(obj.shape, obj.radius, centres[:, i], h, w)
    visible[:, i] = coverage * uncovered
    uncovered *= 1 - coverage
  colours = np.array([COLOURS[o.colour] for o in scene.objects], np.float32).reshape(n, 3)
  image = (uncovered[..., None] * background_image(scene.background, h, w)
           + np.tensordot(visible, colours, axes=([1], [0])))
  frames = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return frames, visible, centres.astype(np.float32)


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Renders a scene deterministically.

  Returns:
    frames: uint8 [T, H, W, 3].
    masks: bool [T, n_objects, H, W], pixels where the object's visible coverage
      (after occlusion) is at least one half.
    centroids: float32 [T, n_objects, 2], (y, x) true object centres, which follow the
      scene's motion even when an object is partly hidden or clipped.
  """
  frames, visible, centres = render_layers(scene)
  return frames, visible >= 0.5, centres
