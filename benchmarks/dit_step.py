"""Forward+backward time of the DiT, JAX vs the PyTorch reference, with FLOP/s and MFU.

    python benchmarks/dit_step.py                      # small model on this machine's CPU
    python benchmarks/dit_step.py --dim 1536 --heads 12 --layers 30 --ffn 8960 \
        --frames 5 --height 30 --width 52 --dtype bfloat16 --peak-tflops 989   # a GPU

Prints a table; nothing is asserted. The step is the loss gradient of one batch with
respect to all parameters (what a training step costs before the optimizer). FLOPs come
from `sama_jax.models.flops.dit_flops` for both frameworks: same model, same shapes.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sama_jax.config import model_config
from sama_jax.models import SamaDiT
from sama_jax.models.flops import dit_flops


def time_call(fn, repeats):
  fn()  # compile / warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def jax_step(config, args, sama):
  graphdef, params = nnx.split(SamaDiT(config, nnx.Rngs(0)), nnx.Param)
  latents, timestep, text, source, semantic = args

  @jax.jit
  def grad(params):
    def loss(params):
      v, s = nnx.merge(graphdef, params)(latents, timestep, text, source=source if sama else None,
                                         semantic=semantic if sama else None)
      return jnp.mean(v ** 2) + (jnp.mean(s ** 2) if s is not None else 0.0)
    return jax.grad(loss)(params)

  return lambda: jax.block_until_ready(grad(params))


def torch_step(config, args):
  import torch
  from diffusers import WanTransformer3DModel

  torch.manual_seed(0)
  model = WanTransformer3DModel(
      num_attention_heads=config.num_heads, attention_head_dim=config.dim // config.num_heads,
      in_channels=config.in_channels, out_channels=config.out_channels, text_dim=config.text_dim,
      freq_dim=config.freq_dim, ffn_dim=config.ffn_dim, num_layers=config.num_layers)
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[config.dtype]
  model = model.to(dtype)
  latents, timestep, text = (torch.from_numpy(np.array(a, np.float32)) for a in args[:3])
  latents, text = latents.permute(0, 4, 1, 2, 3).to(dtype), text.to(dtype)

  def step():
    model.zero_grad(set_to_none=True)
    out = model(latents, timestep, text, return_dict=False)[0]
    out.float().pow(2).mean().backward()

  return step


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dim", type=int, default=256)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--ffn", type=int, default=1024)
  p.add_argument("--text-dim", type=int, default=256)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--frames", type=int, default=3, help="latent frames")
  p.add_argument("--height", type=int, default=16, help="latent height")
  p.add_argument("--width", type=int, default=16, help="latent width")
  p.add_argument("--text-len", type=int, default=64)
  p.add_argument("--semantic", type=int, default=65, help="semantic tokens in the SAMA row")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--attention", default="xla", choices=["xla", "cudnn", "splash"])
  p.add_argument("--remat", default="none")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--peak-tflops", type=float, default=None, help="device peak, for MFU")
  p.add_argument("--no-torch", action="store_true")
  a = p.parse_args()

  config = model_config(dim=a.dim, num_heads=a.heads, num_layers=a.layers, ffn_dim=a.ffn, text_dim=a.text_dim,
                        dtype=a.dtype, attention=a.attention, remat=a.remat)
  rng = np.random.default_rng(0)
  shape = (a.batch, a.frames, a.height, a.width, config.in_channels)
  args = (jnp.asarray(rng.standard_normal(shape), jnp.float32), jnp.full((a.batch,), 500.0),
          jnp.asarray(rng.standard_normal((a.batch, a.text_len, a.text_dim)), jnp.float32),
          jnp.asarray(rng.standard_normal(shape), jnp.float32),
          jnp.asarray(rng.standard_normal((a.batch, a.semantic, config.semantic_dim)), jnp.float32))
  dims = dict(batch=a.batch, frames=a.frames, height=a.height, width=a.width, text_len=a.text_len)

  rows = [("jax", "plain Wan", jax_step(config, args, sama=False), dit_flops(config, **dims))]
  rows.append(("jax", "SAMA (source + semantic)", jax_step(config, args, sama=True),
               dit_flops(config, **dims, source_frames=a.frames, num_semantic=a.semantic)))
  if not a.no_torch:
    rows.append(("torch (diffusers)", "plain Wan", torch_step(config, args), dit_flops(config, **dims)))

  print(f"device: {jax.devices()[0].device_kind}; dim {a.dim}, layers {a.layers}, latents {shape}, {a.dtype}")
  print("| framework | model | tokens | fwd+bwd ms | TFLOP/s | MFU |")
  print("|---|---|---|---|---|---|")
  for framework, name, step, flops in rows:
    seconds = time_call(step, a.repeats)
    tflops = flops.train / seconds / 1e12
    mfu = f"{100 * tflops / a.peak_tflops:.1f}%" if a.peak_tflops else "n/a"
    tokens = "2L+N" if "SAMA" in name else "L"
    print(f"| {framework} | {name} | {tokens} | {1e3 * seconds:.1f} | {tflops:.3f} | {mfu} |")


if __name__ == "__main__":
  main()
