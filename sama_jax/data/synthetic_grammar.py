"""The synthetic world's language: edit instructions, captions, a parser and the vocabulary.

Every instruction is one of a few phrasings per edit kind; referring expressions are
"the <colour> <shape>" or, when the shape is unique in the scene, "the <shape>".
`parse_instruction` inverts every template, so an instruction can be checked against
the edit it was made from, and `vocabulary` lists every word a word-level tokenizer
for this world needs.
"""

from __future__ import annotations

import re
import types

import numpy as np

from sama_jax.data.synthetic_scene import COLOURS, SHAPES, Scene

PLACES = ("top left", "top right", "bottom left", "bottom right", "center")
TEMPLATES = types.MappingProxyType({
    "recolour": ("make the {ref} {colour}", "change the colour of the {ref} to {colour}",
                 "turn the {ref} {colour}", "paint the {ref} {colour}"),
    "replace": ("replace the {ref} with a {colour} {shape}", "turn the {ref} into a {colour} {shape}",
                "swap the {ref} for a {colour} {shape}"),
    "remove": ("remove the {ref}", "delete the {ref}", "erase the {ref}", "take away the {ref}"),
    "add": ("add a {colour} {shape} {place}", "put a {colour} {shape} {place}",
            "place a {colour} {shape} {place}"),
    "background": ("change the background to {colour}", "make the background {colour}",
                   "paint the background {colour}"),
})
CAPTION_WORDS = ("a", "an", "and", "moving", "standing", "still", "on", "background", "gradient", "to")


def _with_articles(text: str) -> str:
  return re.sub(r"\ba (?=[aeiou])", "an ", text)


def place_phrase(place: str) -> str:
  if place not in PLACES:
    raise ValueError(f"place {place!r} is not one of {PLACES}")
  return "in the center" if place == "center" else f"in the {place} corner"


def referring_expression(scene: Scene, index: int, rng: np.random.Generator) -> str:
  """'red circle', or sometimes just 'circle' when no other object is a circle."""
  obj = scene.objects[index]
  unique_shape = sum(o.shape == obj.shape for o in scene.objects) == 1
  if unique_shape and rng.random() < 0.5:
    return obj.shape
  return f"{obj.colour} {obj.shape}"


def phrase(kind: str, rng: np.random.Generator, ref: str | None = None, colour: str | None = None,
           shape: str | None = None, place: str | None = None) -> str:
  """Fills a randomly chosen template of `kind` (one of TEMPLATES)."""
  if kind not in TEMPLATES:
    raise ValueError(f"edit kind {kind!r} is not one of {tuple(TEMPLATES)}")
  template = TEMPLATES[kind][rng.integers(len(TEMPLATES[kind]))]
  place_text = place_phrase(place) if place is not None else None
  return _with_articles(template.format(ref=ref, colour=colour, shape=shape, place=place_text))


def _template_regex(template: str) -> re.Pattern:
  colour, shape = "|".join(COLOURS), "|".join(SHAPES)
  pattern = template.replace("a {colour}", "an? {colour}")
  pattern = pattern.replace("{ref}", rf"(?:(?P<ref_colour>{colour}) )?(?P<ref_shape>{shape})")
  pattern = pattern.replace("{colour}", rf"(?P<colour>{colour})").replace("{shape}", rf"(?P<shape>{shape})")
  corners = "|".join(p for p in PLACES if p != "center")
  pattern = pattern.replace("{place}", rf"in the (?:(?P<place>{corners}) corner|(?P<centre>center))")
  return re.compile(pattern)


def parse_instruction(text: str) -> dict:
  """Inverts the templates.

  Returns {"kind", "ref_colour", "ref_shape", "colour", "shape", "place"}, with None for
  the parts the kind does not have (and for ref_colour when the reference is the shape
  alone). Raises ValueError for text that matches no template.
  """
  for kind, templates in TEMPLATES.items():
    for template in templates:
      match = _template_regex(template).fullmatch(text.strip().lower())
      if match:
        parts = match.groupdict()
        place = parts.pop("centre", None) or parts.get("place")
        return {"kind": kind, "ref_colour": parts.get("ref_colour"), "ref_shape": parts.get("ref_shape"),
                "colour": parts.get("colour"), "shape": parts.get("shape"), "place": place}
  raise ValueError(f"instruction {text!r} matches no template of the synthetic grammar; "
                   f"examples: {[t[0] for t in TEMPLATES.values()]}")


def find_objects(scene: Scene, colour: str | None, shape: str) -> tuple[int, ...]:
  """Indices of the objects a reference ('the <colour> <shape>' or 'the <shape>') names."""
  return tuple(i for i, o in enumerate(scene.objects)
               if o.shape == shape and (colour is None or o.colour == colour))


# How an instruction's reference picks out its object, from easiest to read to hardest.
REFERENCES = ("colour suffices", "colour shared", "shape only")


def reference_kind(scene: Scene, instruction: str) -> str | None:
  """Which cue the instruction's reference leaves a model to read (REFERENCES): "shape
  only" ('the cross'); "colour shared" ('the blue cross' where another object in the
  scene is blue, so the shape must tell them apart; for an instruction that matches no
  object, any object of the named colour); "colour suffices" otherwise. None for an
  instruction that names no object (background, add)."""
  parts = parse_instruction(instruction)
  if parts["ref_shape"] is None:
    return None
  if parts["ref_colour"] is None:
    return "shape only"
  named = sum(o.colour == parts["ref_colour"] for o in scene.objects)
  matched = bool(find_objects(scene, parts["ref_colour"], parts["ref_shape"]))
  return "colour shared" if named > matched else "colour suffices"


def caption(scene: Scene) -> str:
  """e.g. 'a red circle and a blue square moving on a green background'."""
  names = [f"a {o.colour} {o.shape}" for o in scene.objects]
  if len(names) <= 1:
    things = names[0] if names else "nothing"
  else:
    things = ", ".join(names[:-1]) + " and " + names[-1]
  if len(scene.background.colours) == 1:
    ground = f"a {scene.background.colours[0]} background"
  else:
    ground = f"a {scene.background.colours[0]} to {scene.background.colours[1]} gradient background"
  still = scene.frames == 1 or all(o.motion.is_static for o in scene.objects)
  return _with_articles(f"{things} {'standing still' if still else 'moving'} on {ground}")


def vocabulary() -> tuple[str, ...]:
  """Every word instructions and captions use, sorted."""
  words = set(CAPTION_WORDS) | {"nothing", "corner", "in", "the"} | set(SHAPES) | set(COLOURS)
  for place in PLACES:
    words.update(place.split())
  for templates in TEMPLATES.values():
    for template in templates:
      words.update(w for w in template.split() if not w.startswith("{"))
  return tuple(sorted(words))
