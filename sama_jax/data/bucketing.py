"""Multi-aspect batching for file-based data: split a source into one subset per
resolution bucket before the pipeline is built.

A batch must hold one (w, h), yet real clips come in many aspect ratios. Grouping on
the fly (a buffer per bucket that emits when full) would put buffered examples into
the iterator state. Instead the bucket of every record is decided up front from its
source's first frame (SAMA_METHOD.md §5.3), each bucket becomes its own sub-pipeline,
and the sub-pipelines are mixed by weight — so the iterator state stays a set of
indices and resuming is exact. The sizes come from the manifest's `width`/`height`
columns when present, otherwise from opening each file once (slow for large sets: add
the columns when preparing the manifest).
"""

from __future__ import annotations

import os

from PIL import Image, ImageOps

from sama_jax.data.frames import closest_bucket
from sama_jax.data.skips import Skipped
from sama_jax.data.video import VideoError, read_video


def record_size(item, kind: str):
  """(w, h) of the displayed first frame of the item's source (of the clip for "clip"),
  or None when the record is bad or unreadable (it is skipped and counted later)."""
  if isinstance(item, Skipped) or not isinstance(item, dict):
    return None
  if "size" in item:
    return tuple(item["size"])
  value = item.get("source", item.get("target"))
  if not isinstance(value, str):
    return None
  if not os.path.isfile(value) or os.path.getsize(value) == 0:
    return None
  try:
    if kind == "image_edit":
      with Image.open(value) as image:
        return ImageOps.exif_transpose(image).size
    frames, _ = read_video(value, max_frames=1)
    return frames.shape[2], frames.shape[1]
  except (VideoError, OSError, ValueError):
    return None


def partition_by_bucket(source, kind: str, buckets) -> dict:
  """{(w, h): [record index, ...]} over the buckets that receive records. Records of
  unknown size go to the bucket nearest 1:1; they fail (and are counted) when loaded."""
  buckets = [tuple(int(v) for v in b) for b in buckets]
  fallback = closest_bucket(1, 1, buckets)
  groups: dict = {}
  for index in range(len(source)):
    size = record_size(source[index], kind)
    bucket = closest_bucket(*size, buckets) if size else fallback
    groups.setdefault(bucket, []).append(index)
  return {bucket: groups[bucket] for bucket in buckets if bucket in groups}
