"""Host data throughput: clips/s of the stage-1 Motion-Alignment pipeline (decode, resize,
pretext corruption, batching) at several worker counts.

    python benchmarks/data_throughput.py                              # 1, 2, 4 workers
    python benchmarks/data_throughput.py --workers 0 8 --seconds 20 --resolution 832 480 --frames 81

Rows: the real clips of ../shared/testdata/videos (when present; a manifest repeating
them, decoded and resized to --resolution) and the synthetic world (rendered at its own
--world-resolution). Stage-1 batches here are clips only (the image share set to 0), with
the paper's 1:2:3:4 pretext mix. Throughput is measured after the first batch (worker
start-up is reported separately). Prints a table; nothing is asserted.
"""

import argparse
import csv
import os
import tempfile
import time

from sama_jax.data.config import data_config
from sama_jax.data.pipeline import stage1_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEOS = os.path.join(REPO, "..", "shared", "testdata", "videos")


def real_manifest(folder: str, repeats: int = 20) -> str | None:
  if not os.path.isdir(VIDEOS):
    return None
  names = sorted(n for n in os.listdir(VIDEOS) if n.endswith(".mp4"))
  path = os.path.join(folder, "real_clips.csv")
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["video", "prompt"])
    writer.writerows([os.path.abspath(os.path.join(VIDEOS, n)), f"clip {i}"]
                     for i in range(repeats) for n in names)
  return path


def measure(config, seconds: float) -> tuple[float, float, int]:
  """(start-up seconds, clips per second, batches timed) of one stage-1 iterator."""
  start = time.perf_counter()
  iterator = iter(stage1_pipeline(config, 0, 1))
  try:
    next(iterator)
    startup = time.perf_counter() - start
    clips = batches = 0
    begin = time.perf_counter()
    while time.perf_counter() - begin < seconds:
      clips += len(next(iterator)["task"])
      batches += 1
    elapsed = time.perf_counter() - begin
  finally:
    if hasattr(iterator, "close"):
      iterator.close()
  return startup, clips / elapsed, batches


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--resolution", type=int, nargs=2, default=[832, 480], help="real clips: w h")
  parser.add_argument("--frames", type=int, default=33, help="4k+1 frames per real clip")
  parser.add_argument("--world-resolution", type=int, nargs=2, default=[64, 64])
  parser.add_argument("--world-frames", type=int, default=17)
  parser.add_argument("--batch-size", type=int, default=4)
  args = parser.parse_args()

  clip_only = dict(stage1={"image_edit": 0.0, "clip": 1.0}, video_batch_size=args.batch_size)
  with tempfile.TemporaryDirectory() as folder:
    rows = []
    manifest = real_manifest(folder)
    if manifest is None:
      print(f"(real clips folder {os.path.normpath(VIDEOS)} is absent: world rows only)")
    else:
      rows.append((f"real clips {args.resolution[0]}x{args.resolution[1]}x{args.frames}",
                   dict(clips={"format": "manifest", "path": manifest}, resolution=tuple(args.resolution),
                        num_frames=args.frames, short_clips="pad", **clip_only)))
    w, h = args.world_resolution
    rows.append((f"synthetic world {w}x{h}x{args.world_frames}",
                 dict(resolution=(w, h), num_frames=args.world_frames, **clip_only)))

    print(f"stage-1 clip pipeline, batch {args.batch_size}, {os.cpu_count()} CPUs, {args.seconds:.0f} s per cell")
    print(f"| {'data':<32} | workers | start-up s | clips/s | batches |")
    print(f"|{'-' * 34}|---------|------------|---------|---------|")
    for name, overrides in rows:
      for workers in args.workers:
        startup, rate, batches = measure(data_config(num_workers=workers, **overrides), args.seconds)
        print(f"| {name:<32} | {workers:>7} | {startup:>10.2f} | {rate:>7.1f} | {batches:>7} |", flush=True)


if __name__ == "__main__":
  main()
