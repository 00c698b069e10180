"""Seconds per edit: the whole denoising loop (jitted) plus encode/decode, random weights.

    python benchmarks/edit_speed.py                         # tiny config, CPU
    python benchmarks/edit_speed.py --shape wan1_3b         # Wan-1.3B DiT at 480x832x81 (GPU)

Prints a table; nothing is asserted. The 1.3B row uses the patch codec in place of the
VAE and the world's tiny text/semantic encoders: it times the DiT sampling loop, which
dominates an edit.
"""

import argparse
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from sama_jax.config import model_config
from sama_jax.edit import EditBundle, edit, edit_config
from sama_jax.encoders import build_encoders, encoders_config
from sama_jax.models import SamaDiT

SHAPES = {
    # name: (model fields, frames, height, width, codec factor)
    "tiny": (dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2), 17, 64, 64, 4),
    "wan1_3b": (dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, dtype="bfloat16"), 81, 480, 832, 8),
}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
  p.add_argument("--steps", type=int, default=50)
  p.add_argument("--attention", default="xla")
  p.add_argument("--repeats", type=int, default=2)
  a = p.parse_args()
  fields, frames, height, width, factor = SHAPES[a.shape]
  enc_config = encoders_config(codec_factor=factor, text_len=32)
  encoders = build_encoders(enc_config)
  mc = model_config(**fields, text_dim=encoders.text_dim, in_channels=encoders.latent_channels,
                    out_channels=encoders.latent_channels, semantic_dim=encoders.semantic_dim,
                    num_semantic_tokens=5, attention=a.attention)
  config = ml_collections.ConfigDict()
  config.model, config.encoders = mc, enc_config
  config.edit = edit_config(area=height * width, factor=16, steps=a.steps, max_frames=frames)
  bundle = EditBundle(SamaDiT(mc, nnx.Rngs(0)), encoders, config)
  video = np.random.default_rng(0).integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
  start = time.perf_counter()
  edit(bundle, video, "make the red circle blue")
  first = time.perf_counter() - start
  times = []
  for seed in range(a.repeats):
    start = time.perf_counter()
    edit(bundle, video, "make the red circle blue", seed=seed + 1)
    times.append(time.perf_counter() - start)
  print(f"device: {jax.devices()[0].device_kind}")
  print("| shape | frames x H x W | steps | first edit s (compile) | edit s (median) |")
  print("|---|---|---|---|---|")
  print(f"| {a.shape} | {frames}x{height}x{width} | {a.steps} | {first:.1f} | {np.median(times):.1f} |")


if __name__ == "__main__":
  main()
