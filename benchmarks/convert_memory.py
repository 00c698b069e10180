"""Peak host memory of `python -m sama_jax.convert` on a random DiT of about --mb megabytes.

    python benchmarks/convert_memory.py              # ~1 GB float32 model
    python benchmarks/convert_memory.py --mb 300     # a smaller one
    python benchmarks/convert_memory.py --processes 2  # --distributed, peak of each process

writes a random diffusers-layout DiT (Wan2.1 proportions: head dim 128, ffn = 4 x dim) in
sharded safetensors, then runs, each in a fresh process: a tiny conversion (the baseline:
Python, JAX, Orbax, the model code), from-torch of the random model, and to-torch of the
resulting workdir (diffusers layout). Prints each process's peak resident memory
(ru_maxrss), its excess over the baseline in units of the model's size, and the wall time.
from-torch holds the converted parameters (1x; 1/N per process with --processes N) and must
not hold a second full copy; to-torch streams, holding one output file's tensors (up to 5 GB,
so the whole 1 GB model) plus one parameter. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

CONFIG = '''
import ml_collections
from sama_jax.config import model_config

def get_config():
  c = ml_collections.ConfigDict()
  c.model = model_config(**{model})
  return c
'''


def model_fields(mb: float) -> dict:
  """Wan-like shapes (dim 1024, 8 heads of 128, ffn 4096) with layers enough for `mb`."""
  dim, ffn = 1024, 4096
  per_layer = (8 * dim * dim + 2 * dim * ffn) * 4
  layers = max(1, round(mb * 2**20 / per_layer))
  return dict(dim=dim, ffn_dim=ffn, num_heads=dim // 128, num_layers=layers, text_dim=1024, freq_dim=256)


def write_random_dit(folder: str, fields: dict) -> int:
  """A random diffusers-layout DiT, tensor by tensor into shards; returns its bytes."""
  import numpy as np
  from flax import nnx

  from sama_jax.config import model_config
  from sama_jax.convert import names as N
  from sama_jax.convert import safetensors_io as io
  from sama_jax.convert.dit import _diffusers_config
  from sama_jax.convert.trees import flatten
  from sama_jax.models import SamaDiT

  config = model_config(**fields)
  shapes = flatten(nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: SamaDiT(config, nnx.Rngs(0))), nnx.Param)))
  rng = np.random.default_rng(0)
  shards, current, size, total = [], {}, 0, 0
  for rule in N.DIT_RULES:
    if rule.optional:
      continue  # a plain Wan: SAMA's modules start fresh
    shape = tuple(shapes[rule.ours].shape)
    one = N.to_torch(rule.kind, np.empty(shape[1:] if rule.stacked else shape, np.float32), config.patch_size)
    for i in range(config.num_layers if rule.stacked else 1):
      name = rule.diffusers.format(i=i)
      current[name] = (rng.standard_normal(one.shape, np.float32) * 0.02)
      size += current[name].nbytes
      if size > 256 * 2**20:
        shards.append(current)
        total += size
        current, size = {}, 0
  shards.append(current)
  total += size
  files = [f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  weight_map = {}
  for file, shard in zip(files, shards):
    io.write_file(shard, os.path.join(folder, file))
    weight_map.update({name: file for name in shard})
    shard.clear()
  io.write_json({"metadata": {"total_size": total}, "weight_map": weight_map},
                os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json"))
  io.write_json(_diffusers_config(config), os.path.join(folder, "config.json"))
  return total


def worker(argv: list[str]) -> None:
  """Runs the CLI in this process and prints its peak memory as JSON."""
  from sama_jax.convert.__main__ import main
  start = time.perf_counter()
  code = main(argv)
  print(json.dumps({"code": code, "seconds": time.perf_counter() - start,
                    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(argv: list[str], processes: int = 1) -> dict:
  """One process's peak, or with processes > 1 the largest of a --distributed run's
  processes (one CPU device each, gloo collectives)."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  if processes > 1:
    with socket.socket() as s:
      s.bind(("localhost", 0))
      port = s.getsockname()[1]
    argv = argv + ["--distributed", "--coordinator", f"localhost:{port}", "--num-processes", str(processes),
                   "--cpu-collectives", "gloo"]
  workers = [subprocess.Popen([sys.executable, __file__, "--worker", *argv,
                               *(["--process-id", str(i)] if processes > 1 else [])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(processes)]
  results = []
  for w in workers:
    out, err = w.communicate()
    if w.returncode:
      raise SystemExit(f"worker failed:\n{err[-3000:]}")
    results.append(json.loads(out.strip().splitlines()[-1]))
  return max(results, key=lambda r: r["peak_mb"])


def write_config(folder: str, fields: dict) -> str:
  path = os.path.join(folder, "config.py")
  with open(path, "w") as f:
    f.write(CONFIG.replace("{model}", repr(fields)))
  return path


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--mb", type=float, default=1000.0, help="model size in MB (float32)")
  p.add_argument("--processes", type=int, default=1,
                 help="run each conversion as this many --distributed processes; peaks are per process")
  p.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker is not None:
    return worker(a.worker)
  with tempfile.TemporaryDirectory(prefix="convert_memory_") as root:
    rows = []
    for name, fields in (("baseline (tiny)", dict(model_fields(1), dim=256, num_heads=2, num_layers=1)),
                         ("random DiT", model_fields(a.mb))):
      folder = os.path.join(root, name.split()[0])
      os.makedirs(os.path.join(folder, "wan"))
      # The writer runs in its own process so its arrays never count toward a measurement.
      code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import convert_memory as m; "
              f"print(m.write_random_dit({os.path.join(folder, 'wan')!r}, {fields!r}))")
      size = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env={**os.environ, "JAX_PLATFORMS": "cpu"}).stdout.strip().splitlines()[-1])
      config = write_config(folder, fields)
      ft = measure(["from-torch", "--dit", os.path.join(folder, "wan"), "--config", config,
                    "--out", os.path.join(folder, "run"), "--no-progress"], a.processes)
      tt = measure(["to-torch", "--checkpoint", os.path.join(folder, "run"), "--out", os.path.join(folder, "out"),
                    "--layout", "diffusers"], a.processes)
      rows.append((name, fields["num_layers"], size / 2**20, ft, tt))
  base_ft, base_tt = rows[0][3]["peak_mb"], rows[0][4]["peak_mb"]
  print(f"{'model':<16} {'layers':>6} {'size MB':>8} | {'from-torch peak MB':>18} {'excess/size':>11} {'s':>6} | "
        f"{'to-torch peak MB':>16} {'excess/size':>11} {'s':>6}")
  for n, (name, layers, mb, ft, tt) in enumerate(rows):
    ratio = lambda peak, base: f"{(peak - base) / mb:.2f}" if n else "-"
    print(f"{name:<16} {layers:>6} {mb:>8.0f} | {ft['peak_mb']:>18.0f} {ratio(ft['peak_mb'], base_ft):>11} "
          f"{ft['seconds']:>6.1f} | {tt['peak_mb']:>16.0f} {ratio(tt['peak_mb'], base_tt):>11} {tt['seconds']:>6.1f}")


if __name__ == "__main__":
  main()
