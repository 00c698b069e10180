"""Dataset sources and the two stages' grain pipelines (sama_jax.data.sources / pipeline):
manifests, bad-input accounting, the batch contract, the task mix, per-process shards,
exact resume, the synthetic world and ArrayRecord shards. Tiny clips (32x32, 5-9
frames) written here with PyAV; the real clips of ../shared/testdata/videos when present."""

import csv
import json
import logging
import os

import av
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

from conftest import REPO
from sama_jax.data.config import data_config
from sama_jax.data.examples import PRETEXT_TASK_IDS
from sama_jax.data.pipeline import stage1_pipeline, stage2_pipeline
from sama_jax.data.pretext import subsample_indices
from sama_jax.data.records import decode_record, encode_record
from sama_jax.data.skips import REASONS, SkipFractionExceeded, Skipped, skip_stats
from sama_jax.data.sources import ArrayRecordSource, ManifestSource, VideoFolderSource, WorldItemSource
from sama_jax.data.video import write_video
from sama_jax.train.config import TASK_NAMES

VIDEOS = os.path.join(REPO, "..", "shared", "testdata", "videos")
REAL_CLIPS = ("add-02-source.mp4", "highlight-07-source.mp4", "highlight-09-source.mp4")
TASK = {name: i for i, name in enumerate(TASK_NAMES)}


def moving_clip(frames=9, height=32, width=32, seed=0) -> np.ndarray:
  """A smooth gradient drifting by 3 pixels a frame: [T, H, W, 3] uint8."""
  yy, xx = np.mgrid[0:height, 0:width]
  base = np.random.default_rng(seed).integers(0, 120)
  return np.stack([np.stack([xx * 4 + 3 * t + base, yy * 4 + base, (xx + yy) * 2 + 2 * t], -1)
                   for t in range(frames)]).clip(0, 255).astype(np.uint8)


def video(folder, name, frames=9, height=32, width=32, seed=0) -> str:
  path = os.path.join(folder, name)
  write_video(path, moving_clip(frames, height, width, seed), fps=8)
  return path


def encode_pyav(path, frames, pix_fmt="yuv420p", rotation=None) -> str:
  """For what write_video never writes: gray pixels, a display-rotation matrix."""
  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
    if rotation is not None:
      stream.set_display_rotation(rotation)
    for image in frames:
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., 0] if pix_fmt == "gray" else image),
                                         format="gray" if pix_fmt == "gray" else "rgb24")
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  return str(path)


def write_csv(path, rows, columns) -> str:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    writer.writerows(rows)
  return str(path)


def write_jsonl(path, lines) -> str:
  with open(path, "w") as f:
    f.writelines((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
  return str(path)


def tiny(**overrides):
  """Small, quick settings; sources default to the synthetic world."""
  base = dict(resolution=(32, 32), num_frames=5, image_batch_size=2, video_batch_size=2, read_threads=1,
              read_buffer_size=2)
  base.update(overrides)
  return data_config(**base)


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def drain(iterator):
  return list(iterator)


def assert_same_batches(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


# ---------------------------------------------------------------------------------------
# Manifests and sources.


def test_csv_json_and_jsonl_manifests_give_the_same_records(tmp_path):
  rows = [{"video": "a.mp4", "source_video": "sa.mp4", "prompt": "make it red", "width": "64", "height": "32"},
          {"video": "sub/b.mp4", "source_video": "/abs/sb.mp4", "prompt": "remove the cat"}]
  columns = ["video", "source_video", "prompt", "width", "height"]
  write_csv(tmp_path / "m.csv", [[r.get(c, "") for c in columns] for r in rows], columns)
  write_jsonl(tmp_path / "m.jsonl", rows)
  (tmp_path / "m.json").write_text(json.dumps(rows))
  sources = [ManifestSource(str(tmp_path / f"m.{ext}"), "video_edit") for ext in ("csv", "jsonl", "json")]
  for source in sources:
    assert len(source) == 2
    assert source[0]["target"] == str(tmp_path / "a.mp4") and source[0]["source"] == str(tmp_path / "sa.mp4")
    assert source[0]["text"] == "make it red" and source[0]["size"] == (64, 32)
    assert source[1]["target"] == str(tmp_path / "sub" / "b.mp4") and source[1]["source"] == "/abs/sb.mp4"
  base = ManifestSource(str(tmp_path / "m.csv"), "video_edit", base_path="/data")
  assert base[0]["target"] == "/data/a.mp4"


def test_a_missing_or_unusable_manifest_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    ManifestSource(str(tmp_path / "nope.csv"), "clip")
  with pytest.raises(ValueError, match="extension"):
    ManifestSource(str(tmp_path / "m.txt"), "clip")
  (tmp_path / "m.json").write_text('{"video": "a.mp4"}')
  with pytest.raises(ValueError, match="list of objects"):
    ManifestSource(str(tmp_path / "m.json"), "clip")


def test_video_folder_source_reads_sidecar_captions(tmp_path):
  video(tmp_path, "b.mp4")
  video(tmp_path, "a.mp4")
  (tmp_path / "a.txt").write_text("a red ball bounces\n")
  source = VideoFolderSource(str(tmp_path))
  assert [os.path.basename(source[i]["target"]) for i in range(len(source))] == ["a.mp4", "b.mp4"]
  assert source[0]["text"] == "a red ball bounces" and source[1]["text"] == ""


# ---------------------------------------------------------------------------------------
# Bad input: skipped, counted with its reason, logged with its path.


@pytest.fixture(scope="module")
def edit_manifest(tmp_path_factory):
  """A video-edit CSV: 6 good rows (incl. grayscale and rotated sources) and one row per
  bad-input case. num_frames must be 9 for the short/mismatch rows to mean what they say."""
  d = tmp_path_factory.mktemp("edits")
  good = []
  for i in range(4):
    good.append((video(d, f"t{i}.mp4", seed=i), video(d, f"s{i}.mp4", seed=10 + i), f"good edit {i}"))
  gray = encode_pyav(d / "gray.mp4", moving_clip(9), pix_fmt="gray")
  good.append((video(d, "t_gray.mp4"), gray, "good edit gray"))
  rotated = encode_pyav(d / "rot.mp4", moving_clip(9, height=32, width=48), rotation=90)
  good.append((video(d, "t_rot.mp4"), rotated, "good edit rotated"))
  (d / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
  (d / "empty.mp4").write_bytes(b"")
  bad = {
      "corrupt": (str(d / "t0.mp4"), str(d / "corrupt.mp4"), "bad corrupt"),
      "empty_file": (str(d / "empty.mp4"), str(d / "s0.mp4"), "bad empty"),
      "too_short": (video(d, "t_short.mp4", frames=3), video(d, "s_short.mp4", frames=3), "bad short"),
      "shorter_than_num_frames": (video(d, "t7.mp4", frames=7), video(d, "s7.mp4", frames=7), "bad 7 frames"),
      "missing_file": (str(d / "t0.mp4"), str(d / "nowhere.mp4"), "bad missing"),
      "malformed_row": (str(d / "t0.mp4"), "", "bad malformed"),
      "frame_count_mismatch": (str(d / "t7.mp4"), str(d / "s0.mp4"), "bad mismatch"),
  }
  rows = good + list(bad.values())
  path = write_csv(d / "edits.csv", [[os.path.basename(t) if t else "", os.path.basename(s) if s else "", p]
                                     for t, s, p in rows], ["video", "source_video", "prompt"])
  return path, [p for _, _, p in good], bad


def test_each_bad_input_is_skipped_and_counted_with_its_reason_and_path(edit_manifest, caplog):
  path, good_prompts, bad = edit_manifest
  config = tiny(num_frames=9, video_batch_size=1, num_epochs=1, max_skip_fraction=1.0,
                video_edits={"format": "manifest", "path": path})
  iterator = iter(stage2_pipeline(config, 0, 1))
  with caplog.at_level(logging.WARNING, logger="sama_jax.data.skips"):
    batches = drain(iterator)
  assert sorted(str(b["instruction"][0]) for b in batches) == sorted(good_prompts)  # gray, rotated included
  stats = skip_stats(iterator)
  assert stats.seen == len(good_prompts) + len(bad)
  assert stats.skipped == {reason: int(reason in bad) for reason in REASONS}
  assert "nowhere.mp4" in stats.examples["missing_file"][0] and "corrupt.mp4" in stats.examples["corrupt"][0]
  logged = caplog.text
  for reason in bad:
    assert reason in logged
  assert "empty.mp4" in logged and "nowhere.mp4" in logged


def test_image_pair_manifest_skips_corrupt_missing_and_unparseable_rows(tmp_path):
  for i in range(3):
    Image.fromarray(moving_clip(1, seed=i)[0]).save(tmp_path / f"t{i}.png")
    Image.fromarray(moving_clip(1, seed=5 + i)[0]).save(tmp_path / f"s{i}.png")
  (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
  path = write_jsonl(tmp_path / "images.jsonl", [
      *({"image": f"t{i}.png", "source_image": f"s{i}.png", "prompt": f"edit {i}"} for i in range(3)),
      {"image": "bad.png", "source_image": "s0.png", "prompt": "corrupt"},
      {"image": "gone.png", "source_image": "s0.png", "prompt": "missing"},
      "{not json",
      ["a", "list"],
  ])
  config = tiny(image_batch_size=1, num_epochs=1, max_skip_fraction=1.0,
                image_edits={"format": "manifest", "path": path}, stage1={"image_edit": 1.0, "clip": 0.0})
  iterator = iter(stage1_pipeline(config, 0, 1))
  batches = drain(iterator)
  assert sorted(str(b["instruction"][0]) for b in batches) == ["edit 0", "edit 1", "edit 2"]
  assert all(b["target"].shape == (1, 1, 32, 32, 3) and b["task"][0] == TASK["image_edit"] for b in batches)
  stats = skip_stats(iterator)
  assert (stats.skipped["corrupt"], stats.skipped["missing_file"], stats.skipped["malformed_row"]) == (1, 1, 2)


def test_too_many_skips_stop_the_run_with_a_summary(tmp_path):
  good = video(tmp_path, "good.mp4")
  rows = [[os.path.basename(good), "a good clip"]] + [[f"missing{i}.mp4", f"clip {i}"] for i in range(5)]
  path = write_csv(tmp_path / "clips.csv", rows, ["video", "prompt"])
  config = tiny(video_batch_size=1, max_skip_fraction=0.3, skip_check_after=4,
                clips={"format": "manifest", "path": path}, stage1={"image_edit": 0.0, "clip": 1.0},
                pretext={"mix": {"none": 1.0, "cube": 0.0, "speed": 0.0, "tube": 0.0}})
  with pytest.raises(SkipFractionExceeded, match=r"missing_file: \d+ \(e\.g\. .*missing\d\.mp4") as error:
    take(iter(stage1_pipeline(config, 0, 1)), 10)
  assert "max_skip_fraction=0.3" in str(error.value) and "stage1/clip/none" in str(error.value)


def test_short_clips_can_be_padded_with_their_last_frame(tmp_path):
  path = write_csv(tmp_path / "c.csv", [[os.path.basename(video(tmp_path, "c7.mp4", frames=7)), "seven"]],
                   ["video", "prompt"])
  config = tiny(num_frames=9, short_clips="pad", video_batch_size=1, num_epochs=1,
                clips={"format": "manifest", "path": path}, stage1={"image_edit": 0.0, "clip": 1.0},
                pretext={"mix": {"none": 1.0, "cube": 0.0, "speed": 0.0, "tube": 0.0}})
  (batch,) = drain(iter(stage1_pipeline(config, 0, 1)))
  target = batch["target"][0]
  assert target.shape == (9, 32, 32, 3) and all(np.array_equal(target[i], target[6]) for i in (7, 8))


# ---------------------------------------------------------------------------------------
# The batch contract and the task mix.


def test_stage1_batches_follow_the_contract():
  config = tiny(num_frames=9, image_batch_size=4, video_batch_size=2)
  batches = take(iter(stage1_pipeline(config, 0, 1)), 24)
  seen = set()
  for b in batches:
    task = int(b["task"][0])
    seen.add(TASK_NAMES[task])
    assert (b["task"] == task).all() and b["task"].dtype == np.int32
    assert b["instruction"].dtype == object and all(isinstance(s, str) and s for s in b["instruction"])
    image = TASK_NAMES[task] == "image_edit"
    size, frames = (4, 1) if image else (2, 9)
    assert b["target"].shape == (size, frames, 32, 32, 3) and b["target"].dtype == np.uint8
    assert b["anchor"].shape == (size, 32, 32, 3) and b["anchor"].dtype == np.uint8
    for target, anchor in zip(b["target"], b["anchor"]):  # the anchor is a frame of the target
      assert any(np.array_equal(anchor, frame) for frame in target)
    if TASK_NAMES[task] == "t2v":
      assert "source" not in b
    else:
      source_frames = {"speed": len(subsample_indices(9, 2.0))}.get(TASK_NAMES[task], frames)
      assert b["source"].shape == (size, source_frames, 32, 32, 3) and b["source"].dtype == np.uint8
    if TASK_NAMES[task] in ("cube", "speed", "tube"):
      assert all(s.startswith("[") for s in b["instruction"])
  assert seen == {"image_edit", "t2v", "cube", "speed", "tube"}


def test_stage1_task_mix_matches_the_weights_per_batch():
  config = tiny(image_batch_size=1, video_batch_size=1, stage1={"image_edit": 2.0, "clip": 3.0})
  counts = np.bincount([int(b["task"][0]) for b in take(iter(stage1_pipeline(config, 0, 1)), 400)],
                       minlength=len(TASK_NAMES))
  expected = {"image_edit": 0.4, "t2v": 0.06, "cube": 0.12, "speed": 0.18, "tube": 0.24}  # 2:3, then 1:2:3:4
  for name, share in expected.items():
    assert abs(counts[TASK[name]] - 400 * share) <= 3, (name, counts)
  assert counts[TASK["video_edit"]] == 0


def test_stage2_mixes_world_video_edits_with_image_pairs_and_pretext_clips():
  config = tiny(stage2={"video_edit": 2.0, "image_edit": 1.0, "clip": 1.0}, video_edit_prefix="[Video edit] ")
  batches = take(iter(stage2_pipeline(config, 0, 1)), 40)
  tasks = [TASK_NAMES[int(b["task"][0])] for b in batches]
  assert tasks.count("video_edit") == 20 and tasks.count("image_edit") == 10
  assert sum(t in PRETEXT_TASK_IDS.values() for t in tasks) == 10
  for b in batches:
    if TASK_NAMES[int(b["task"][0])] == "video_edit":
      assert b["source"].shape == b["target"].shape == (2, 5, 32, 32, 3)
      assert all(s.startswith("[Video edit] ") for s in b["instruction"])


def test_world_block_sets_the_edit_kinds_and_object_sizes_of_every_world_source():
  from sama_jax.data.config import world_options
  from sama_jax.data.synthetic_edits import EDIT_KINDS
  from sama_jax.data.synthetic import world_case
  from sama_jax.data.synthetic_grammar import parse_instruction
  config = tiny(stage2={"video_edit": 1.0, "image_edit": 1.0, "clip": 0.0},
                world={"edit_kinds": ("remove", "background"), "radius": (0.2, 0.25), "max_objects": 1})
  batches = take(iter(stage2_pipeline(config, 0, 1)), 8)
  kinds = {parse_instruction(text)["kind"] for b in batches for text in b["instruction"]}
  assert kinds == {"remove", "background"}
  # The scenes the sources draw from: radii in the configured range, one object each.
  options = world_options(config)
  for index in range(20):
    scene, _ = world_case("video_edit", index, 0, **options)
    assert len(scene.objects) == 1 and all(0.2 * 32 <= o.radius <= 0.25 * 32 for o in scene.objects)
  # A config saved before the block existed reads as the world's defaults.
  old = {"num_frames": 5, "resolution": [32, 32]}
  assert world_options(old)["kinds"] == world_options(tiny())["kinds"] == EDIT_KINDS
  assert world_options(old)["sampling"] == world_options(tiny())["sampling"]
  # ... and before the split was configurable every training kind held the pairs out.
  assert world_options(old)["held_out_from"] == ("image_edit", "clip", "video_edit")
  assert world_options(tiny())["held_out_from"] == ("video_edit",)


@pytest.mark.parametrize("held_out_from", [("video_edit",), ("image_edit", "clip", "video_edit")])
def test_the_world_split_reaches_the_pipelines_sources(held_out_from):
  from sama_jax.data.pipeline import configured_source
  from sama_jax.data.synthetic_edits import HELD_OUT
  from sama_jax.data.synthetic_grammar import parse_instruction
  config = tiny(world={"edit_kinds": ("recolour",), "held_out_from": held_out_from})

  def named_pairs(kind):  # the (shape, colour) pairs recolour instructions name, before and after
    source = configured_source(config, kind)
    parsed = [parse_instruction(source[i]["text"]) for i in range(300)]
    pairs = {(p["ref_shape"], c) for p in parsed for c in (p["ref_colour"], p["colour"]) if p["ref_shape"] and c}
    return pairs & HELD_OUT

  assert bool(named_pairs("image_edit")) == ("image_edit" not in held_out_from)
  assert not named_pairs("video_edit")


def test_resuming_on_another_world_is_a_clear_error():
  from sama_jax.data.config import check_same_world
  saved = json.loads(json.dumps(tiny().to_dict()))  # as a checkpoint stores it
  check_same_world(saved, tiny())
  with pytest.raises(ValueError, match="held_out_from"):
    check_same_world(saved, tiny(world={"held_out_from": ("image_edit", "clip", "video_edit")}))
  del saved["world"]["held_out_from"]  # a run saved before the split was configurable held all out
  with pytest.raises(ValueError, match="another synthetic world"):
    check_same_world(saved, tiny())
  check_same_world(saved, tiny(world={"held_out_from": ("image_edit", "clip", "video_edit")}))
  real = tiny(**{b: {"format": "none"} for b in ("image_edits", "clips", "video_edits")})
  check_same_world(saved, real)  # no world source: nothing to compare


def test_pretext_and_anchor_draws_are_deterministic_given_the_seed():
  def first_batches(seed):
    return take(iter(stage1_pipeline(tiny(seed=seed, anchor="uniform"), 0, 1)), 8)
  assert_same_batches(first_batches(3), first_batches(3))
  other = first_batches(4)
  assert any(not np.array_equal(a["target"], b["target"]) for a, b in zip(first_batches(3), other))


# ---------------------------------------------------------------------------------------
# Shards and resume.


@pytest.fixture(scope="module")
def clip_manifest(tmp_path_factory):
  d = tmp_path_factory.mktemp("clips")
  rows = [[os.path.basename(video(d, f"c{i}.mp4", frames=5, seed=i)), f"caption {i}"] for i in range(8)]
  return write_csv(d / "clips.csv", rows, ["video", "prompt"]), [r[1] for r in rows]


def caption_only(**overrides):
  return dict(stage1={"image_edit": 0.0, "clip": 1.0}, pretext={"mix": {"none": 1.0, "cube": 0.0,
                                                                         "speed": 0.0, "tube": 0.0}}, **overrides)


def test_process_shards_are_disjoint_and_cover_the_data(clip_manifest):
  path, captions = clip_manifest
  config = tiny(video_batch_size=2, num_epochs=1, **caption_only(clips={"format": "manifest", "path": path}))
  shards = [[str(s) for b in drain(iter(stage1_pipeline(config, p, 2))) for s in b["instruction"]]
            for p in range(2)]
  assert all(len(shard) == 4 for shard in shards)  # per-process batches of 1
  assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == sorted(captions)


def test_resume_from_iterator_state_continues_the_exact_data_order():
  dataset = stage1_pipeline(tiny(), 0, 1)
  iterator = iter(dataset)
  take(iterator, 5)
  state = iterator.get_state()
  expected = take(iterator, 5)
  resumed = iter(stage1_pipeline(tiny(), 0, 1))
  resumed.set_state(state)
  assert_same_batches(take(resumed, 5), expected)


def test_resume_with_a_worker_process_restores_order_and_skip_counts(tmp_path, clip_manifest):
  path, _ = clip_manifest
  with_missing = tmp_path / "clips.csv"
  with_missing.write_text(open(path).read() + "missing.mp4,a caption for nothing\n")
  config = tiny(video_batch_size=1, num_workers=1, **caption_only(
      clips={"format": "manifest", "path": str(with_missing), "base_path": os.path.dirname(path)}))
  iterator = iter(stage1_pipeline(config, 0, 1))
  try:
    take(iterator, 12)  # more than one pass over the 9 records
    state = iterator.get_state()
    expected = take(iterator, 4)
    assert skip_stats(state).skipped["missing_file"] >= 1  # counted in the worker, read here
  finally:
    iterator.close()
  resumed = iter(stage1_pipeline(config, 0, 1))
  try:
    resumed.set_state(state)
    assert_same_batches(take(resumed, 4), expected)
  finally:
    resumed.close()


# ---------------------------------------------------------------------------------------
# ArrayRecord shards and the synthetic world as sources.


def test_records_round_trip_exactly():
  record = {"target": moving_clip(5), "source": np.zeros((1, 4, 4, 3), np.uint8), "text": "make it blue",
            "id": "x/7", "score": np.float32(8.5), "count": 3}
  back = decode_record(encode_record(record))
  assert sorted(back) == sorted(record) and back["text"] == "make it blue" and back["count"] == 3
  np.testing.assert_array_equal(back["target"], record["target"])
  assert back["target"].dtype == np.uint8 and back["score"] == np.float32(8.5)
  assert decode_record(encode_record(record, compress=True))["id"] == "x/7"
  with pytest.raises(ValueError, match="dtype object"):
    encode_record({"bad": np.array([{}], dtype=object)})
  with pytest.raises(ValueError, match="not an encoded record"):
    decode_record(b"garbage")


def test_array_record_shards_feed_the_pipeline(tmp_path):
  world = WorldItemSource("video_edit", 6, options=(("frames", 5), ("height", 32), ("width", 32)))
  paths = []
  for shard in range(2):
    paths.append(str(tmp_path / f"edits-{shard}.array_record"))
    writer = ArrayRecordWriter(paths[-1], "group_size:1")
    for i in range(shard * 3, shard * 3 + 3):
      writer.write(encode_record(world[i]))
    if shard == 1:
      writer.write(b"not a record")
    writer.close()
  source = ArrayRecordSource(str(tmp_path / "edits-*.array_record"))
  assert len(source) == 7
  for i in range(6):
    np.testing.assert_array_equal(source[i]["target"], world[i]["target"])
    assert source[i]["text"] == world[i]["text"]
  assert isinstance(source[6], Skipped) and source[6].reason == "bad_record"
  config = tiny(video_batch_size=1, num_epochs=1, max_skip_fraction=1.0,
                video_edits={"format": "array_record", "path": ",".join(paths)})
  iterator = iter(stage2_pipeline(config, 0, 1))
  batches = drain(iterator)
  assert sorted(str(b["instruction"][0]) for b in batches) == sorted(world[i]["text"] for i in range(6))
  assert skip_stats(iterator).skipped["bad_record"] == 1


def test_world_sources_render_the_configured_grid():
  config = tiny(num_frames=9, resolution=(48, 32), image_batch_size=2, video_batch_size=2)
  for batch in take(iter(stage1_pipeline(config)), 6):  # process placement from jax: 0 of 1
    assert batch["target"].shape[2:] == (32, 48, 3)


# ---------------------------------------------------------------------------------------
# Real clips and multi-aspect buckets.


def test_real_clips_are_bucketed_by_aspect_ratio(tmp_path):
  if not os.path.isdir(VIDEOS):
    pytest.skip(f"real test clips folder {os.path.normpath(VIDEOS)} is absent: the shared "
                "testdata/videos folder must sit beside the repository")
  rows = [[os.path.join(VIDEOS, name), f"real {name}"] for name in REAL_CLIPS]
  rows.append([video(tmp_path, "portrait.mp4", frames=9, height=64, width=32), "portrait"])
  path = write_csv(tmp_path / "real.csv", rows, ["video", "prompt"])
  config = tiny(num_frames=9, video_batch_size=1, buckets=((64, 32), (32, 32), (32, 64)),
                clips={"format": "manifest", "path": path}, stage1={"image_edit": 0.0, "clip": 1.0})
  iterator = iter(stage1_pipeline(config, 0, 1))
  shapes = {}
  for batch in take(iterator, 24):
    shapes.setdefault(batch["target"].shape[2:4], set()).add(str(batch["instruction"][0]).split("] ")[-1])
  assert shapes[(32, 64)] == {f"real {n}" for n in REAL_CLIPS}  # 2:1 and 1.73:1 -> the 64x32 bucket
  assert shapes[(64, 32)] == {"portrait"} and set(shapes) == {(32, 64), (64, 32)}
  assert skip_stats(iterator).total_skipped == 0


# ---------------------------------------------------------------------------------------
# Configuration errors.


@pytest.mark.parametrize("overrides,message", [
    ({"num_frames": 8}, "num_frames=8; expected 4k\\+1"),
    ({"anchor": "last"}, "anchor='last'"),
    ({"stage1": {"image_edit": -1.0}}, "stage1"),
    ({"clips": {"format": "manifest"}}, "needs data.clips.path"),
    ({"short_clips": "loop"}, "short_clips='loop'"),
    ({"world": {"edit_kinds": ("recolour", "paint")}}, "world.edit_kinds"),
    ({"world": {"edit_kinds": ()}}, "world.edit_kinds"),
    ({"world": {"radius": (0.2, 0.1)}}, "world.radius"),
    ({"world": {"max_objects": 0}}, "world.max_objects"),
    ({"world": {"held_out_from": ("eval_edit",)}}, "world.held_out_from"),
])
def test_bad_config_is_a_clear_error(overrides, message):
  with pytest.raises(ValueError, match=message):
    data_config(**overrides)


def test_batch_sizes_must_split_over_processes():
  with pytest.raises(ValueError, match="video_batch_size=2 does not split evenly over 3 processes"):
    stage1_pipeline(tiny(image_batch_size=3), 0, 3)


def test_process_slices_assemble_the_single_process_batches():
  """Every process reads its slice of the same global batch, so multi-host training sees
  exactly the batches one process would (same examples, same order, same draws)."""
  from sama_jax.data.config import data_config
  from sama_jax.data.pipeline import stage_pipeline
  config = data_config(resolution=(16, 16), num_frames=5, image_batch_size=4, video_batch_size=4)
  single = iter(stage_pipeline(config, "stage1", 0, 1))
  halves = [iter(stage_pipeline(config, "stage1", p, 2)) for p in range(2)]
  for _ in range(6):
    whole, parts = next(single), [next(h) for h in halves]
    assert whole.keys() == parts[0].keys()
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


# ---------------------------------------------------------------------------------------
# Lead-ins: a curriculum over the run's steps (data.<stage>_lead_in, data/phases.py).


def tasks_of(batches) -> list[str]:
  return [TASK_NAMES[int(b["task"][0])] for b in batches]


def test_lead_in_draws_its_share_of_the_run_by_its_own_shares_then_the_stages():
  config = tiny(stage1={"image_edit": 1.0, "clip": 0.0}, stage1_lead_in={"share": 0.25, "image_edit": 1.0, "clip": 3.0},
                pretext={"mix": {"none": 0.0, "cube": 1.0, "speed": 0.0, "tube": 0.0}})
  tasks = tasks_of(take(iter(stage1_pipeline(config, 0, 1, total_steps=40)), 30))
  assert tasks[:10].count("cube") == 7 and tasks[:10].count("image_edit") == 3  # 10 = 0.25 · 40
  assert tasks[:4] == ["cube", "image_edit", "cube", "cube"]  # each part kept at its share as it goes
  assert tasks[10:] == ["image_edit"] * 20


def test_without_a_lead_in_the_pipeline_is_unchanged_by_the_run_length():
  config = tiny(stage1={"image_edit": 1.0, "clip": 1.0})
  assert_same_batches(take(iter(stage1_pipeline(config, 0, 1)), 6),
                      take(iter(stage1_pipeline(config, 0, 1, total_steps=7)), 6))


@pytest.mark.parametrize("total", [15, 25, 31])  # 0.1 · total ends in .5 twice: both round alike
def test_a_schedule_restart_at_the_lead_ins_share_falls_on_its_first_batch_after(total):
  from sama_jax.train.config import train_config
  from sama_jax.train.optimizer import restart_steps
  config = tiny(stage1={"image_edit": 1.0, "clip": 0.0}, stage1_lead_in={"share": 0.1, "image_edit": 0.0, "clip": 1.0})
  tasks = tasks_of(take(iter(stage1_pipeline(config, 0, 1, total_steps=total)), 5))
  assert restart_steps(train_config(total_steps=total, schedule_restarts=(0.1,))) == [tasks.index("image_edit")]


def test_resume_across_the_end_of_a_lead_in_continues_the_exact_data_order():
  config = tiny(stage1={"image_edit": 1.0, "clip": 1.0},
                stage1_lead_in={"share": 0.5, "image_edit": 0.0, "clip": 1.0})
  iterator = iter(stage1_pipeline(config, 0, 1, total_steps=12))
  first = take(iterator, 4)
  assert set(tasks_of(first)) <= set(PRETEXT_TASK_IDS.values())
  state = iterator.get_state()
  expected = take(iterator, 6)  # batches 4..9: the lead-in ends at 6
  assert "image_edit" in tasks_of(expected[2:]) and "image_edit" not in tasks_of(expected[:2])
  resumed = iter(stage1_pipeline(config, 0, 1, total_steps=12))
  resumed.set_state(state)
  assert_same_batches(take(resumed, 6), expected)


@pytest.mark.parametrize("workers", [2, 3])
def test_a_lead_in_ends_at_the_same_global_batch_under_worker_processes(workers):
  """grain's workers each run the mix on a strided slice and the global order takes their
  batches in turn; each worker's lead-in is its share of the global one (it once ran
  `workers` times as long)."""
  config = tiny(stage1={"image_edit": 1.0, "clip": 0.0}, stage1_lead_in={"share": 0.25, "image_edit": 0.0, "clip": 1.0},
                num_workers=workers)
  iterator = iter(stage1_pipeline(config, 0, 1, total_steps=20))
  try:
    tasks = tasks_of(take(iterator, 12))
  finally:
    iterator.close()
  assert "image_edit" not in tasks[:5] and tasks[5:] == ["image_edit"] * 7  # 5 = 0.25 · 20


@pytest.mark.parametrize("lead,message", [
    ({"share": 1.0, "image_edit": 0.0, "clip": 1.0}, r"share of the run's steps in \[0, 1\)"),
    ({"share": 0.2, "image_edit": -1.0, "clip": 1.0}, "non-negative batch shares"),
    ({"share": 0.2, "image_edit": 0.0, "clip": 0.0}, "are all 0"),
])
def test_bad_lead_ins_are_named(lead, message):
  with pytest.raises(ValueError, match=rf"data.stage1_lead_in.*{message}"):
    tiny(stage1_lead_in=lead)


def test_a_lead_in_needs_the_run_length():
  config = tiny(stage1_lead_in={"share": 0.2, "image_edit": 0.0, "clip": 1.0})
  with pytest.raises(ValueError, match="needs the run's total steps"):
    stage1_pipeline(config, 0, 1)


def test_phased_choice_keeps_every_part_at_its_share_as_it_goes():
  from sama_jax.data.phases import choose
  drawn, order = {}, []
  for position in range(8):
    name = choose({"a": 1.0, "b": 3.0, "c": 0.0}, drawn, position)
    drawn[name] = drawn.get(name, 0) + 1
    order.append(name)
  assert order == ["b", "a", "b", "b", "b", "a", "b", "b"]
