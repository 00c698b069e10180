"""The science-table driver (sama_jax.eval.science): per-seed tables aggregate to
mean ± std, stage-1 variants switch the right batch shares, and the sweep trains each
stage once, reusing finished runs."""

import math
import os

import pytest

from conftest import write_checkpoint
from sama_jax.demo import demo_config
from sama_jax.eval import science


def table(success, psnr):
  row = {"count": 4, "success": success, "frame_success": success, "psnr": psnr, "motion_error": math.nan,
         "flicker": 1.0}
  return {"recolour": row, "all": row}


def test_aggregate_gives_mean_and_spread_over_seeds_ignoring_nan():
  agg = science.aggregate([{"m": table(0.5, 10.0)}, {"m": table(1.0, 20.0)}])
  mean, std, n = agg["m"]["all"]["success"]
  assert (mean, std, n) == (0.75, 0.25, 2)
  assert agg["m"]["recolour"]["psnr"][:2] == (15.0, 5.0)
  assert math.isnan(agg["m"]["all"]["motion_error"][0]) and agg["m"]["all"]["motion_error"][2] == 0
  md = science.markdown(agg)
  assert "| m | 75 ± 25 | 75 ± 25 | 75 ± 25 | 15.0 ± 5.0 | n/a | 1.0 ± 0.0 |" in md


@pytest.mark.parametrize("variant, lead_share, semantic", [("full", 0.1, 0.1), ("no_sa", 0.1, 0.0),
                                                          ("no_ma", 0.0, 0.1)])
def test_stage1_variants_drop_semantic_anchoring_or_motion_alignment(variant, lead_share, semantic):
  demo = demo_config("smoke")
  # The demo's stage 1: pretext clips for a tenth of the run, then image pairs alone.
  assert (demo.stage1.data.stage1.image_edit, demo.stage1.data.stage1.clip) == (1.0, 0.0)
  assert (demo.stage1.data.stage1_lead_in.share, demo.stage1.data.stage1_lead_in.clip) == (0.1, 1.0)
  assert demo.stage1.train.semantic_weight == 0.1
  c = science.stage1_config(demo, variant, seed=7)
  # without SA: the same batches, no semantic loss; without MA: no pretext clips, so image
  # pairs for the whole run
  assert c.data.stage1_lead_in.share == lead_share
  assert tuple(c.train.schedule_restarts) == ((lead_share,) if lead_share else ())  # restart where the lead-in ends
  assert c.data.stage1_lead_in.clip == (0.0 if variant == "no_ma" else 1.0)
  assert (c.data.stage1.image_edit, c.data.stage1.clip) == (1.0, 0.0)
  assert c.train.semantic_weight == semantic
  assert c.train.seed == c.data.seed == 7
  assert demo.stage1.train.semantic_weight == 0.1  # the demo's config is not changed
  assert demo.stage1.data.stage1_lead_in.share == 0.1


def test_the_sweep_trains_each_stage_once_and_scores_every_method(monkeypatch, tmp_path):
  trained, scored, rates = [], [], {}

  def fake_train(config, workdir, init_from=None):
    trained.append((workdir.split("/")[-1], (init_from or "").split("/")[-1], config.train.seed))
    rates[workdir.split("/")[-1]] = config.train.learning_rate
    write_checkpoint(workdir, config.train.total_steps, config)

  monkeypatch.setattr("sama_jax.train.loop.train", fake_train)
  monkeypatch.setattr("sama_jax.edit.load_bundle", lambda folder: folder)

  def fake_evaluate(editor, desc, **world):
    scored.append(desc)
    return [], table(0.5, 12.0), []

  monkeypatch.setattr("sama_jax.eval.world.evaluate", fake_evaluate)
  agg = science.run("smoke", [0, 1], str(tmp_path))
  assert len(trained) == 2 * 7  # per seed: 3 stage-1 variants, 4 stage-2 runs
  assert ("stage2_no_sa", "stage1_no_sa", 1) in trained and ("stage2_scratch", "", 0) in trained
  # stage 2 fine-tunes at its own (lower) rate; from scratch it trains at stage 1's
  demo = demo_config("smoke")
  assert demo.stage2.train.learning_rate < demo.stage1.train.learning_rate
  assert rates["stage2_full"] == demo.stage2.train.learning_rate
  assert rates["stage2_scratch"] == rates["stage1_full"] == demo.stage1.train.learning_rate
  assert len(scored) == 1 + 2 * len(science.METHODS)  # identity once, every method per seed
  assert set(agg) == {"identity (output = source)", *science.METHODS}
  assert (tmp_path / "science.md").read_text().count("±") > 10


def test_sized_overrides_the_steps_and_clips_and_refuses_nonsense():
  demo = science.sized(demo_config("default"), steps=(300, 120), clips=16)
  assert (demo.stage1.train.total_steps, demo.stage2.train.total_steps) == (300, 120)
  assert (demo.stage1.train.warmup_steps, demo.stage2.run.checkpoint_every) == (30, 60)
  assert demo.eval.num_clips == 16
  untouched = science.sized(demo_config("default"))
  assert untouched.stage1.train.total_steps == demo_config("default").stage1.train.total_steps
  with pytest.raises(ValueError, match="--steps"):
    science.sized(demo_config("default"), steps=(0, 10))
  with pytest.raises(ValueError, match="--clips"):
    science.sized(demo_config("default"), clips=0)


def test_a_run_that_stops_early_stops_the_sweep_instead_of_being_scored(monkeypatch, tmp_path):
  def preempted(config, workdir, init_from=None):  # saves a middle checkpoint and returns
    os.makedirs(os.path.join(workdir, "checkpoints", str(config.train.total_steps // 2)))

  monkeypatch.setattr("sama_jax.train.loop.train", preempted)
  scored = []
  monkeypatch.setattr("sama_jax.eval.world.evaluate", lambda editor, desc, **w: (scored.append(desc), table(0.5, 12.0), []))
  monkeypatch.setattr("sama_jax.edit.load_bundle", lambda folder: folder)
  with pytest.raises(SystemExit, match="stopped before step 12"):
    science.run("smoke", [0], str(tmp_path))
  assert scored == ["identity"]  # the baseline only; no half-trained model was scored



def test_the_demo_holds_pairs_out_of_video_edits_and_the_strict_split_out_of_everything():
  from sama_jax.data.config import world_options
  design, strict = demo_config("default"), demo_config("default", strict_split=True)
  for stage in ("stage1", "stage2"):
    assert world_options(design[stage].data)["held_out_from"] == ("video_edit",)
    assert world_options(strict[stage].data)["held_out_from"] == ("image_edit", "clip", "video_edit")
