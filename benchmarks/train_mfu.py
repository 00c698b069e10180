"""Train-step throughput and MFU on this machine's CPU: the jitted SAMA train step vs the
diffusers PyTorch reference doing the same work.

    python benchmarks/train_mfu.py                         # tiny and small, 3 repeats
    python benchmarks/train_mfu.py --configs small --repeats 5
    python benchmarks/train_mfu.py --configs tiny --torch-threads 1   # busy machine: see below

Prints a Markdown table; nothing is asserted.

  jax    `jit_train_step` as training runs it: flow + semantic loss, gradients, global-norm
         clipping, AdamW, EMA, float32, one device, source and semantic tokens in context.
  torch  diffusers `WanTransformer3DModel` forward + backward + `torch.optim.AdamW.step`,
         float32, torch threads = the CPUs JAX uses. It has no source/semantic inputs, so its
         latents are source and target concatenated along frames: the same 2·L video tokens
         (the SAMA row also carries the semantic tokens). Random weights of the same shapes.

FLOPs: `dit_flops(...).train`, the model's matmul FLOPs of forward + backward, where the
backward counts two matmuls per forward matmul (one where the input is data needing no
gradient): ≈ 3× forward. Optimizer, elementwise work and recomputation are not counted.
MFU = FLOPs / step time / measured matmul peak, the peak being the median FLOP/s of a large
float32 matmul (jnp.dot) on the same device in the same run, not a datasheet number.

On a CPU shared with other jobs, torch's OpenMP threads wait on each other at every op, which
swamps small steps (the tiny torch step measured 0.09 s idle, 1.4 s with one core busy, 0.02 s
with --torch-threads 1); compare with --torch-threads 1 before reading much into tiny rows.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from sama_jax.config import load_config, model_config
from sama_jax.models.flops import dit_flops
from sama_jax.parallel.mesh import make_mesh, mesh_config
from sama_jax.parallel.sharding import global_batch
from sama_jax.train.config import train_config
from sama_jax.train.state import create_train_state
from sama_jax.train.step import jit_train_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_configs() -> dict:
  """name -> (model config, latent shape per video (F, H, W), text tokens, semantic tokens)."""
  tiny = load_config(os.path.join(REPO, "configs", "tiny.py")).model
  small = model_config(dim=512, num_heads=8, num_layers=8, ffn_dim=2048, text_dim=512)
  # tiny: 2·192 video + 5 semantic tokens; small: 2·1024 video + 65 semantic tokens.
  return {"tiny": (tiny, (3, 16, 16), 16, tiny.num_semantic_tokens),
          "small": (small, (4, 32, 32), 64, small.num_semantic_tokens)}


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
  """Median FLOP/s of an n×n float32 matmul on JAX's default device."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  return 2.0 * n ** 3 / median_seconds(lambda: dot(a, a).block_until_ready(), repeats)


def make_batch(config, video, text_len, num_semantic, seed=0) -> dict:
  rng = np.random.default_rng(seed)
  r = lambda *s: rng.standard_normal(s).astype(np.float32)
  f, h, w = video
  return {"latents": r(1, f, h, w, config.in_channels), "source": r(1, f, h, w, config.in_channels),
          "text": r(1, text_len, config.text_dim), "semantic": r(1, num_semantic, config.semantic_dim),
          "task": np.zeros((1,), np.int32)}


def jax_train_step(config, batch):
  """(step(), compile seconds): one call runs one optimizer update on a one-device mesh."""
  mc = mesh_config(data=1)
  mesh = make_mesh(mc, jax.devices()[:1])
  tc = train_config()
  with jax.set_mesh(mesh), nn.logical_axis_rules(mc.rules):
    graphdef, optimizer, state, shardings = create_train_state(config, tc, mesh, mc.rules)
    step = jit_train_step(graphdef, optimizer, tc, shardings, mesh)
    batch = global_batch(batch, mesh)
    rng, rate = jax.random.key(0), np.float32(tc.learning_rate)
    start = time.perf_counter()
    step = step.lower(state, batch, rng, rate).compile()
    compile_s = time.perf_counter() - start
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch, rng, rate)
    jax.block_until_ready(metrics)

  return run, compile_s


def torch_train_step(config, batch):
  """step(): forward + backward + AdamW of diffusers' Wan on source ‖ target frames."""
  import torch
  from diffusers import WanTransformer3DModel

  torch.manual_seed(0)
  model = WanTransformer3DModel(
      patch_size=tuple(config.patch_size), num_attention_heads=config.num_heads,
      attention_head_dim=config.dim // config.num_heads, in_channels=config.in_channels,
      out_channels=config.out_channels, text_dim=config.text_dim, freq_dim=config.freq_dim,
      ffn_dim=config.ffn_dim, num_layers=config.num_layers, cross_attn_norm=config.cross_attn_norm,
      qk_norm="rms_norm_across_heads", eps=config.eps, rope_max_seq_len=config.rope_max_len)
  model.train()
  tc = train_config()
  optimizer = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate, betas=(tc.b1, tc.b2), eps=tc.eps,
                                weight_decay=tc.weight_decay)
  video = np.concatenate([batch["source"], batch["latents"]], axis=1)  # [1, 2F, H, W, C]
  latents = torch.from_numpy(np.moveaxis(video, -1, 1).copy())
  target = torch.randn_like(latents)
  timestep, text = torch.tensor([500.0]), torch.from_numpy(batch["text"])

  def run():
    optimizer.zero_grad(set_to_none=True)
    out = model(latents, timestep, text, return_dict=False)[0]
    (out - target).pow(2).mean().backward()
    optimizer.step()

  return run


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default="tiny,small", help="comma-separated names from: tiny, small")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--torch-threads", type=int, default=0, help="0: as many as JAX's CPUs")
  p.add_argument("--no-torch", action="store_true")
  a = p.parse_args()
  available = bench_configs()
  names = [n for n in a.configs.split(",") if n]
  unknown = [n for n in names if n not in available]
  if unknown:
    raise ValueError(f"--configs {unknown} unknown; choose from {sorted(available)}")
  threads = len(os.sched_getaffinity(0))
  torch_threads = a.torch_threads or threads
  if not a.no_torch:
    import torch
    torch.set_num_threads(torch_threads)

  peak = matmul_peak()
  rows = []
  for name in names:
    config, (f, h, w), text_len, num_semantic = available[name]
    batch = make_batch(config, (f, h, w), text_len, num_semantic)
    pt, ph, pw = config.patch_size
    video_tokens = 2 * (f // pt) * (h // ph) * (w // pw)
    shape = dict(batch=1, height=h, width=w, text_len=text_len)
    flops_jax = dit_flops(config, frames=f, source_frames=f, num_semantic=num_semantic, **shape)
    run, compile_s = jax_train_step(config, batch)
    jax_s = median_seconds(run, a.repeats)
    rows.append((name, "jax (SAMA step)", f"{video_tokens}+{num_semantic}", flops_jax, jax_s, compile_s))
    if not a.no_torch:
      flops_torch = dit_flops(config, frames=2 * f, **shape)
      torch_s = median_seconds(torch_train_step(config, batch), a.repeats)
      rows.append((name, "torch (diffusers, source‖target frames)", f"{video_tokens}", flops_torch, torch_s,
                   None))

  print(f"device: {jax.devices()[0].device_kind}, {threads} CPUs (torch threads {torch_threads}); "
        f"measured matmul peak (jnp.dot 2048² float32): {peak / 1e9:.1f} GFLOP/s; "
        f"median of {a.repeats} steps after 1 warm-up")
  print("| config | framework | tokens (video+semantic) | train GFLOP (≈3× fwd) | step s | tokens/s | "
        "GFLOP/s | MFU | jax/torch speed | compile s |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  jax_speed = {}
  for name, framework, tokens, flops, seconds, compile_s in rows:
    total_tokens = sum(int(t) for t in tokens.split("+"))
    speed = flops.train / seconds
    if compile_s is not None:
      jax_speed[name] = seconds
      ratio = ""
    else:
      ratio = f"{seconds / jax_speed[name]:.2f}×"  # torch time / jax time: > 1 means JAX is faster
    print(f"| {name} | {framework} | {tokens} | {flops.train / 1e9:.1f} | {seconds:.3f} | "
          f"{total_tokens / seconds:.0f} | {speed / 1e9:.1f} | {100 * speed / peak:.1f}% | {ratio} | "
          f"{'' if compile_s is None else f'{compile_s:.1f}'} |")


if __name__ == "__main__":
  main()
