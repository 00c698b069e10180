"""Measuring an edited clip against the synthetic world's exact ground truth.

Every function takes the predicted clip `pred` (uint8 or float in 0..255,
[T, H, W, 3]), the source `scene` and the `edit`; the ground truth is re-rendered from
them (pass `truth=ground_truth(scene, edit)` to render once for several measures).
SYNTHETIC_WORLD.md "Measurements":

- edit success, per frame and then all frames (frames where the object is hidden are
  skipped): recolour = most pixels inside the object's true mask have the new colour
  as their nearest palette colour; replace / add = the pixels of the new colour around
  the object match a render of the true shape best among the four shapes, with
  IoU >= SHAPE_IOU; remove = most pixels where the object was show what the ground truth
  shows there (within MATCH_DISTANCE: the background, or an object it hid); background =
  most pure-background pixels have the new colour; unmatched = every object keeps its
  colour and the background keeps its palette colours. Every other kind also needs most
  pixels outside the edit region to keep their nearest palette colour (a colour cast
  over the whole frame is no edit), and each object the edit does not name to keep its
  colour on most of its pixels (recolouring every object is not recolouring the named one).
- preservation: PSNR against the ground truth outside the edited region.
- motion: centroid error (pixels) of the edited object (of all objects, for remove /
  background / unmatched): colour-segment the object inside a window around its true
  centre, in the prediction and in the ground truth alike, and compare the centroids.
- flicker: mean absolute frame-to-frame change of the prediction where the ground truth
  is still and nothing was edited.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sama_jax.data.synthetic_edits import Edit, apply_edit
from sama_jax.data.synthetic_render import render_layers, shape_coverage
from sama_jax.data.synthetic_scene import COLOURS, REACH, SHAPES, Scene

PALETTE_NAMES = tuple(COLOURS)
# Share of pixels that must carry the instructed colour: a clear majority, and more
# than either half of a two-colour gradient background can reach.
SUCCESS_SHARE = 0.75
# A pixel "has" a colour within this RGB distance: under half the smallest distance
# between palette colours (86) and between an object and its background (70).
MATCH_DISTANCE = 35.0
SHAPE_IOU = 0.5
WINDOW_MARGIN = 3.0  # pixels around an object's extent searched for it
PSNR_CAP_DB = 100.0  # stands in for infinity when averaging


@dataclasses.dataclass(frozen=True)
class Truth:
  """Renders of the source and edited scenes (see render_layers)."""
  edited: Scene
  source_frames: np.ndarray  # uint8 [T, H, W, 3]
  source_visible: np.ndarray  # float32 [T, n_source, H, W]
  source_centres: np.ndarray  # float32 [T, n_source, 2]
  frames: np.ndarray  # uint8 [T, H, W, 3], the ground-truth edited clip
  visible: np.ndarray  # float32 [T, n_edited, H, W]
  centres: np.ndarray  # float32 [T, n_edited, 2]


def ground_truth(scene: Scene, edit: Edit) -> Truth:
  edited = apply_edit(scene, edit)
  return Truth(edited, *render_layers(scene), *render_layers(edited))


def _check_pred(pred, scene: Scene) -> np.ndarray:
  pred = np.asarray(pred)
  expected = (scene.frames, scene.height, scene.width, 3)
  if pred.shape != expected:
    raise ValueError(f"predicted clip has shape {pred.shape}; the scene needs {expected} [T, H, W, 3]")
  return pred.astype(np.float32)


def nearest_colour(pixels: np.ndarray) -> np.ndarray:
  """Index into PALETTE_NAMES of each pixel's nearest palette colour: [...] from [..., 3]."""
  palette = np.array(list(COLOURS.values()), np.float32)
  return np.argmin(np.linalg.norm(pixels[..., None, :] - palette, axis=-1), axis=-1)


def colour_match(frames: np.ndarray, colour: str) -> np.ndarray:
  """bool [T, H, W]: pixels within MATCH_DISTANCE of the named colour."""
  return np.linalg.norm(frames.astype(np.float32) - np.array(COLOURS[colour], np.float32), axis=-1) < MATCH_DISTANCE


def edit_region(scene: Scene, edit: Edit, truth: Truth) -> np.ndarray:
  """bool [T, H, W]: pixels the edit may change (everything any edited layer touches)."""
  t, h, w = scene.frames, scene.height, scene.width
  if edit.kind in ("recolour", "replace"):
    return (truth.source_visible[:, edit.target] > 0) | (truth.visible[:, edit.target] > 0)
  if edit.kind == "remove":
    return truth.source_visible[:, edit.target] > 0
  if edit.kind == "add":
    return truth.visible[:, edit.target] > 0
  if edit.kind == "background":
    return truth.visible.sum(axis=1) < 1 - 1e-4
  return np.zeros((t, h, w), bool)


def _objects_of_interest(edit: Edit, truth: Truth) -> list[int]:
  if edit.kind in ("recolour", "replace", "add"):
    return [edit.target]
  return list(range(len(truth.edited.objects)))


def _core(visible_t: np.ndarray) -> np.ndarray:
  # Fully covered pixels, or the half-covered ones for an object too thin to have any.
  core = visible_t >= 0.99
  return core if core.any() else visible_t >= 0.5


def _colour_share(pixels: np.ndarray, colour: str) -> float:
  return float(np.mean(nearest_colour(pixels) == PALETTE_NAMES.index(colour)))


def _others(truth: Truth, index: int) -> np.ndarray:
  others = np.delete(truth.visible, index, axis=1)
  return (others >= 0.5).any(axis=1)  # [T, H, W]


def _window(centre: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
  reach = REACH * radius + WINDOW_MARGIN
  y = np.arange(height)[:, None] + 0.5
  x = np.arange(width)[None, :] + 0.5
  return (np.abs(y - centre[0]) <= reach) & (np.abs(x - centre[1]) <= reach)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
  union = np.logical_or(a, b).sum()
  return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _shape_frames(pred: np.ndarray, truth: Truth, index: int) -> np.ndarray:
  """Per frame: the prediction's pixels of the object's colour near it overlap those of
  the ground truth best among renders of every shape on the same path, with IoU >=
  SHAPE_IOU. Comparing like with like (a colour segmentation of a render) keeps
  anti-aliased edges from favouring one shape. Frames where the object is mostly hidden
  are skipped: a sliver has no shape."""
  obj, scene = truth.edited.objects[index], truth.edited
  near = ~_others(truth, index) & np.stack(
      [_window(c, obj.radius, scene.height, scene.width) for c in truth.centres[:, index]])
  seg = colour_match(pred, obj.colour) & near
  hypotheses = {}
  for shape in SHAPES:
    objects = list(scene.objects)
    objects[index] = dataclasses.replace(obj, shape=shape)
    frames = render_layers(dataclasses.replace(scene, objects=tuple(objects)))[0]
    hypotheses[shape] = colour_match(frames, obj.colour) & near
  whole = shape_coverage(obj.shape, obj.radius, truth.centres[:, index], scene.height, scene.width) >= 0.5
  shown = (truth.visible[:, index] >= 0.5).sum(axis=(1, 2)) / np.maximum(whole.sum(axis=(1, 2)), 1)
  ok = np.ones(scene.frames, bool)
  for t in np.nonzero(shown >= 0.5)[0]:
    ious = {shape: _iou(seg[t], hyp[t]) for shape, hyp in hypotheses.items()}
    ok[t] = max(ious, key=ious.get) == obj.shape and ious[obj.shape] >= SHAPE_IOU
  return ok


def edit_success_frames(pred, scene: Scene, edit: Edit, truth: Truth | None = None) -> np.ndarray:
  """bool [T]: whether each frame shows the instructed edit (True where not measurable):
  the edit itself (`named_edit_frames`) and, but for unmatched instructions, the rest of
  the frame and every other object kept (`_rest_kept`)."""
  named, rest = _halves(pred, scene, edit, truth or ground_truth(scene, edit))
  return named & rest


def _halves(pred, scene: Scene, edit: Edit, truth: Truth) -> tuple[np.ndarray, np.ndarray]:
  """(named_edit_frames, rest kept) as bool [T] each; the rest counts as kept for an
  unmatched instruction, whose named half already asks that nothing change."""
  pred = _check_pred(pred, scene)
  named = named_edit_frames(pred, scene, edit, truth)
  rest = np.ones(scene.frames, bool) if edit.kind == "unmatched" else _rest_kept(pred, scene, edit, truth)
  return named, rest


def named_edit_frames(pred, scene: Scene, edit: Edit, truth: Truth | None = None) -> np.ndarray:
  """bool [T]: whether each frame shows the edit where the instruction asks for it (the
  named object recoloured, replaced or gone, the added object, the new background),
  whatever happens to the other objects; for an unmatched instruction, every object and
  the background keep their colours."""
  pred = _check_pred(pred, scene)
  truth = truth or ground_truth(scene, edit)
  if edit.kind in ("replace", "add"):
    return _shape_frames(pred, truth, edit.target)
  ok = np.ones(scene.frames, bool)
  for t in range(scene.frames):
    if edit.kind == "recolour":
      core = _core(truth.visible[t, edit.target])
      ok[t] &= not core.any() or _colour_share(pred[t][core], edit.colour) >= SUCCESS_SHARE
    elif edit.kind == "remove":
      where = truth.source_visible[t, edit.target] >= 0.5
      close = np.linalg.norm(pred[t] - truth.frames[t].astype(np.float32), axis=-1) <= MATCH_DISTANCE
      ok[t] &= not where.any() or close[where].mean() >= SUCCESS_SHARE
    elif edit.kind == "background":
      ground = truth.visible[t].sum(axis=0) < 1e-4
      ok[t] &= not ground.any() or _colour_share(pred[t][ground], edit.colour) >= SUCCESS_SHARE
    else:  # unmatched: nothing may change colour
      for i, obj in enumerate(truth.edited.objects):
        core = _core(truth.visible[t, i])
        ok[t] &= not core.any() or _colour_share(pred[t][core], obj.colour) >= SUCCESS_SHARE
      ok[t] &= _colours_kept(pred[t], truth.frames[t], truth.visible[t].sum(axis=0) < 1e-4)
  return ok


def _colours_kept(pred_t: np.ndarray, truth_t: np.ndarray, where: np.ndarray) -> bool:
  """Whether most pixels `where` (bool [H, W]) keep the ground truth's nearest palette
  colour (True when `where` is empty)."""
  if not where.any():
    return True
  return (nearest_colour(pred_t[where]) == nearest_colour(truth_t[where].astype(np.float32))).mean() >= SUCCESS_SHARE


def _rest_kept(pred: np.ndarray, scene: Scene, edit: Edit, truth: Truth) -> np.ndarray:
  """bool [T]: most pixels outside the edit region keep their colours, so an edit painted
  over the whole frame is no edit, and so do most pixels of each object the edit leaves
  alone (outside the edit region), so an edit applied to every object is no edit either:
  the objects are a few percent of the frame, too few for the first rule to notice."""
  keep = ~edit_region(scene, edit, truth)
  named = edit.target if edit.kind in ("recolour", "replace", "add") else None
  ok = np.array([_colours_kept(pred[t], truth.frames[t], keep[t]) for t in range(scene.frames)])
  for i in range(truth.visible.shape[1]):
    if i == named:
      continue
    for t in range(scene.frames):
      ok[t] &= _colours_kept(pred[t], truth.frames[t], _core(truth.visible[t, i]) & keep[t])
  return ok


def edit_success(pred, scene: Scene, edit: Edit, truth: Truth | None = None) -> bool:
  """Whether every frame shows the instructed edit."""
  return bool(edit_success_frames(pred, scene, edit, truth).all())


def preservation_psnr(pred, scene: Scene, edit: Edit, truth: Truth | None = None) -> float:
  """PSNR (dB) against the ground truth outside the edit region; inf when identical,
  nan when the edit region is the whole clip."""
  pred = _check_pred(pred, scene)
  truth = truth or ground_truth(scene, edit)
  keep = ~edit_region(scene, edit, truth)
  if not keep.any():
    return math.nan
  mse = float(np.mean((pred[keep] - truth.frames[keep].astype(np.float32)) ** 2))
  return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _centroids(frames: np.ndarray, truth: Truth, index: int) -> np.ndarray:
  """float [T, 2] centroid (y, x) of the object's colour near its true centre; nan
  where none of it is found."""
  obj, scene = truth.edited.objects[index], truth.edited
  found = colour_match(frames, obj.colour) & ~_others(truth, index)
  out = np.full((scene.frames, 2), np.nan)
  for t in range(scene.frames):
    ys, xs = np.nonzero(found[t] & _window(truth.centres[t, index], obj.radius, scene.height, scene.width))
    if len(ys):
      out[t] = ys.mean() + 0.5, xs.mean() + 0.5
  return out


def motion_error(pred, scene: Scene, edit: Edit, truth: Truth | None = None) -> float:
  """Mean centroid error (pixels) of the object(s) of interest against the ground truth,
  whose motion is the source's. A frame where the ground truth shows the object but the
  prediction has none of its colour costs the window's half-diagonal, the largest
  error the window can measure. nan when there is no object to follow."""
  pred = _check_pred(pred, scene)
  truth = truth or ground_truth(scene, edit)
  errors = []
  for i in _objects_of_interest(edit, truth):
    radius = truth.edited.objects[i].radius
    miss = math.sqrt(2) * (REACH * radius + WINDOW_MARGIN)
    true, guess = _centroids(truth.frames, truth, i), _centroids(pred, truth, i)
    seen = ~np.isnan(true[:, 0])
    error = np.linalg.norm(guess - true, axis=-1)
    errors += list(np.where(np.isnan(error), miss, error)[seen])
  return float(np.mean(errors)) if errors else math.nan


def temporal_flicker(pred, scene: Scene, edit: Edit, truth: Truth | None = None) -> float:
  """Mean |pred[t] - pred[t-1]| (0..255, averaged over channels) over pixels that are
  unedited and unchanged in the ground truth between the two frames; nan if none."""
  pred = _check_pred(pred, scene)
  truth = truth or ground_truth(scene, edit)
  region = edit_region(scene, edit, truth)
  still = (truth.frames[1:] == truth.frames[:-1]).all(axis=-1) & ~region[1:] & ~region[:-1]
  if not still.any():
    return math.nan
  return float(np.abs(pred[1:] - pred[:-1]).mean(axis=-1)[still].mean())


def evaluate_edit(pred, scene: Scene, edit: Edit) -> dict:
  """All measures for one clip: {"kind", "success", "frame_success", "named_ok",
  "others_kept", "psnr", "motion_error", "flicker"}; frame_success is the share of its
  frames that show the edit (a frame with nothing to measure passes, as for success,
  which asks it of every frame). A failure splits into its two halves: named_ok, the
  edit shows where the instruction asks in every frame (`named_edit_frames`), and
  others_kept, nothing else changed (`_rest_kept`; True for unmatched instructions), so
  an edit applied to the wrong object fails both and one applied to every object of the
  named colour fails only the second."""
  truth = ground_truth(scene, edit)
  named, rest = _halves(pred, scene, edit, truth)
  frames = named & rest
  return {"kind": edit.kind, "success": bool(frames.all()), "frame_success": float(frames.mean()),
          "named_ok": bool(named.all()), "others_kept": bool(rest.all()),
          "psnr": preservation_psnr(pred, scene, edit, truth),
          "motion_error": motion_error(pred, scene, edit, truth),
          "flicker": temporal_flicker(pred, scene, edit, truth)}


def summarise(rows: list[dict]) -> dict:
  """Per edit kind (and "all"): success rate, mean frame success, named-edit and
  others-kept rates (evaluate_edit), PSNR (capped at PSNR_CAP_DB), motion error and
  flicker (nan or missing entries ignored), and the count."""
  def mean(chosen, key, cap=math.inf):
    values = [min(r.get(key, math.nan), cap) for r in chosen if not math.isnan(r.get(key, math.nan))]
    return float(np.mean(values)) if values else math.nan

  table = {}
  for kind in sorted({r["kind"] for r in rows}) + ["all"]:
    chosen = [r for r in rows if kind in ("all", r["kind"])]
    table[kind] = {"count": len(chosen), "success": float(np.mean([r["success"] for r in chosen])),
                   "frame_success": mean(chosen, "frame_success"),
                   "named_ok": mean(chosen, "named_ok"), "others_kept": mean(chosen, "others_kept"),
                   "psnr": mean(chosen, "psnr", PSNR_CAP_DB), "motion_error": mean(chosen, "motion_error"),
                   "flicker": mean(chosen, "flicker")}
  return table
