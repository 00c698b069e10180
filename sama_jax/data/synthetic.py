"""The synthetic world's data, one random-access source per training stage.

`world_example(kind, index, seed)` is a pure function of its arguments, so a source is
just an index range (`WorldSource` adds `__len__` / `__getitem__`, the protocol of
grain's RandomAccessDataSource). Kinds (SYNTHETIC_WORLD.md, "Data for each stage"):

- "image_edit": Semantic Anchoring pairs, single frames: source, instruction, target,
  and the anchor frame (for an image, the edited frame itself).
- "clip": Motion Alignment raw clips with a caption; no instruction.
- "video_edit": stage-2 SFT pairs, with masks and trajectories.
- "eval_edit": held-out evaluation pairs: a separate seed stream, every edit involving
  a held-out (shape, colour) pair, and a share of instructions about absent objects
  (kind "unmatched", target = source).

The training kinds named in `held_out_from` never show a `held_out` pair, in source or
target. SYNTHETIC_WORLD.md holds the pairs out of stage-2 video edits only
(`held_out_from=("video_edit",)`, the world configs' `data.world.held_out_from`): stage 1's
image edits and raw clips show them, and the evaluation asks whether what stage 1 learnt
carries to videos. The keyword's default, every training kind, is the stricter split
(no training example shows a held-out pair); `held_out=frozenset()` trains on everything.

The world's parts, re-exported here: scenes and motion (`synthetic_scene.py`),
rendering (`synthetic_render.py`), language (`synthetic_grammar.py`), edits
(`synthetic_edits.py`) and measurements (`synthetic_metrics.py`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sama_jax.data.synthetic_edits import (EDIT_KINDS, HELD_OUT, Edit, apply_edit, check_edit_kinds,
                                           edit_from_instruction, edited_pairs, sample_edit,
                                           sample_unmatched_instruction)
from sama_jax.data.synthetic_grammar import caption, parse_instruction, vocabulary
from sama_jax.data.synthetic_metrics import edit_region, evaluate_edit, ground_truth, summarise
from sama_jax.data.synthetic_render import render
from sama_jax.data.synthetic_scene import (Background, Motion, Scene, SceneObject, SceneSampling,
                                           sample_scene)

__all__ = ["WORLD_KINDS", "TRAIN_KINDS", "WorldSource", "world_case", "world_example", "world_rng",
           "EDIT_KINDS", "HELD_OUT", "Edit", "apply_edit", "edit_from_instruction", "sample_edit",
           "sample_unmatched_instruction", "caption", "parse_instruction", "vocabulary", "evaluate_edit",
           "summarise", "render", "Background", "Motion", "Scene", "SceneObject", "SceneSampling",
           "sample_scene"]

WORLD_KINDS = ("image_edit", "clip", "video_edit", "eval_edit")
TRAIN_KINDS = WORLD_KINDS[:3]
# Scene redraws allowed when looking for a feasible (or, for evaluation, held-out) edit;
# a success takes a few draws, so hitting this means the options exclude everything.
MAX_DRAWS = 1000


def world_rng(kind: str, index: int, seed: int) -> np.random.Generator:
  """The generator of one example: independent streams per (seed, kind, index)."""
  if kind not in WORLD_KINDS:
    raise ValueError(f"world kind {kind!r} is not one of {WORLD_KINDS}")
  if int(index) < 0 or int(seed) < 0:
    raise ValueError(f"index={index} and seed={seed} must both be non-negative integers")
  return np.random.default_rng([int(seed), WORLD_KINDS.index(kind), int(index)])


def check_held_out_from(held_out_from, name: str = "held_out_from") -> None:
  """Raises ValueError unless `held_out_from` is a tuple (or list) of TRAIN_KINDS."""
  if isinstance(held_out_from, str) or set(held_out_from) - set(TRAIN_KINDS):
    raise ValueError(f"{name}={held_out_from!r}; expected a tuple of {TRAIN_KINDS} (the training kinds "
                     "that never show a held-out pair; () for none)")


def world_case(kind: str, index: int, seed: int = 0, *, frames: int = 17, height: int = 64, width: int = 64,
               kinds: tuple[str, ...] = EDIT_KINDS, held_out: frozenset = HELD_OUT,
               held_out_from: tuple[str, ...] = TRAIN_KINDS, unmatched_fraction: float = 0.1,
               sampling: SceneSampling = SceneSampling()) -> tuple[Scene, Edit | None]:
  """The scene (and edit; None for "clip") of example `index`, before rendering. Image
  edits are one-frame scenes. Training kinds in `held_out_from` show no `held_out` pair;
  "eval_edit" edits one. Deterministic for (kind, index, seed, options)."""
  rng = world_rng(kind, index, seed)
  check_held_out_from(held_out_from)
  if kind != "eval_edit" and kind not in held_out_from:
    held_out = frozenset()
  if kind == "clip":
    return sample_scene(rng, frames, height, width, held_out, sampling), None
  length = 1 if kind == "image_edit" else frames
  if kind == "eval_edit" and rng.random() < unmatched_fraction:
    scene = sample_scene(rng, length, height, width, frozenset(), sampling)
    return scene, sample_unmatched_instruction(scene, rng, kinds)
  check_edit_kinds(kinds)
  for _ in range(MAX_DRAWS):
    if kind == "eval_edit":
      scene = sample_scene(rng, length, height, width, frozenset(), sampling)
      edit = _try_edit(scene, rng, kinds, frozenset())
      if edit is not None and (not held_out or edited_pairs(scene, edit) & held_out):
        return scene, edit
    else:
      scene = sample_scene(rng, length, height, width, held_out, sampling)
      edit = _try_edit(scene, rng, kinds, held_out)
      if edit is not None:
        return scene, edit
  raise ValueError(f"no {kind} example with edit kinds {kinds} in {MAX_DRAWS} scene draws; "
                   f"held_out={sorted(held_out)} leaves too little")


def _try_edit(scene: Scene, rng: np.random.Generator, kinds, exclude) -> Edit | None:
  try:
    return sample_edit(scene, rng, kinds, exclude)
  except ValueError:  # this scene allows none of the kinds; draw another
    return None


def _slots(values: np.ndarray, axis_size: int, fill) -> np.ndarray:
  # Pads the object axis (axis 1) to a fixed size so examples batch.
  pad = [(0, 0)] * values.ndim
  pad[1] = (0, axis_size - values.shape[1])
  return np.pad(values, pad, constant_values=fill)


def world_example(kind: str, index: int, seed: int = 0, **options) -> dict:
  """Example `index` of a source, rendered; `options` are world_case's keywords.

  image_edit: {"source", "target", "anchor": uint8 [H, W, 3], "instruction", "edit_kind"}.
  clip: {"video": uint8 [T, H, W, 3], "caption", "centroids": float32 [T, S, 2],
    "present": bool [S]}.
  video_edit / eval_edit: {"source", "target": uint8 [T, H, W, 3], "instruction",
    "edit_kind", "caption", "target_caption", "matched": bool, "target_index": int
    (Edit.target, -1 for none), "edit_region": bool [T, H, W] (pixels the edit may
    change), "source_masks" / "target_masks": bool [T, S, H, W], "source_centroids" /
    "target_centroids": float32 [T, S, 2], "source_present" / "target_present": bool [S]}.
  Every example also has "index". S = max_objects + 1 object slots (room for an added
  object), padded with False / 0.
  """
  scene, edit = world_case(kind, index, seed, **options)
  slots = options.get("sampling", SceneSampling()).max_objects + 1
  if kind == "clip":
    video, _, centroids = render(scene)
    present = np.arange(slots) < len(scene.objects)
    return {"video": video, "caption": caption(scene), "centroids": _slots(centroids, slots, 0.0),
            "present": present, "index": np.int64(index)}
  truth = ground_truth(scene, edit)
  if kind == "image_edit":
    return {"source": truth.source_frames[0], "target": truth.frames[0], "anchor": truth.frames[0],
            "instruction": edit.instruction, "edit_kind": edit.kind, "index": np.int64(index)}
  return {
      "source": truth.source_frames, "target": truth.frames, "instruction": edit.instruction,
      "edit_kind": edit.kind, "caption": caption(scene), "target_caption": caption(truth.edited),
      "matched": np.bool_(edit.kind != "unmatched"),
      "target_index": np.int64(-1 if edit.target is None else edit.target),
      "edit_region": edit_region(scene, edit, truth),
      "source_masks": _slots(truth.source_visible >= 0.5, slots, False),
      "target_masks": _slots(truth.visible >= 0.5, slots, False),
      "source_centroids": _slots(truth.source_centres, slots, 0.0),
      "target_centroids": _slots(truth.centres, slots, 0.0),
      "source_present": np.arange(slots) < len(scene.objects),
      "target_present": np.arange(slots) < len(truth.edited.objects),
      "index": np.int64(index),
  }


@dataclasses.dataclass(frozen=True)
class WorldSource:
  """`length` examples of one kind: source[i] = world_example(kind, i, seed, **options).
  `options` is a tuple of (keyword, value) pairs so the source stays hashable."""
  kind: str
  length: int
  seed: int = 0
  options: tuple = ()

  def __post_init__(self):
    world_rng(self.kind, 0, self.seed)  # validates kind and seed
    if self.length < 0:
      raise ValueError(f"length={self.length}; a source needs a non-negative length")

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict:
    if not 0 <= int(index) < self.length:
      raise IndexError(f"index {index} is outside this {self.kind} source of length {self.length}")
    return world_example(self.kind, int(index), self.seed, **dict(self.options))
