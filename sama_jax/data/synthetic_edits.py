"""Edits of synthetic-world scenes: sampling, applying, and the held-out split.

An edit changes the scene description, never the pixels: the ground-truth edited clip
is `render(apply_edit(scene, edit))`, which keeps every unedited object's motion and the
occlusion order. Training edits only name objects that are in the scene and never
produce a held-out (shape, colour) pair; `sample_unmatched_instruction` makes the
evaluation-only instructions about absent objects, whose answer is the unchanged video.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sama_jax.data import synthetic_grammar as grammar
from sama_jax.data.synthetic_scene import (BACKGROUND_COLOURS, OBJECT_COLOURS, REACH, SHAPES, Background,
                                           Motion, Scene, SceneObject, contrasts, trajectories)

EDIT_KINDS = ("recolour", "replace", "remove", "add", "background")
# (shape, colour) pairs never seen in training video edits: each colour once, each shape
# twice, so every colour and every shape is still trained with other partners, and the
# SYNTHETIC_WORLD.md example instructions all stay in training.
HELD_OUT = frozenset({("square", "red"), ("circle", "green"), ("triangle", "blue"), ("cross", "yellow"),
                      ("triangle", "magenta"), ("square", "cyan"), ("cross", "white"), ("circle", "orange")})
# An added object is static, in front of all others, with this radius (share of
# min(H, W)) and this gap (share of min(H, W)) between it and the frame's corner.
ADD_RADIUS = 0.11
ADD_MARGIN = 0.06
# Probability that a replace keeps the object's colour ("replace the green triangle
# with a green cross"), so shape changes are also learnt on their own.
REPLACE_KEEPS_COLOUR = 0.5


@dataclasses.dataclass(frozen=True)
class Edit:
  """One instruction and what it does.

  kind: one of EDIT_KINDS, or "unmatched" (names an absent object; changes nothing).
  target: recolour/replace/remove: index of the object in the source scene; add: index
    of the new object in the edited scene (the last, front-most); otherwise None.
  colour: the new colour (recolour, replace, add, background). shape: the new shape
  (replace, add). place: where an added object goes, one of grammar.PLACES.
  """
  kind: str
  instruction: str
  target: int | None = None
  colour: str | None = None
  shape: str | None = None
  place: str | None = None


def add_position(place: str, height: int, width: int) -> tuple[float, float]:
  """Centre (y, x) of an object added at a named place (one of grammar.PLACES)."""
  if place not in grammar.PLACES:
    raise ValueError(f"place {place!r} is not one of {grammar.PLACES}")
  if place == "center":
    return height / 2, width / 2
  inset = (REACH * ADD_RADIUS + ADD_MARGIN) * min(height, width)
  vertical, horizontal = place.split()
  return (inset if vertical == "top" else height - inset), (inset if horizontal == "left" else width - inset)


def _added_object(scene: Scene, shape: str, colour: str, place: str) -> SceneObject:
  start = add_position(place, scene.height, scene.width)
  return SceneObject(shape, colour, ADD_RADIUS * min(scene.height, scene.width), Motion(start))


def apply_edit(scene: Scene, edit: Edit) -> Scene:
  """The edited scene: same background, motion and occlusion order except for the edit."""
  objects = list(scene.objects)
  if edit.kind in ("recolour", "replace", "remove") and not (
      isinstance(edit.target, (int, np.integer)) and 0 <= edit.target < len(objects)):
    raise ValueError(f"{edit.kind} edit targets object {edit.target!r}; the scene has objects 0..{len(objects) - 1}")
  if edit.kind == "recolour":
    objects[edit.target] = dataclasses.replace(objects[edit.target], colour=edit.colour)
  elif edit.kind == "replace":
    objects[edit.target] = dataclasses.replace(objects[edit.target], shape=edit.shape, colour=edit.colour)
  elif edit.kind == "remove":
    del objects[edit.target]
  elif edit.kind == "add":
    objects.append(_added_object(scene, edit.shape, edit.colour, edit.place))
  elif edit.kind == "background":
    return dataclasses.replace(scene, background=Background((edit.colour,)))
  elif edit.kind != "unmatched":
    raise ValueError(f"edit kind {edit.kind!r} is not one of {EDIT_KINDS + ('unmatched',)}")
  return dataclasses.replace(scene, objects=tuple(objects))


def _allowed(scene: Scene, shape: str, colour: str, exclude: frozenset, skip: int | None = None) -> bool:
  # A new (shape, colour) must keep references unambiguous, stay visible and not leak a
  # held-out pair into training.
  taken = any((o.shape, o.colour) == (shape, colour) for i, o in enumerate(scene.objects) if i != skip)
  return not taken and (shape, colour) not in exclude and contrasts(colour, scene.background)


def _recolour_options(scene, exclude):
  return [(i, c) for i, o in enumerate(scene.objects) for c in OBJECT_COLOURS
          if c != o.colour and _allowed(scene, o.shape, c, exclude, skip=i)]


def _replace_options(scene, exclude):
  return [(i, s, c) for i, o in enumerate(scene.objects) for s in SHAPES for c in OBJECT_COLOURS
          if s != o.shape and _allowed(scene, s, c, exclude, skip=i)]


def _add_options(scene, exclude):
  # Keep added objects off static objects, which they would cover for the whole clip.
  centres = trajectories(scene)[0]
  extent = REACH * ADD_RADIUS * min(scene.height, scene.width)
  options = []
  for place in grammar.PLACES:
    position = np.array(add_position(place, scene.height, scene.width))
    if all(np.linalg.norm(centres[i] - position) >= o.extent + extent
           for i, o in enumerate(scene.objects) if o.motion.is_static):
      options += [(s, c, place) for s in SHAPES for c in OBJECT_COLOURS if _allowed(scene, s, c, exclude)]
  return options


def _background_options(scene, exclude):
  del exclude  # a new background creates no (shape, colour) pair
  current = scene.background.colours[0] if len(scene.background.colours) == 1 else None
  return [c for c in BACKGROUND_COLOURS
          if c != current and all(contrasts(o.colour, Background((c,))) for o in scene.objects)]


def _options(kind: str, scene: Scene, exclude: frozenset) -> list:
  if kind == "remove":
    return list(range(len(scene.objects)))
  return {"recolour": _recolour_options, "replace": _replace_options, "add": _add_options,
          "background": _background_options}[kind](scene, exclude)


def check_edit_kinds(kinds) -> None:
  if isinstance(kinds, str) or not kinds or any(k not in EDIT_KINDS for k in kinds):
    raise ValueError(f"edit kinds {kinds!r} must be a non-empty tuple of names from {EDIT_KINDS}")


def sample_edit(scene: Scene, rng: np.random.Generator, kinds: tuple[str, ...] = EDIT_KINDS,
                exclude: frozenset = HELD_OUT) -> Edit:
  """Draws an edit of one of `kinds` that is possible in the scene and creates no
  (shape, colour) pair in `exclude`. Raises ValueError when none of `kinds` is possible."""
  check_edit_kinds(kinds)
  options = {k: _options(k, scene, exclude) for k in kinds}
  feasible = [k for k in kinds if options[k]]
  if not feasible:
    raise ValueError(f"no edit of kinds {tuple(kinds)} is possible in a scene with "
                     f"{[(o.colour, o.shape) for o in scene.objects]} on {scene.background.colours}")
  kind = feasible[rng.integers(len(feasible))]
  choices = options[kind]
  if kind == "replace":
    same = [o for o in choices if o[2] == scene.objects[o[0]].colour]
    if same and rng.random() < REPLACE_KEEPS_COLOUR:
      choices = same
  choice = choices[rng.integers(len(choices))]
  if kind == "recolour":
    i, colour = choice
    ref = grammar.referring_expression(scene, i, rng)
    return Edit(kind, grammar.phrase(kind, rng, ref=ref, colour=colour), i, colour=colour)
  if kind == "replace":
    i, shape, colour = choice
    ref = grammar.referring_expression(scene, i, rng)
    return Edit(kind, grammar.phrase(kind, rng, ref=ref, colour=colour, shape=shape), i, colour, shape)
  if kind == "remove":
    return Edit(kind, grammar.phrase(kind, rng, ref=grammar.referring_expression(scene, choice, rng)), choice)
  if kind == "add":
    shape, colour, place = choice
    text = grammar.phrase(kind, rng, colour=colour, shape=shape, place=place)
    return Edit(kind, text, len(scene.objects), colour, shape, place)
  return Edit(kind, grammar.phrase(kind, rng, colour=choice), None, colour=choice)


REFERRING_KINDS = ("recolour", "replace", "remove")  # the edit kinds that name an object


def sample_unmatched_instruction(scene: Scene, rng: np.random.Generator,
                                 kinds: tuple[str, ...] = REFERRING_KINDS) -> Edit:
  """An instruction about an object the scene does not have, phrased as one of `kinds`
  that name an object (recolour, replace or remove; all three when `kinds` has none, e.g.
  a run trained on backgrounds only). Its kind is "unmatched": the correct output is the
  unchanged video."""
  absent = [(s, c) for s in SHAPES for c in OBJECT_COLOURS
            if not grammar.find_objects(scene, c, s)]
  shape, colour = absent[rng.integers(len(absent))]
  ref = shape if not grammar.find_objects(scene, None, shape) and rng.random() < 0.5 else f"{colour} {shape}"
  phrasings = tuple(k for k in REFERRING_KINDS if k in kinds) or REFERRING_KINDS
  kind = phrasings[rng.integers(len(phrasings))]
  new_colour = OBJECT_COLOURS[rng.integers(len(OBJECT_COLOURS))]
  new_shape = SHAPES[rng.integers(len(SHAPES))]
  return Edit("unmatched", grammar.phrase(kind, rng, ref=ref, colour=new_colour, shape=new_shape))


def edit_from_instruction(scene: Scene, instruction: str) -> Edit:
  """Reads an instruction against a scene: the inverse of the samplers.

  A reference to an absent object gives kind "unmatched"; an ambiguous one (it names
  two objects) raises ValueError, since the grammar never produces it.
  """
  parsed = grammar.parse_instruction(instruction)
  kind = parsed["kind"]
  if kind == "add":
    return Edit(kind, instruction, len(scene.objects), parsed["colour"], parsed["shape"], parsed["place"])
  if kind == "background":
    return Edit(kind, instruction, None, parsed["colour"])
  found = grammar.find_objects(scene, parsed["ref_colour"], parsed["ref_shape"])
  if len(found) > 1:
    raise ValueError(f"instruction {instruction!r} is ambiguous: it names objects {found}")
  if not found:
    return Edit("unmatched", instruction)
  if kind == "remove":
    return Edit(kind, instruction, found[0])
  if kind == "recolour":
    return Edit(kind, instruction, found[0], parsed["colour"])
  return Edit(kind, instruction, found[0], parsed["colour"], parsed["shape"])


def edited_pairs(scene: Scene, edit: Edit) -> frozenset:
  """The (shape, colour) pairs an edit is about: the edited object before and after (or
  the added / removed one), or every object for a background edit."""
  if edit.kind == "background":
    return frozenset((o.shape, o.colour) for o in scene.objects)
  if edit.kind == "add":
    return frozenset({(edit.shape, edit.colour)})
  if edit.kind in ("recolour", "replace", "remove"):
    edited = apply_edit(scene, edit)
    before = scene.objects[edit.target]
    pairs = {(before.shape, before.colour)}
    if edit.kind != "remove":
      after = edited.objects[edit.target]
      pairs.add((after.shape, after.colour))
    return frozenset(pairs)
  return frozenset()
