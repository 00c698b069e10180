"""Training from precomputed encodings (data.*.format = "precomputed"): the pipeline
yields the stored arrays, and a stage-2 run on them takes the same steps as a run that
encodes the same world records live (anchor "first" so the semantic anchor is the same
frame in both; no text dropout, whose draws differ only in how they are applied)."""

import json
import os

import numpy as np
import pytest

from conftest import REPO
from sama_jax import precompute as P
from sama_jax.config import load_config
from sama_jax.data.config import data_config
from sama_jax.data.pipeline import stage_pipeline
from sama_jax.data.precomputed import precomputed_source
from sama_jax.encoders import build_encoders
from sama_jax.train.loop import drop_text, train

STAGE2 = os.path.join(REPO, "configs", "stage2_tiny.py")
RECORDS = 8


def config(**extra):
  c = load_config(STAGE2)
  c.data.resolution, c.data.num_frames, c.data.anchor = (16, 16), 5, "first"
  c.data.stage2.image_edit = 0.0
  c.data.video_edits.world_size = RECORDS
  c.data.video_batch_size = 4
  c.train.text_dropout = 0.0
  c.train.total_steps = 3
  c.run.progress_bar, c.run.log_every, c.run.async_checkpoints = False, 1, False
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, -1
  # A narrow DiT: these tests compare data paths, not what the world's width can learn.
  c.model.dim, c.model.ffn_dim, c.model.num_heads, c.model.num_layers = 64, 128, 2, 2
  c.model.freq_dim, c.model.semantic_hidden_dim = 32, 32
  for key, value in extra.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture(scope="module")
def precomputed(tmp_path_factory):
  out = tmp_path_factory.mktemp("precomputed")
  c = config()
  P.precompute(c, "video_edit", str(out), encoders=build_encoders(c.encoders), progress=False, shard_size=4)
  return str(out)


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["loss"] for line in f]


def test_the_pipeline_yields_the_stored_encodings(precomputed):
  c = config(**{"data.video_edits.format": "precomputed", "data.video_edits.path": precomputed})
  batch = next(iter(stage_pipeline(c.data, "stage2", 0, 1)))
  assert set(batch) >= {"latents", "text", "source", "semantic", "task"} and "target" not in batch
  stored = {precomputed_source(precomputed)[i]["id"]: precomputed_source(precomputed)[i] for i in range(RECORDS)}
  for i, example_id in enumerate(batch["id"]):
    for key in ("latents", "text", "source", "semantic"):
      np.testing.assert_array_equal(batch[key][i], stored[str(example_id)][key])


def test_training_on_precomputed_records_matches_live_encoding(precomputed, tmp_path):
  train(config(), str(tmp_path / "live"))
  train(config(**{"data.video_edits.format": "precomputed", "data.video_edits.path": precomputed}),
        str(tmp_path / "cached"))
  live, cached = losses(tmp_path / "live"), losses(tmp_path / "cached")
  assert len(live) == len(cached) == 3
  np.testing.assert_allclose(cached, live, rtol=1e-4)


def test_text_dropout_puts_the_negative_embedding_in_dropped_rows():
  text = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2) + 1
  raw = {"instruction": np.array(list("abcd"), object), "text": text}
  negative = np.full((3, 2), -1.0, np.float32)
  out = drop_text(raw, np.random.default_rng(0), 0.5, "neg", negative_text=negative)
  dropped = out["instruction"] == "neg"
  assert 0 < dropped.sum() < 4
  np.testing.assert_array_equal(out["text"][dropped], np.broadcast_to(negative, (dropped.sum(), 3, 2)))
  np.testing.assert_array_equal(out["text"][~dropped], text[~dropped])
  with pytest.raises(ValueError, match="negative prompt's embeddings"):
    drop_text(raw, np.random.default_rng(0), 0.5, "neg")


def test_clips_cannot_be_precomputed_encodings():
  with pytest.raises(ValueError, match="clips are corrupted afresh"):
    data_config(clips={"format": "precomputed", "path": "/x"})


def test_source_dropout_drops_the_whole_batch_source_at_its_rate():
  from sama_jax.train.loop import drop_source
  raw = {"source": np.zeros((4, 5)), "target": np.ones((4, 5))}
  assert drop_source(raw, np.random.default_rng(0), 0.0) is raw
  kept = [("source" in drop_source(raw, np.random.default_rng([0, step, 1]), 0.3)) for step in range(2000)]
  assert abs(1 - np.mean(kept) - 0.3) < 0.04
  dropped = next(drop_source(raw, np.random.default_rng([0, s, 1]), 0.3) for s in range(2000)
                 if "source" not in drop_source(raw, np.random.default_rng([0, s, 1]), 0.3))
  assert set(dropped) == {"target"}
  assert drop_source({"target": raw["target"]}, np.random.default_rng(0), 1.0) == {"target": raw["target"]}


@pytest.mark.slow  # a 4-step training run (~55 s); drop_source itself is tested above
def test_training_with_source_dropout_runs_both_branches(tmp_path, monkeypatch):
  import sama_jax.train.loop as loop
  seen = []
  real = loop.model_batch
  monkeypatch.setattr(loop, "model_batch", lambda raw, *a: seen.append("source" in raw) or real(raw, *a))
  train(config(**{"train.source_dropout": 0.5, "train.total_steps": 4}), str(tmp_path / "run"))
  assert True in seen and False in seen
  assert all(np.isfinite(losses(tmp_path / "run")))
