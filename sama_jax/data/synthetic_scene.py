"""Scenes of the synthetic world: palette, shapes, motion, backgrounds, and sampling.

A scene is plain data (frozen dataclasses). `sample_scene` draws one from an explicit
generator and `trajectories` turns its motion into per-frame object centres; rendering
is `synthetic_render.py`, edits are `synthetic_edits.py`. See SYNTHETIC_WORLD.md.

Coordinates are continuous pixels, (y, x) = (row, column), y pointing down: pixel
(r, c) covers [r, r+1) x [c, c+1), so its centre is (r + 0.5, c + 0.5).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
OBJECT_COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange")
# Backgrounds may also take object colours; an object never shares a colour with its
# background because of MIN_CONTRAST.
BACKGROUND_COLOURS = OBJECT_COLOURS + ("black", "gray", "navy")
# Fixed RGB values, every pair at least ~90 apart, so nearest-palette classification of
# a model's output is unambiguous unless the colour is badly wrong.
COLOURS = types.MappingProxyType({
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 90, 235),
    "yellow": (245, 225, 40),
    "magenta": (215, 50, 215),
    "cyan": (40, 215, 225),
    "white": (245, 245, 245),
    "orange": (245, 135, 25),
    "black": (15, 15, 15),
    "gray": (120, 120, 120),
    "navy": (20, 30, 100),
})
# RGB distance an object colour keeps from every colour of its background (including
# every point along a gradient), so no object melts into the background.
MIN_CONTRAST = 70.0

# Shape geometry in units of the object's radius r: all four shapes span about 2r, so
# "radius" means the same size for each (areas: circle 3.1 r^2, square 2.9 r^2,
# triangle 1.7 r^2, cross 2.3 r^2), and any two differ enough to tell apart by IoU.
SQUARE_HALF_SIDE = 0.85
TRIANGLE_CIRCUMRADIUS = 1.15  # equilateral, apex up, centroid at the object centre
CROSS_ARM_HALF_WIDTH = 0.35  # arms reach r from the centre
# Largest distance from the centre to any shape's bounding box, per unit radius (the
# triangle's apex). Walls and spacing use it for every shape, so replacing a shape never
# changes where the object bounces: the edited clip keeps the source's motion exactly.
REACH = TRIANGLE_CIRCUMRADIUS
MIN_FRAME_SIZE = 16
MOTION_KINDS = ("static", "linear", "gravity", "circular")


@dataclasses.dataclass(frozen=True)
class Motion:
  """How an object's centre moves, in pixels and frames.

  Circular when `orbit_radius > 0`: the centre circles `start` at `angular_speed`
  radians per frame from angle `phase` (y = sin, x = cos). Otherwise it starts at
  `start` with `velocity`, gains `acceleration` every frame (gravity-like when it points
  down) and bounces elastically off the frame's walls. All zeros = static.
  """
  start: tuple[float, float]
  velocity: tuple[float, float] = (0.0, 0.0)
  acceleration: tuple[float, float] = (0.0, 0.0)
  orbit_radius: float = 0.0
  angular_speed: float = 0.0
  phase: float = 0.0

  @property
  def is_static(self) -> bool:
    if self.orbit_radius > 0:
      return self.angular_speed == 0
    return not any(self.velocity) and not any(self.acceleration)


@dataclasses.dataclass(frozen=True)
class SceneObject:
  """One shape of one named colour; `radius` in pixels (see the geometry constants)."""
  shape: str
  colour: str
  radius: float
  motion: Motion

  def __post_init__(self):
    if self.shape not in SHAPES:
      raise ValueError(f"shape {self.shape!r} is not one of {SHAPES}")
    if self.colour not in OBJECT_COLOURS:
      raise ValueError(f"object colour {self.colour!r} is not one of {OBJECT_COLOURS}")
    if not self.radius > 0:
      raise ValueError(f"object radius is {self.radius}; it must be > 0 pixels")

  @property
  def extent(self) -> float:
    """Distance from the centre to the walls it bounces off (REACH * radius)."""
    return REACH * self.radius


@dataclasses.dataclass(frozen=True)
class Background:
  """A solid colour (one name) or a linear two-colour gradient running along `angle`
  (radians; 0 = left to right, pi/2 = top to bottom) from colours[0] to colours[1]."""
  colours: tuple[str, ...]
  angle: float = 0.0

  def __post_init__(self):
    if len(self.colours) not in (1, 2) or any(c not in BACKGROUND_COLOURS for c in self.colours):
      raise ValueError(f"background colours {self.colours!r} must be one or two names from "
                       f"{BACKGROUND_COLOURS}")


@dataclasses.dataclass(frozen=True)
class Scene:
  """A clip's full description. `objects` are in occlusion order, back to front."""
  objects: tuple[SceneObject, ...]
  background: Background
  frames: int = 17
  height: int = 64
  width: int = 64

  def __post_init__(self):
    check_clip_size(self.frames, self.height, self.width)
    for obj in self.objects:
      if 2 * obj.extent >= min(self.height, self.width):
        raise ValueError(f"an object of radius {obj.radius} does not fit a "
                         f"{self.height}x{self.width} frame")


@dataclasses.dataclass(frozen=True)
class SceneSampling:
  """The ranges `sample_scene` draws from. Lengths are fractions of min(H, W) and speeds
  are pixels per frame at 64 pixels (they scale with the frame)."""
  max_objects: int = 3
  radius: tuple[float, float] = (0.08, 0.14)
  gradient_probability: float = 0.5
  # in MOTION_KINDS order: static, linear, gravity, circular
  motion_probabilities: tuple[float, float, float, float] = (0.2, 0.45, 0.15, 0.2)
  speed_bands: tuple[tuple[float, float], ...] = ((0.3, 1.0), (1.0, 2.5), (2.5, 4.5))
  gravity: tuple[float, float] = (0.15, 0.4)
  orbit_radius: tuple[float, float] = (0.1, 0.25)
  angular_speed: tuple[float, float] = (0.1, 0.3)  # radians per frame: slow circles
  # Objects start at least this share of the sum of their extents apart, so none is
  # born (or, if static, stays) hidden behind another.
  min_separation: float = 0.8


def check_clip_size(frames: int, height: int, width: int) -> None:
  """Raises ValueError unless frames = 4k+1 and both sides are >= MIN_FRAME_SIZE."""
  if not isinstance(frames, (int, np.integer)) or frames < 1 or frames % 4 != 1:
    raise ValueError(f"frames={frames!r}; the synthetic world needs 4k+1 frames (1, 5, 9, 17, ...)")
  if min(height, width) < MIN_FRAME_SIZE:
    raise ValueError(f"frame size {height}x{width}; each side must be >= {MIN_FRAME_SIZE} pixels")


def trajectory(motion: Motion, extent: float, frames: int, height: int, width: int) -> np.ndarray:
  """Centres of one object over the clip: float64 [T, 2] as (y, x).

  Linear and gravity motion is stepped frame by frame (position += velocity, then
  velocity += acceleration) and reflected off the walls at `extent` from each edge.
  """
  if motion.orbit_radius > 0:
    angle = motion.phase + motion.angular_speed * np.arange(frames)
    return np.stack([motion.start[0] + motion.orbit_radius * np.sin(angle),
                     motion.start[1] + motion.orbit_radius * np.cos(angle)], axis=-1)
  hi = (height - extent, width - extent)
  out = np.empty((frames, 2))
  for axis in range(2):
    p, v, a = float(motion.start[axis]), float(motion.velocity[axis]), float(motion.acceleration[axis])
    for t in range(frames):
      out[t, axis] = p
      p, v = _bounce(p + v, v, extent, hi[axis])
      v += a
  return out


def _bounce(p: float, v: float, lo: float, hi: float) -> tuple[float, float]:
  # A loop, not one reflection: a fast object in a narrow range can overshoot both walls.
  while p < lo or p > hi:
    p, v = (2 * lo - p if p < lo else 2 * hi - p), -v
  return p, v


def trajectories(scene: Scene) -> np.ndarray:
  """Centres of every object: float64 [T, n_objects, 2] as (y, x)."""
  tracks = [trajectory(o.motion, o.extent, scene.frames, scene.height, scene.width)
            for o in scene.objects]
  return np.stack(tracks, axis=1) if tracks else np.zeros((scene.frames, 0, 2))


def contrasts(colour: str, background: Background) -> bool:
  """Whether `colour` stays MIN_CONTRAST away from every colour the background takes."""
  return _contrasts(colour, background.colours)


@functools.lru_cache(maxsize=None)
def _contrasts(colour: str, background_colours: tuple[str, ...]) -> bool:
  # A function of the colour names alone (a gradient's angle does not change the colours
  # it takes), so cached: the edit sampler asks it about every option of every scene.
  ends = np.array([COLOURS[c] for c in background_colours], np.float64)
  c = np.array(COLOURS[colour], np.float64)
  if len(ends) == 1:
    return float(np.linalg.norm(c - ends[0])) >= MIN_CONTRAST
  # Distance from the colour to the gradient's segment in RGB space.
  d = ends[1] - ends[0]
  s = np.clip(np.dot(c - ends[0], d) / max(np.dot(d, d), 1e-9), 0.0, 1.0)
  return float(np.linalg.norm(c - ends[0] - s * d)) >= MIN_CONTRAST


def sample_background(rng: np.random.Generator, sampling: SceneSampling = SceneSampling()) -> Background:
  if rng.random() < sampling.gradient_probability:
    first, second = rng.choice(len(BACKGROUND_COLOURS), size=2, replace=False)
    return Background((BACKGROUND_COLOURS[first], BACKGROUND_COLOURS[second]),
                      float(rng.uniform(0, 2 * math.pi)))
  return Background((BACKGROUND_COLOURS[rng.integers(len(BACKGROUND_COLOURS))],))


def sample_motion(rng: np.random.Generator, extent: float, height: int, width: int,
                  sampling: SceneSampling = SceneSampling()) -> Motion:
  """A random motion that keeps an object of this extent inside the frame."""
  scale = min(height, width) / 64
  kind = MOTION_KINDS[rng.choice(len(MOTION_KINDS), p=sampling.motion_probabilities)]
  start = (float(rng.uniform(extent, height - extent)), float(rng.uniform(extent, width - extent)))
  if kind == "static":
    return Motion(start)
  if kind == "circular":
    room = min(height, width) / 2 - extent
    orbit = min(rng.uniform(*sampling.orbit_radius) * min(height, width), 0.9 * room)
    centre = (float(rng.uniform(extent + orbit, height - extent - orbit)),
              float(rng.uniform(extent + orbit, width - extent - orbit)))
    speed = rng.uniform(*sampling.angular_speed) * rng.choice((-1.0, 1.0))
    return Motion(centre, orbit_radius=float(orbit), angular_speed=float(speed),
                  phase=float(rng.uniform(0, 2 * math.pi)))
  band = sampling.speed_bands[rng.integers(len(sampling.speed_bands))]
  speed, heading = rng.uniform(*band) * scale, rng.uniform(0, 2 * math.pi)
  velocity = (float(speed * math.sin(heading)), float(speed * math.cos(heading)))
  if kind == "linear":
    return Motion(start, velocity)
  return Motion(start, velocity, (float(rng.uniform(*sampling.gravity) * scale), 0.0))


def sample_scene(rng: np.random.Generator, frames: int = 17, height: int = 64, width: int = 64,
                 exclude: frozenset = frozenset(), sampling: SceneSampling = SceneSampling()) -> Scene:
  """Draws a scene: background, 1..max_objects objects with distinct (shape, colour)
  pairs not in `exclude` (a set of (shape, colour) tuples), each contrasting with the
  background and starting clear of the others. Deterministic given the generator."""
  check_clip_size(frames, height, width)
  background = sample_background(rng, sampling)
  wanted = int(rng.integers(1, sampling.max_objects + 1))
  size = min(height, width)
  visible = frozenset(c for c in OBJECT_COLOURS if contrasts(c, background))
  objects, starts = [], []
  for _ in range(wanted):
    taken = {(o.shape, o.colour) for o in objects}
    free = [(s, c) for s in SHAPES for c in OBJECT_COLOURS
            if c in visible and (s, c) not in exclude and (s, c) not in taken]
    if not free:
      break
    shape, colour = free[rng.integers(len(free))]
    radius = float(rng.uniform(*sampling.radius) * size)
    extent = REACH * radius
    for _ in range(20):  # rejection: a crowded frame may simply get fewer objects
      motion = sample_motion(rng, extent, height, width, sampling)
      start = trajectory(motion, extent, 1, height, width)[0]
      if all(np.linalg.norm(start - p) >= sampling.min_separation * (extent + e) for p, e in starts):
        objects.append(SceneObject(shape, colour, radius, motion))
        starts.append((start, extent))
        break
  if not objects:
    raise ValueError(f"no object fits: every (shape, colour) pair is excluded or invisible on "
                     f"{background}; exclude={sorted(exclude)}")
  return Scene(tuple(objects), background, frames, height, width)
