"""The evaluation splits of the synthetic world (sama_jax/eval/world.py)."""
import numpy as np
import pytest

from sama_jax.data.synthetic_edits import HELD_OUT, edited_pairs
from sama_jax.data.synthetic_grammar import REFERENCES
from sama_jax.eval.world import by_reference, eval_cases, evaluate, identity, markdown_table

SHAPE = dict(frames=5, height=32, width=32)


def test_seen_split_never_shows_a_held_out_pair_and_differs_from_held_out():
  seen = list(eval_cases(12, 1000, **SHAPE, split="seen"))
  for scene, edit, truth in seen:
    assert not {(o.shape, o.colour) for o in scene.objects} & HELD_OUT
    assert not edited_pairs(scene, edit) & HELD_OUT
    assert truth.frames.shape == (5, 32, 32, 3)
  held = list(eval_cases(12, 1000, **SHAPE))
  # Every held-out clip edits a held-out pair, unless its instruction names no object in the scene.
  assert sum(bool(edited_pairs(s, e) & HELD_OUT) for s, e, _ in held) >= 8
  assert [e.instruction for _, e, _ in seen] != [e.instruction for _, e, _ in held]


def test_splits_are_deterministic_and_scored_alike():
  a = [e.instruction for _, e, _ in eval_cases(4, 7, **SHAPE, split="seen")]
  b = [e.instruction for _, e, _ in eval_cases(4, 7, **SHAPE, split="seen")]
  assert a == b
  rows, table, _ = evaluate(identity, num_clips=4, seed=7, **SHAPE, split="seen", desc="id")
  assert table["all"]["count"] == 4 and [r["instruction"] for r in rows] == a
  # The identity makes none of the training distribution's edits (they all change something).
  assert table["all"]["success"] == 0.0 and np.isclose(table["all"]["flicker"], 0.0)


def test_unknown_split_is_refused():
  with pytest.raises(ValueError, match="split='train'"):
    next(eval_cases(1, 0, **SHAPE, split="train"))


def test_rows_carry_their_reference_kind_and_split_by_it():
  rows, table, _ = evaluate(identity, num_clips=12, seed=1000, **SHAPE, desc="id")
  assert all(r["reference"] in REFERENCES + (None,) for r in rows)
  split = by_reference(rows)
  counted = {ref: sum(r["reference"] == ref for r in rows) for ref in REFERENCES}
  assert split and {k.removeprefix("reference: ") for k in split} == {ref for ref, n in counted.items() if n}
  for key, sub in split.items():
    assert sub["all"]["count"] == counted[key.removeprefix("reference: ")]
  assert sum(sub["all"]["count"] for sub in split.values()) == sum(r["reference"] is not None for r in rows)


def test_tables_can_split_each_failure_into_its_two_halves():
  """The identity keeps everything and edits nothing: others kept 100%, named ok only for
  the unmatched instructions, which it answers correctly."""
  rows, table, _ = evaluate(identity, num_clips=12, seed=1000, **SHAPE, desc="id")
  unmatched = np.mean([r["kind"] == "unmatched" for r in rows])
  assert table["all"]["others_kept"] == 1.0 and np.isclose(table["all"]["named_ok"], unmatched)
  plain, split = markdown_table({"id": table}), markdown_table({"id": table}, halves=True)
  assert "named ok" not in plain and "| named ok | others kept |" in split
  assert f"| {100 * unmatched:.0f}% | 100% |" in split.splitlines()[-1]
