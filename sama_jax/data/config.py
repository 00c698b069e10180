"""The data configuration: sources, frame grid, task mix, batching, workers and the
bad-input budget. Defaults run both stages on the synthetic world on a CPU;
`data_config(clips={"format": "manifest", "path": "/data/koala.csv"})` switches a
source to real data (nested dicts merge into the defaults)."""

from __future__ import annotations

import numbers

import ml_collections

from sama_jax.data.pretext import TASKS
from sama_jax.data.sources import DEFAULT_COLUMNS
from sama_jax.data.synthetic_edits import EDIT_KINDS
from sama_jax.data.synthetic import TRAIN_KINDS, check_held_out_from
from sama_jax.data.synthetic_scene import SceneSampling

SOURCE_FORMATS = ("none", "manifest", "folder", "world", "array_record", "precomputed")
ANCHORS = ("uniform", "first")
SHORT_CLIPS = ("skip", "pad")
SPEED_MODES = ("subsample", "time_warp")
NONE_MODES = ("t2v", "identity")
STAGE_KINDS = {"stage1": ("image_edit", "clip"), "stage2": ("video_edit", "image_edit", "clip")}


def source_config(kind: str) -> ml_collections.ConfigDict:
  """One source block. format: "world" (the synthetic world), "manifest" (CSV / JSON /
  JSONL with the official columns), "folder" (raw clips with sidecar .txt captions),
  "array_record" (shards of records.encode_record items), "precomputed" (the encodings
  `python -m sama_jax.precompute` wrote for image_edit / video_edit) or "none"."""
  s = ml_collections.ConfigDict()
  s.format = "world"
  s.path = ""  # manifest file, video folder, or comma-separated ArrayRecord shard paths / globs
  s.base_path = ""  # manifest paths are relative to this; "" = the manifest's folder
  s.target_column, s.source_column, s.text_column = DEFAULT_COLUMNS[kind]
  s.world_size = 10_000  # world: examples per epoch (any size; each is rendered on demand)
  s.world_seed = 0
  return s


def data_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # shuffling, pretext draws and anchor frames all derive from it
  c.num_epochs = None  # None repeats forever; an int stops after that many passes
  # Sources (SAMA_METHOD.md §5.3).
  c.image_edits = source_config("image_edit")  # Semantic Anchoring pairs
  c.clips = source_config("clip")  # raw clips for the Motion Alignment pretext tasks
  c.video_edits = source_config("video_edit")  # stage-2 SFT pairs
  # Frame grid: every example of a sub-pipeline is resized into one (w, h) and T frames.
  c.resolution = (64, 64)  # (w, h); 480p buckets at full scale
  c.buckets = ()  # ((w, h), ...): one sub-pipeline per bucket for manifest/folder sources
  c.num_frames = 17  # 4k+1; the first num_frames frames of each video
  c.fps = None  # None: the file's own frames (the released dataset); a rate resamples
  c.short_clips = "skip"  # clips of 5..num_frames-1 frames: "skip" (counted) or "pad" (repeat last)
  c.trim_leading = (("Lewandofski-OpenVE-3M", 4),)  # (path substring, frames dropped): §5.3
  c.anchor = "uniform"  # SAMA_METHOD.md decision 3: "uniform" (paper, N = 1) or "first" (code)
  # The synthetic world's scenes and edits (SYNTHETIC_WORLD.md), for every world source and
  # for the evaluation clips of a run: the edit kinds drawn, object radii as shares of
  # min(H, W), at most this many objects per scene, and the training kinds that never show
  # a held-out (shape, colour) pair: SYNTHETIC_WORLD.md's split holds them out of stage-2
  # video edits only; ("image_edit", "clip", "video_edit") holds them out of all training.
  c.world = ml_collections.ConfigDict({"edit_kinds": EDIT_KINDS, "radius": SceneSampling.radius,
                                       "max_objects": SceneSampling.max_objects,
                                       "held_out_from": ("video_edit",)})
  c.image_edit_prefix = ""  # prepended to edit instructions; the released
  c.video_edit_prefix = ""  # model is prompted with "[Video edit] " (§4.3)
  # Batches: global sizes, split evenly over processes (paper: 448 images / 112 videos).
  c.image_batch_size = 16
  c.video_batch_size = 4
  # Mixing: shares of *batches* per stage (a batch holds one kind and task).
  c.stage1 = ml_collections.ConfigDict({"image_edit": 1.0, "clip": 1.0})
  c.stage2 = ml_collections.ConfigDict({"video_edit": 1.0, "image_edit": 0.0, "clip": 0.0})
  # Lead-ins: the first `share` of a run's steps draws its batches by these shares instead
  # (a curriculum; 0 = none). Stage 1 of the world configs runs its Motion Alignment clips
  # first and ends on Semantic Anchoring pairs (docs/results.md finding 19).
  c.stage1_lead_in = ml_collections.ConfigDict({"share": 0.0, "image_edit": 0.0, "clip": 1.0})
  c.stage2_lead_in = ml_collections.ConfigDict({"share": 0.0, "video_edit": 0.0, "image_edit": 0.0, "clip": 1.0})
  # Motion Alignment (SAMA_METHOD.md decision 4): the clip share is split by this mix.
  c.pretext = ml_collections.ConfigDict()
  c.pretext.mix = ml_collections.ConfigDict({"none": 1.0, "cube": 2.0, "speed": 3.0, "tube": 4.0})
  c.pretext.none_mode = "t2v"  # "t2v": no source; "identity": the clean clip as source
  c.pretext.mask_ratio = 0.3
  c.pretext.speed = 2.0
  c.pretext.speed_mode = "subsample"  # shortens the source to a 4k+1 length; or "time_warp"
  c.pretext.splits = (2, 2, 2)
  c.pretext.keep_last_frame = True
  # Bad input: stop once a stream skipped more than this fraction of its records.
  c.max_skip_fraction = 0.1
  c.skip_check_after = 100  # records a stream must have seen before the check applies
  # Execution.
  c.num_workers = 0  # worker processes (grain mp_prefetch); 0 = in the training process
  c.worker_buffer_size = 2  # batches each worker prepares ahead
  c.read_threads = 2  # threads decoding examples per sub-pipeline (per worker)
  c.read_buffer_size = 4  # examples each sub-pipeline decodes ahead
  c.update(overrides)
  validate_data_config(c)
  return c


def _positive_size(value, name: str) -> None:
  if len(tuple(value)) != 2 or any(not isinstance(v, numbers.Integral) or v < 1 for v in value):
    raise ValueError(f"data.{name}={value!r}; expected a (width, height) of positive integers")


def validate_data_config(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field, its value and what is allowed."""

  def choice(name, value, allowed):
    if value not in allowed:
      raise ValueError(f"data.{name}={value!r}; expected one of {allowed}")

  for name in ("image_edits", "clips", "video_edits"):
    source = c[name]
    choice(f"{name}.format", source.format, SOURCE_FORMATS)
    if source.format in ("manifest", "folder", "array_record", "precomputed") and not source.path:
      raise ValueError(f"data.{name}.format={source.format!r} needs data.{name}.path")
    if source.format == "precomputed" and name == "clips":
      raise ValueError("data.clips.format='precomputed': clips are corrupted afresh each epoch, so their "
                       "latents cannot be cached; precompute clips to 'array_record' (decoded frames) instead")
    if source.format == "world" and source.world_size < 1:
      raise ValueError(f"data.{name}.world_size={source.world_size}; expected a positive example count")
  w = c.world
  if isinstance(w.edit_kinds, str) or not w.edit_kinds or set(w.edit_kinds) - set(EDIT_KINDS):
    raise ValueError(f"data.world.edit_kinds={w.edit_kinds!r}; expected a non-empty tuple of {EDIT_KINDS}")
  if len(tuple(w.radius)) != 2 or not 0 < w.radius[0] <= w.radius[1] < 0.4:
    raise ValueError(f"data.world.radius={w.radius!r}; expected (low, high) with 0 < low <= high < 0.4 "
                     "(shares of the frame's shorter side)")
  if not isinstance(w.max_objects, numbers.Integral) or w.max_objects < 1:
    raise ValueError(f"data.world.max_objects={w.max_objects!r}; expected a positive integer")
  check_held_out_from(w.get("held_out_from", TRAIN_KINDS), "data.world.held_out_from")
  _positive_size(c.resolution, "resolution")
  for bucket in c.buckets:
    _positive_size(bucket, "buckets entry")
  if c.num_frames < 5 or (c.num_frames - 1) % 4:
    raise ValueError(f"data.num_frames={c.num_frames}; expected 4k+1 >= 5 (5, 9, ..., 81)")
  choice("short_clips", c.short_clips, SHORT_CLIPS)
  choice("anchor", c.anchor, ANCHORS)
  choice("pretext.none_mode", c.pretext.none_mode, NONE_MODES)
  choice("pretext.speed_mode", c.pretext.speed_mode, SPEED_MODES)
  for stage, kinds in STAGE_KINDS.items():
    weights = c[stage]
    if set(weights) != set(kinds) or any(weights[k] < 0 for k in kinds) or sum(weights[k] for k in kinds) <= 0:
      raise ValueError(f"data.{stage}={dict(weights)}; expected non-negative batch shares for {kinds} "
                       "with a positive sum")
    lead = c[f"{stage}_lead_in"]
    if set(lead) != {"share", *kinds} or not 0.0 <= lead.share < 1.0 or any(lead[k] < 0 for k in kinds):
      raise ValueError(f"data.{stage}_lead_in={dict(lead)}; expected a share of the run's steps in [0, 1) "
                       f"and non-negative batch shares for {kinds}")
    if lead.share > 0 and sum(lead[k] for k in kinds) <= 0:
      raise ValueError(f"data.{stage}_lead_in.share={lead.share} but its batch shares for {kinds} are all 0")
  mix = c.pretext.mix
  if set(mix) - set(TASKS) or any(v < 0 for v in mix.values()):
    raise ValueError(f"data.pretext.mix={dict(mix)}; expected non-negative weights for tasks {tuple(TASKS)}")
  clips = any(c[s].clip > 0 or (c[f"{s}_lead_in"].share > 0 and c[f"{s}_lead_in"].clip > 0) for s in STAGE_KINDS)
  if clips and sum(mix.values()) <= 0:
    raise ValueError("data.pretext.mix has no positive weight, yet a stage's batches include clips")
  for name in ("image_batch_size", "video_batch_size", "read_threads", "read_buffer_size", "worker_buffer_size"):
    if c[name] < 1:
      raise ValueError(f"data.{name}={c[name]}; expected a positive integer")
  if c.num_workers < 0 or c.skip_check_after < 1:
    raise ValueError(f"data.num_workers={c.num_workers}, data.skip_check_after={c.skip_check_after}; "
                     "expected num_workers >= 0 and skip_check_after >= 1")
  if not 0.0 <= c.max_skip_fraction <= 1.0:
    raise ValueError(f"data.max_skip_fraction={c.max_skip_fraction}; expected a fraction in [0, 1]")
  if c.num_epochs is not None and c.num_epochs < 1:
    raise ValueError(f"data.num_epochs={c.num_epochs}; expected None (forever) or a positive integer")


def world_options(c: ml_collections.ConfigDict) -> dict:
  """The synthetic world's `world_case` keywords for a data config: clip length, frame
  size, edit kinds, scene sampling and the held-out split (`data.world`). Configs saved
  before a field existed get world_case's default for it (before `held_out_from`, every
  training kind held the pairs out)."""
  w = c.get("world") or {}
  sampling = SceneSampling(radius=tuple(w.get("radius", SceneSampling.radius)),
                           max_objects=int(w.get("max_objects", SceneSampling.max_objects)))
  return {"frames": c["num_frames"], "height": c["resolution"][1], "width": c["resolution"][0],
          "kinds": tuple(w.get("edit_kinds", EDIT_KINDS)), "sampling": sampling,
          "held_out_from": tuple(w.get("held_out_from", TRAIN_KINDS))}


def check_same_world(saved_data, data) -> None:
  """Raises ValueError when a run resumed with data config `data` draws a different
  synthetic world (edit kinds, scene sampling, frame size or held-out split) than the
  checkpoint's saved data config `saved_data`: its batches would silently change
  distribution halfway, and a held-out split changed on resume leaks the evaluation pairs."""
  blocks = ("image_edits", "clips", "video_edits")
  if not any(data[b].format == "world" for b in blocks):
    return
  before, now = world_options(saved_data), world_options(data)
  changed = sorted(k for k in now if before.get(k) != now[k])
  if changed:
    raise ValueError(f"this workdir's checkpoint was trained on another synthetic world ({', '.join(changed)}: "
                     f"{[before.get(k) for k in changed]} then, {[now[k] for k in changed]} now); resume with "
                     "the same data.world, or train in a new workdir")
