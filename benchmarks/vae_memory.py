"""Peak memory and speed of Wan2.1 VAE encode + decode: chunked (scan) vs the whole clip at once.

    python benchmarks/vae_memory.py                       # published sizes, 256x256, 17/33/65 frames
    python benchmarks/vae_memory.py --scale 0.25          # base_dim 24: for a small CPU

prints one row per (frames, mode): compile and run seconds of encode and decode, frames/s of
encode + decode, the peak resident memory of the process (ru_maxrss) and, on an accelerator,
the device's peak bytes in use. Each row runs in a fresh subprocess so peaks do not mix; the
process baseline (Python, JAX, random weights) is printed too. Weights are random: speed and
memory do not depend on them. Nothing is asserted. On a 2-core CPU the published size would
take roughly half a minute per frame (16x the measured base_dim-24 cost), hence --scale.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODES = ("chunked", "whole")  # config.chunked True / False


def _rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(frames: int, size: int, mode: str, scale: float, seed: int) -> dict:
  import jax
  import numpy as np
  from flax import nnx

  from sama_jax.models.vae import WanVAE, vae_config

  config = vae_config(base_dim=max(1, round(96 * scale)), chunked=mode == "chunked")
  vae = WanVAE(config, nnx.Rngs(seed))
  graphdef, state = nnx.split(vae)
  del vae
  x = np.random.default_rng(seed).uniform(-1, 1, (1, frames, size, size, 3)).astype(np.float32)
  baseline = _rss_mb()

  encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x))
  decode = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z))
  t0 = time.perf_counter()
  encode_c = encode.lower(state, x).compile()
  z_shape = jax.eval_shape(encode, state, x)
  decode_c = decode.lower(state, z_shape).compile()
  compile_s = time.perf_counter() - t0

  t0 = time.perf_counter()
  z = jax.block_until_ready(encode_c(state, x))
  encode_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  y = jax.block_until_ready(decode_c(state, z))
  decode_s = time.perf_counter() - t0
  assert y.shape == x.shape
  stats = jax.devices()[0].memory_stats() or {}  # None on CPU
  device_mb = stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None
  return dict(device_mb=device_mb, frames=frames, mode=mode, base_dim=config.base_dim, compile_s=compile_s, encode_s=encode_s,
              decode_s=decode_s, fps=frames / (encode_s + decode_s), baseline_mb=baseline, peak_mb=_rss_mb())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--frames", type=int, nargs="+", default=[17, 33, 65])
  parser.add_argument("--size", type=int, default=256, help="square frame side in pixels")
  parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
  parser.add_argument("--scale", type=float, default=1.0, help="base_dim = round(96 * scale)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(args.frames[0], args.size, args.modes[0], args.scale, args.seed)))
    return

  import jax
  print(f"Wan2.1 VAE encode+decode, {args.size}x{args.size}, base_dim {round(96 * args.scale)}, "
        f"random weights, backend {jax.default_backend()}, {os.cpu_count()} CPUs")
  header = f"{'frames':>6} {'mode':>8} {'compile s':>9} {'encode s':>8} {'decode s':>8} {'frames/s':>8} " \
           f"{'baseline MB':>11} {'peak MB':>8} {'device MB':>9}"
  print(header)
  print("-" * len(header))
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
  for frames in args.frames:
    for mode in args.modes:
      cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--frames", str(frames), "--size",
             str(args.size), "--modes", mode, "--scale", str(args.scale), "--seed", str(args.seed)]
      run = subprocess.run(cmd, capture_output=True, text=True, env=env)
      if run.returncode:
        tail = (run.stderr.strip().splitlines() or ["?"])[-1]
        print(f"{frames:>6} {mode:>8}  failed (exit {run.returncode}: {tail})")
        continue
      r = json.loads(run.stdout.strip().splitlines()[-1])
      device = "-" if r["device_mb"] is None else f"{r['device_mb']:.0f}"
      print(f"{frames:>6} {mode:>8} {r['compile_s']:>9.1f} {r['encode_s']:>8.1f} {r['decode_s']:>8.1f} "
            f"{r['fps']:>8.2f} {r['baseline_mb']:>11.0f} {r['peak_mb']:>8.0f} {device:>9}", flush=True)


if __name__ == "__main__":
  main()
