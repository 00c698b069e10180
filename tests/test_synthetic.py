"""The synthetic world (SYNTHETIC_WORLD.md): scenes, rendering, edits, data sources and
measurements. Pure NumPy; every test runs in the default suite."""

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from sama_jax.data import synthetic_grammar as grammar
from sama_jax.data.synthetic import WORLD_KINDS, WorldSource, world_case, world_example
from sama_jax.data.synthetic_edits import (EDIT_KINDS, HELD_OUT, Edit, add_position, apply_edit,
                                           edit_from_instruction, edited_pairs, sample_edit,
                                           sample_unmatched_instruction)
from sama_jax.data.synthetic_metrics import (edit_region, edit_success, edit_success_frames, evaluate_edit, ground_truth,
                                             motion_error, preservation_psnr, summarise, temporal_flicker)
from sama_jax.data.synthetic_render import render, render_layers, shape_coverage
from sama_jax.data.synthetic_scene import (BACKGROUND_COLOURS, COLOURS, MIN_CONTRAST, OBJECT_COLOURS, SHAPES,
                                           Background, Motion, Scene, SceneObject, contrasts, sample_scene)

BLACK = Background(("black",))


def one_object_scene(motion, shape="circle", colour="red", radius=6.0, frames=17, size=64):
  return Scene((SceneObject(shape, colour, radius, motion),), BLACK, frames, size, size)


def case(kind, index, split="video_edit"):
  return world_case(split, index, 0, kinds=(kind,))


def fold(u, lo, hi):
  """Position of a point moving freely along u, reflected between two walls."""
  span = hi - lo
  return lo + span - np.abs(np.mod(u - lo, 2 * span) - span)


# Scenes and rendering.

def test_scene_sampling_is_deterministic_for_a_seed():
  assert sample_scene(np.random.default_rng(7)) == sample_scene(np.random.default_rng(7))
  assert sample_scene(np.random.default_rng(7)) != sample_scene(np.random.default_rng(8))


def test_render_is_deterministic_with_documented_shapes_and_dtypes():
  scene = sample_scene(np.random.default_rng(3), frames=9, height=48, width=80)
  frames, masks, centroids = render(scene)
  n = len(scene.objects)
  assert frames.shape == (9, 48, 80, 3) and frames.dtype == np.uint8
  assert masks.shape == (9, n, 48, 80) and masks.dtype == bool
  assert centroids.shape == (9, n, 2) and centroids.dtype == np.float32
  again = render(scene)
  assert all(np.array_equal(a, b) for a, b in zip((frames, masks, centroids), again))


@pytest.mark.parametrize("frames,height,width", [(16, 64, 64), (0, 64, 64), (17, 8, 64)])
def test_bad_clip_sizes_are_rejected_with_the_expected_form(frames, height, width):
  with pytest.raises(ValueError, match="4k\\+1|pixels"):
    sample_scene(np.random.default_rng(0), frames, height, width)


def test_edges_are_anti_aliased():
  frames, _, _ = render(one_object_scene(Motion((30.3, 31.7)), colour="white"))
  red = frames[0, ..., 0].astype(int)
  edge = (red > COLOURS["black"][0]) & (red < COLOURS["white"][0])
  assert edge.sum() >= 20  # a ring of partly covered pixels around the circle
  assert set(np.unique(red[edge])) > {red[edge].min(), red[edge].max()}  # graded, not two-level


@pytest.mark.parametrize("shape,area", [("circle", math.pi * 36), ("square", (1.7 * 6) ** 2),
                                        ("triangle", 3 * math.sqrt(3) / 4 * (1.15 * 6) ** 2),
                                        ("cross", 2 * (12 * 4.2) - 4.2 ** 2)])
def test_coverage_integrates_to_the_shape_area_and_centres_on_the_centroid(shape, area):
  coverage = shape_coverage(shape, 6.0, np.array([[20.3, 21.7]]), 48, 48)[0]
  assert coverage.sum() == pytest.approx(area, rel=0.01)
  ys, xs = np.indices(coverage.shape) + 0.5
  centroid = (coverage * ys).sum() / coverage.sum(), (coverage * xs).sum() / coverage.sum()
  np.testing.assert_allclose(centroid, (20.3, 21.7), atol=0.05)


def test_linear_motion_follows_the_velocity_and_bounces_off_walls():
  scene = one_object_scene(Motion((20.0, 30.0), velocity=(1.5, 4.5)))
  _, _, centroids = render(scene)
  lo, hi = scene.objects[0].extent, 64 - scene.objects[0].extent
  t = np.arange(17)
  expected = np.stack([fold(20.0 + 1.5 * t, lo, hi), fold(30.0 + 4.5 * t, lo, hi)], -1)
  np.testing.assert_allclose(centroids[:, 0], expected, atol=1e-4)
  steps = np.diff(centroids[:, 0, 1])
  assert (steps > 0).any() and (steps < 0).any()  # it did bounce


def test_mask_centroids_follow_the_true_centres():
  frames, masks, centroids = render(one_object_scene(Motion((20.0, 30.0), velocity=(1.5, 2.5)), "square"))
  for t in range(17):
    ys, xs = np.nonzero(masks[t, 0])
    np.testing.assert_allclose((ys.mean() + 0.5, xs.mean() + 0.5), centroids[t, 0], atol=0.6)


def test_static_objects_do_not_move():
  frames, _, centroids = render(one_object_scene(Motion((25.0, 40.0)), "cross"))
  assert np.all(centroids == centroids[0]) and np.all(frames == frames[0])


def test_gravity_accelerates_downwards_and_stays_in_the_frame():
  scene = one_object_scene(Motion((12.0, 32.0), acceleration=(0.5, 0.0)), frames=33)
  y = render(scene)[2][:, 0, 0]
  extent = scene.objects[0].extent
  np.testing.assert_allclose(np.diff(y)[:5], 0.5 * np.arange(5), atol=1e-5)  # falls faster and faster
  assert y.min() >= extent - 1e-4 and y.max() <= 64 - extent + 1e-4


def test_circular_motion_stays_on_its_circle():
  scene = one_object_scene(Motion((32.0, 32.0), orbit_radius=10.0, angular_speed=0.2, phase=1.0))
  centres = render(scene)[2][:, 0]
  np.testing.assert_allclose(np.linalg.norm(centres - 32.0, axis=-1), 10.0, atol=1e-4)


def test_contrast_is_the_distance_to_every_colour_the_background_takes():
  # Against the definition, brute force: the background's colours sampled densely along
  # its gradient (a solid background is a gradient of one colour); the answer must not
  # depend on the gradient's angle or on which colours were asked about before (cached).
  t = np.linspace(0.0, 1.0, 2001)[:, None]
  checked = 0
  for first in BACKGROUND_COLOURS:
    for second in BACKGROUND_COLOURS:
      a, b = np.array(COLOURS[first], float), np.array(COLOURS[second], float)
      shades = a + t * (b - a)
      for colour in OBJECT_COLOURS:
        distance = np.linalg.norm(shades - np.array(COLOURS[colour], float), axis=-1).min()
        if abs(distance - MIN_CONTRAST) < 0.5:
          continue  # the sampling's resolution
        colours = (first,) if first == second else (first, second)
        for angle in (0.0, 1.3):
          assert contrasts(colour, Background(colours, angle)) == (distance >= MIN_CONTRAST), (colour, colours)
        checked += 1
  assert checked > 0.9 * len(BACKGROUND_COLOURS) ** 2 * len(OBJECT_COLOURS)


def test_sampled_scenes_follow_the_world_rules():
  kinds = set()
  for seed in range(150):
    scene = sample_scene(np.random.default_rng(seed))
    assert 1 <= len(scene.objects) <= 3
    pairs = [(o.shape, o.colour) for o in scene.objects]
    assert len(set(pairs)) == len(pairs)  # every object can be named unambiguously
    assert all(contrasts(o.colour, scene.background) for o in scene.objects)
    _, _, centres = render_layers(scene)
    for i, obj in enumerate(scene.objects):
      assert centres[:, i].min() >= obj.extent - 1e-3 and centres[:, i].max() <= 64 - obj.extent + 1e-3
      kinds.add("static" if obj.motion.is_static else "orbit" if obj.motion.orbit_radius else
                "gravity" if any(obj.motion.acceleration) else "linear")
    kinds.add(len(scene.background.colours))
  assert kinds == {"static", "linear", "gravity", "orbit", 1, 2}


# Edits.

def test_recolour_changes_only_pixels_inside_the_object_and_keeps_its_motion():
  for index in range(5):
    scene, edit = case("recolour", index)
    source, _, source_centres = render_layers(scene)
    target, _, target_centres = render_layers(apply_edit(scene, edit))
    _, visible, _ = render_layers(scene)
    changed = (source != target).any(-1)
    assert changed.any() and not changed[visible[:, edit.target] == 0].any()
    np.testing.assert_array_equal(source_centres, target_centres)


def test_replace_keeps_the_motion_and_changes_only_the_object():
  for index in range(5):
    scene, edit = case("replace", index)
    edited = apply_edit(scene, edit)
    assert edited.objects[edit.target].shape == edit.shape != scene.objects[edit.target].shape
    source, before, centres = render_layers(scene)
    target, after, edited_centres = render_layers(edited)
    np.testing.assert_array_equal(centres, edited_centres)
    changed = (source != target).any(-1)
    assert not changed[(before[:, edit.target] == 0) & (after[:, edit.target] == 0)].any()


def test_remove_leaves_the_background_where_the_object_was_unoccluded():
  for index in range(5):
    scene, edit = case("remove", index)
    _, visible, _ = render_layers(scene)
    target, remaining, _ = render_layers(apply_edit(scene, edit))
    empty, _, _ = render_layers(dataclasses.replace(scene, objects=()))
    was_there = (visible[:, edit.target] > 0) & (remaining.sum(axis=1) == 0)
    assert was_there.any()
    np.testing.assert_array_equal(target[was_there], empty[was_there])


@pytest.mark.parametrize("place", grammar.PLACES)
def test_add_puts_a_static_object_at_the_named_place(place):
  scene = one_object_scene(Motion((32.0, 32.0), velocity=(0.0, 0.0)), "circle", "red", 4.0)
  edit = edit_from_instruction(scene, f"add a blue square {grammar.place_phrase(place)}")
  edited = apply_edit(scene, edit)
  _, masks, centres = render(edited)
  assert edit.target == 1 and edited.objects[1].motion.is_static
  assert np.all(centres[:, 1] == centres[0, 1])
  ys, xs = np.nonzero(masks[0, 1])
  y, x = ys.mean() + 0.5, xs.mean() + 0.5
  np.testing.assert_allclose((y, x), add_position(place, 64, 64), atol=0.6)
  if place != "center":
    assert (y < 32) == ("top" in place) and (x < 32) == ("left" in place)


def test_background_edit_changes_only_background_pixels():
  for index in range(5):
    scene, edit = case("background", index)
    source, visible, _ = render_layers(scene)
    target, _, _ = render_layers(apply_edit(scene, edit))
    covered = visible.sum(axis=1) > 1 - 1e-6
    pure = visible.sum(axis=1) == 0
    np.testing.assert_array_equal(source[covered], target[covered])
    assert np.all(target[pure] == COLOURS[edit.colour])


def test_spec_example_instructions_parse():
  assert grammar.parse_instruction("make the red circle blue")["colour"] == "blue"
  assert grammar.parse_instruction("change the colour of the square to yellow")["ref_shape"] == "square"
  replace = grammar.parse_instruction("replace the green triangle with a green cross")
  assert (replace["kind"], replace["ref_shape"], replace["shape"]) == ("replace", "triangle", "cross")
  assert grammar.parse_instruction("remove the blue square")["kind"] == "remove"
  assert grammar.parse_instruction("add a white circle in the top left corner")["place"] == "top left"
  assert grammar.parse_instruction("change the background to orange")["kind"] == "background"
  with pytest.raises(ValueError, match="matches no template"):
    grammar.parse_instruction("dance the red circle")


def test_sampled_instructions_parse_back_to_their_edit():
  phrasings = set()
  for seed in range(150):
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng)
    edit = sample_edit(scene, rng)
    assert edit_from_instruction(scene, edit.instruction) == edit
    assert set(edit.instruction.split()) <= set(grammar.vocabulary())
    phrasings.add(edit.instruction.split()[0])
  assert len(phrasings) >= 8  # several phrasings per kind are in use


def test_unmatched_instructions_name_absent_objects_and_change_nothing():
  for seed in range(50):
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng)
    edit = sample_unmatched_instruction(scene, rng)
    assert edit.kind == "unmatched"
    assert edit_from_instruction(scene, edit.instruction).kind == "unmatched"
    assert apply_edit(scene, edit) == scene


def test_unmatched_eval_instructions_are_phrased_as_the_trained_kinds():
  """A run trained on recolours and removals is not asked to replace absent objects."""
  phrased = {k: set() for k in [("recolour", "remove"), ("background", "remove"), ("background",)]}
  for kinds, seen in phrased.items():
    for index in range(200):
      _, edit = world_case("eval_edit", index, 0, frames=1, height=32, width=32, kinds=kinds)
      if edit.kind == "unmatched":
        seen.add(grammar.parse_instruction(edit.instruction)["kind"])
  assert phrased[("recolour", "remove")] == {"recolour", "remove"}
  assert phrased[("background", "remove")] == {"remove"}
  assert phrased[("background",)] == {"recolour", "replace", "remove"}  # no referring kind: all three


def test_impossible_edits_are_clear_errors():
  scene = one_object_scene(Motion((32.0, 32.0)))
  with pytest.raises(ValueError, match="edit kinds"):
    sample_edit(scene, np.random.default_rng(0), kinds=("explode",))
  with pytest.raises(ValueError, match="targets object 3"):
    apply_edit(scene, Edit("remove", "remove the circle", 3))
  everything = frozenset((s, c) for s in SHAPES for c in OBJECT_COLOURS)
  with pytest.raises(ValueError, match="no edit of kinds"):
    sample_edit(scene, np.random.default_rng(0), kinds=("recolour",), exclude=everything)


# Data sources.

def test_held_out_pairs_never_appear_in_training_examples():
  for index in range(300):
    for kind in ("image_edit", "video_edit"):
      scene, edit = world_case(kind, index, 1)
      shown = {(o.shape, o.colour) for s in (scene, apply_edit(scene, edit)) for o in s.objects}
      assert not shown & HELD_OUT, (kind, index, edit)
    scene, _ = world_case("clip", index, 1)
    assert not {(o.shape, o.colour) for o in scene.objects} & HELD_OUT


def test_the_design_split_shows_held_out_pairs_in_stage_1_data_only():
  # SYNTHETIC_WORLD.md: held out of stage-2 video edits; image edits and raw clips show them.
  def shown(kind):
    pairs = set()
    for index in range(200):
      scene, edit = world_case(kind, index, 1, held_out_from=("video_edit",))
      after = apply_edit(scene, edit) if edit else scene
      pairs |= {(o.shape, o.colour) for s in (scene, after) for o in s.objects}
    return pairs & HELD_OUT

  assert shown("image_edit") == HELD_OUT and shown("clip") == HELD_OUT
  assert not shown("video_edit")
  for index in range(50):  # the evaluation clips do not depend on the training split
    assert world_case("eval_edit", index, 0, held_out_from=())[1] == world_case("eval_edit", index, 0)[1]
  for bad in ("video_edit", ("eval_edit",), ("videos",)):
    with pytest.raises(ValueError, match="held_out_from"):
      world_case("clip", 0, 0, held_out_from=bad)


def test_evaluation_edits_involve_held_out_pairs_or_absent_objects():
  kinds = set()
  for index in range(100):
    scene, edit = world_case("eval_edit", index, 0)
    kinds.add(edit.kind)
    if edit.kind == "unmatched":
      assert apply_edit(scene, edit) == scene
    else:
      assert edited_pairs(scene, edit) & HELD_OUT
  assert kinds == set(EDIT_KINDS) | {"unmatched"}
  train = {world_case("video_edit", i, 0)[0] for i in range(50)}
  assert not train & {world_case("eval_edit", i, 0)[0] for i in range(50)}  # separate seed streams


@pytest.mark.parametrize("kind", WORLD_KINDS)
def test_world_examples_are_random_access_and_reproducible(kind):
  first, again, other = world_example(kind, 5, 3), world_example(kind, 5, 3), world_example(kind, 6, 3)
  assert first.keys() == again.keys()
  assert all(np.array_equal(first[k], again[k]) for k in first)
  image = first["source"] if "source" in first else first["video"]
  assert image.dtype == np.uint8 and image.shape[-3:] == (64, 64, 3)
  assert not np.array_equal(image, other["source"] if "source" in other else other["video"])


def test_video_edit_examples_carry_consistent_masks_and_trajectories():
  example = world_example("video_edit", 2, 0, frames=9, height=32, width=48)
  assert example["source"].shape == example["target"].shape == (9, 32, 48, 3)
  assert example["target_masks"].shape == (9, 4, 32, 48) and example["target_centroids"].shape == (9, 4, 2)
  assert not example["target_masks"][:, ~example["target_present"]].any()
  changed = (example["source"] != example["target"]).any(-1)
  assert not changed[~example["edit_region"]].any()
  assert isinstance(example["instruction"], str) and isinstance(example["caption"], str)


def test_clip_captions_describe_the_scene():
  scene = Scene((SceneObject("circle", "red", 6, Motion((20, 20), (1, 0))),
                 SceneObject("square", "blue", 6, Motion((40, 40)))), Background(("green",)))
  assert grammar.caption(scene) == "a red circle and a blue square moving on a green background"
  example = world_example("clip", 0, 0)
  assert example["video"].shape == (17, 64, 64, 3) and example["caption"]


def test_reference_kind_says_which_cue_names_the_object():
  scene = Scene((SceneObject("circle", "red", 6, Motion((20, 20))), SceneObject("cross", "red", 6, Motion((40, 40))),
                 SceneObject("square", "blue", 6, Motion((20, 40)))), Background(("green",)))
  kind = lambda text: grammar.reference_kind(scene, text)
  assert kind("make the blue square red") == "colour suffices"
  assert kind("make the red cross blue") == "colour shared"  # the red circle: the shape must tell
  assert kind("remove the square") == kind("delete the cross") == "shape only"
  # An instruction naming no object: a red object exists, so only the shape says "none".
  assert kind("remove the red square") == "colour shared" and kind("remove the green square") == "colour suffices"
  assert kind("make the background blue") is None and kind("add a red circle in the top left corner") is None


def test_world_source_is_an_indexable_sequence():
  source = WorldSource("image_edit", 3, seed=2, options=(("height", 32), ("width", 32)))
  assert len(source) == 3 and source[1]["source"].shape == (32, 32, 3)
  assert source[1]["instruction"] == world_example("image_edit", 1, 2, height=32, width=32)["instruction"]
  with pytest.raises(IndexError, match="outside"):
    source[3]


# Measurements.

@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_ground_truth_scores_perfectly_and_identity_fails(kind):
  cases = [case(kind, index, "eval_edit") for index in range(6)]
  cases = [(scene, edit) for scene, edit in cases if edit.kind == kind][:3]
  assert cases
  for scene, edit in cases:
    truth = ground_truth(scene, edit)
    perfect = evaluate_edit(truth.frames, scene, edit)
    assert perfect["success"] and perfect["frame_success"] == 1.0 and perfect["psnr"] == math.inf
    # nan, not 0, where there is nothing to measure (no object left, no still pixel)
    assert not perfect["motion_error"] > 0 and not perfect["flicker"] > 0
    assert not edit_success(truth.source_frames, scene, edit)
    frames = edit_success_frames(truth.source_frames, scene, edit, truth)
    assert evaluate_edit(truth.source_frames, scene, edit)["frame_success"] == frames.mean() < 1.0


def test_a_removal_must_show_what_was_behind_the_object():
  scene, edit = case("remove", 0)
  truth = ground_truth(scene, edit)
  where = truth.source_visible[:, edit.target] >= 0.5
  # The old colour is gone in both, but neither shows the background behind the object.
  darkened = truth.frames.copy()
  darkened[where] = (truth.source_frames[where] * 0.4).astype(np.uint8)
  noise = np.random.default_rng(0).integers(0, 256, truth.frames.shape, dtype=np.uint8)
  for wrong in (darkened, noise):
    assert not edit_success(wrong, scene, edit)
  assert edit_success(truth.frames, scene, edit)


@pytest.mark.parametrize("kind", ["recolour", "background", "add"])
def test_an_edit_painted_over_the_whole_frame_is_no_edit(kind):
  """The new colour everywhere puts it on the object (or the background) too; the rest of
  the frame must keep its colours for the edit to count."""
  scene, edit = case(kind, 0)
  truth = ground_truth(scene, edit)
  assert edit_success(truth.frames, scene, edit)
  region = edit_region(scene, edit, truth)
  cast = truth.frames.copy()
  cast[~region] = COLOURS[edit.colour]  # the edit right, everything else in its colour
  assert not edit_success(cast, scene, edit)
  # A few wrong pixels outside the edit region are tolerated.
  speckled = truth.frames.copy()
  speckled[:, ::4, ::4] = COLOURS[edit.colour]
  speckled[region] = truth.frames[region]
  assert edit_success(speckled, scene, edit)


@pytest.mark.parametrize("kind", ["recolour", "remove", "replace"])
def test_an_edit_applied_to_every_object_is_no_edit(kind):
  """Recolouring (or erasing) the objects the instruction does not name as well as the
  named one changes a few percent of the frame, which the rest-of-frame rule tolerates;
  each untouched object must keep its colour."""
  scene, edit = next((s, e) for s, e in (case(kind, i) for i in range(40))
                     if e.kind == kind and len(s.objects) >= 2)
  truth = ground_truth(scene, edit)
  assert edit_success(truth.frames, scene, edit)
  region = edit_region(scene, edit, truth)
  named = edit.target if kind != "remove" else None
  others = [i for i in range(truth.visible.shape[1]) if i != named]
  on_others = (truth.visible[:, others] >= 0.5).any(axis=1) & ~region
  assert on_others.mean() < 0.25  # the rest-of-frame rule alone would pass this
  painted = truth.frames.copy()
  painted[on_others] = COLOURS["white" if edit.colour != "white" else "red"] if kind == "remove" else COLOURS[edit.colour]
  assert not edit_success(painted, scene, edit)
  # one wrong pixel on another object is tolerated
  speckled = truth.frames.copy()
  t, y, x = np.argwhere(on_others)[0]
  speckled[t, y, x] = 255 - speckled[t, y, x]
  assert edit_success(speckled, scene, edit)


@pytest.mark.parametrize("kind", ["recolour", "remove"])
def test_a_failure_splits_into_the_named_edit_and_the_others_kept(kind):
  """evaluate_edit: an edit applied to every object passes named_ok and fails
  others_kept; the edit applied to another object instead fails both; the source fails
  named_ok only; the truth passes both."""
  scene, edit = next((s, e) for s, e in (case(kind, i) for i in range(40))
                     if e.kind == kind and len(s.objects) >= 2)
  truth = ground_truth(scene, edit)
  other = next(i for i in range(len(scene.objects)) if i != edit.target)
  wrong = ground_truth(scene, dataclasses.replace(edit, target=other)).frames
  every = wrong.copy()
  region = edit_region(scene, edit, truth)
  every[region] = truth.frames[region]  # the named edit as well as the other one
  halves = lambda frames: (lambda r: (r["named_ok"], r["others_kept"], r["success"]))(
      evaluate_edit(frames, scene, edit))
  assert halves(truth.frames) == (True, True, True)
  assert halves(every) == (True, False, False)
  assert halves(wrong) == (False, False, False)
  assert halves(truth.source_frames) == (False, True, False)


def test_unmatched_instruction_is_answered_by_the_unchanged_video():
  rng = np.random.default_rng(4)
  scene = sample_scene(rng)
  edit = sample_unmatched_instruction(scene, rng)
  frames = render(scene)[0]
  assert edit_success(frames, scene, edit) and preservation_psnr(frames, scene, edit) == math.inf
  other = next(c for c in ("navy", "black") if scene.background.colours != (c,))
  repainted = render(dataclasses.replace(scene, background=Background((other,))))[0]
  assert not edit_success(repainted, scene, edit)


def test_motion_error_measures_a_displaced_object():
  scene, edit = case("recolour", 0)
  edited = apply_edit(scene, edit)
  obj = edited.objects[edit.target]
  shifted = list(edited.objects)
  shifted[edit.target] = dataclasses.replace(
      obj, motion=dataclasses.replace(obj.motion, start=(obj.motion.start[0], obj.motion.start[1] + 2.0)))
  moved = render(dataclasses.replace(edited, objects=tuple(shifted)))[0]
  assert 1.0 < motion_error(moved, scene, edit) < 3.0


def test_preservation_ignores_the_edit_region_and_flicker_sees_noise():
  scene, edit = case("recolour", 1)
  truth = ground_truth(scene, edit)
  rng = np.random.default_rng(0)
  region = np.zeros(truth.frames.shape, bool)
  region[truth.visible[:, edit.target] > 0] = True
  inside = np.where(region, rng.integers(0, 256, truth.frames.shape), truth.frames).astype(np.uint8)
  assert preservation_psnr(inside, scene, edit) == math.inf
  noisy = np.clip(truth.frames + rng.normal(0, 8, truth.frames.shape), 0, 255)
  assert 25 < preservation_psnr(noisy, scene, edit) < 35
  assert temporal_flicker(truth.frames, scene, edit) == 0 < temporal_flicker(noisy, scene, edit)


def test_summary_reports_success_per_edit_kind():
  rows = [{"kind": "remove", "success": True, "psnr": math.inf, "motion_error": 0.0, "flicker": 0.0},
          {"kind": "remove", "success": False, "psnr": 20.0, "motion_error": math.nan, "flicker": 1.0}]
  table = summarise(rows)
  assert table["remove"]["success"] == 0.5 and table["all"]["count"] == 2
  assert table["remove"]["psnr"] == 60.0 and table["remove"]["motion_error"] == 0.0
  assert math.isnan(table["remove"]["frame_success"])  # rows scored before frame success existed
  rows = [{**rows[0], "frame_success": 1.0}, {**rows[1], "frame_success": 0.5}]
  assert summarise(rows)["all"]["frame_success"] == 0.75
  rows = [{**rows[0], "named_ok": True, "others_kept": True}, {**rows[1], "named_ok": True, "others_kept": False}]
  assert summarise(rows)["all"]["named_ok"] == 1.0 and summarise(rows)["all"]["others_kept"] == 0.5


def test_pred_of_the_wrong_shape_is_a_clear_error():
  scene, edit = case("recolour", 0)
  with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
    edit_success(np.zeros((16, 64, 64, 3), np.uint8), scene, edit)


def test_the_synthetic_world_imports_neither_jax_nor_the_models():
  code = ("import sys\n"
          "import sama_jax.data.synthetic, sama_jax.data.synthetic_metrics\n"
          "bad = [m for m in sys.modules if m.split('.')[0] == 'jax' or m.startswith('sama_jax.models')]\n"
          "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
