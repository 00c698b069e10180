"""Memory of the train step with LoRA (rank 16) against full fine-tuning, and tiny step times.

    python benchmarks/lora_memory.py                  # tiny + Wan2.1-1.3B, about 10 minutes on 2 CPU cores
    python benchmarks/lora_memory.py --models tiny --rank 8

For each model and mode: the bytes of the trained parameters, the optimizer state and the
EMA (from the abstract train state, jax.eval_shape: nothing is allocated), then XLA's
compiled memory analysis of the jitted step, `jax.jit(step).lower(...).compile()
.memory_analysis()`, on one CPU device. These are what XLA's CPU compiler plans; a GPU/TPU
compiler schedules differently, so read them as estimates of the same program. The tiny
model's step is also run and timed (median of --steps after one warm-up).

Shapes: tiny = configs/stage1_tiny.py's model (dim 256, 4 layers), batch 4 of 5x4x4x48
target + source latents, 24 text tokens, 5 semantic tokens. Wan 1.3B = configs/wan1_3b.py
(bf16 compute, float32 weights, remat dots_saveable), batch 1 of 4x30x52x16 target + source
latents (1560 + 1560 tokens), 512 text tokens of width 4096, 65 semantic tokens; attention
"chunked" (the flash-kernel stand-in the CPU compiler can build).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import linen as nn  # noqa: E402

from sama_jax.config import load_config  # noqa: E402
from sama_jax.lora import lora_config  # noqa: E402
from sama_jax.parallel.mesh import make_mesh, mesh_config  # noqa: E402
from sama_jax.train.config import train_config  # noqa: E402
from sama_jax.train.state import create_train_state  # noqa: E402
from sama_jax.train.step import make_train_step  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1e6
# name -> (config file, batch, latent [F, H, W, C], text tokens, semantic tokens)
MODELS = {"tiny": ("stage1_tiny.py", 4, (5, 4, 4, 48), 24, 5),
          "wan1.3b": ("wan1_3b.py", 1, (4, 30, 52, 16), 512, 65)}


def model_config_of(name):
  config = load_config(os.path.join(REPO, "configs", MODELS[name][0])).model
  if name != "tiny":
    config.attention = "chunked"
  return config


def abstract_state(model_config, tc, lora, mesh, rules):
  """(graphdef, optimizer, abstract state, shardings): create_train_state under eval_shape."""
  built = {}

  def build():
    graphdef, optimizer, state, shardings = create_train_state(model_config, tc, mesh, rules, lora=lora)
    built.update(graphdef=graphdef, optimizer=optimizer, shardings=shardings)
    return state

  shapes = jax.eval_shape(build)
  return built["graphdef"], built["optimizer"], shapes, built["shardings"]


def batch_of(name, model_config, concrete=False):
  _, b, latent, text_len, num_semantic = MODELS[name]
  shapes = {"latents": (b, *latent), "source": (b, *latent), "text": (b, text_len, model_config.text_dim),
            "semantic": (b, num_semantic, model_config.semantic_dim)}
  if not concrete:
    batch = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}
    return {**batch, "task": jax.ShapeDtypeStruct((b,), jnp.int32)}
  rng = np.random.default_rng(0)
  batch = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
  return {**batch, "task": np.zeros((b,), np.int32)}


def nbytes(tree) -> float:
  return float(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def analyse(name, rank, steps):
  """One table row (dict of MB figures, seconds) for model `name`, LoRA `rank` (0: full)."""
  model_config = model_config_of(name)
  tc, lora = train_config(ema_decay=0.9998), lora_config(rank=rank)
  mc = mesh_config(data=1)
  mesh = make_mesh(mc, jax.devices()[:1])
  with jax.set_mesh(mesh), nn.logical_axis_rules(mc.rules):
    graphdef, optimizer, state, shardings = abstract_state(model_config, tc, lora, mesh, mc.rules)
    step = jax.jit(make_train_step(graphdef, optimizer, tc, lora), donate_argnums=0)
    start = time.perf_counter()
    rate = np.float32(tc.learning_rate)
    compiled = step.lower(state, batch_of(name, model_config), jax.random.key(0), rate).compile()
    compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    row = {"frozen": nbytes(state.get("base", {})) / MB, "trained": nbytes(state["params"]) / MB,
           "opt": nbytes(state["opt_state"]) / MB, "ema": nbytes(state["ema"]) / MB,
           "args": stats.argument_size_in_bytes / MB, "temp": stats.temp_size_in_bytes / MB,
           "total": (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
                     + stats.temp_size_in_bytes) / MB, "compile_s": compile_s, "step_ms": None}
    if steps:
      _, _, real, _ = create_train_state(model_config, tc, mesh, mc.rules, lora=lora)
      batch, key = batch_of(name, model_config, concrete=True), jax.random.key(0)
      real, metrics = step(real, batch, key, rate)  # warm-up: compiles for the concrete layout
      jax.block_until_ready(metrics)
      times = []
      for _ in range(steps):
        t = time.perf_counter()
        real, metrics = step(real, batch, key, rate)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
      row["step_ms"] = 1e3 * statistics.median(times)
  return row


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated from {list(MODELS)}")
  p.add_argument("--rank", type=int, default=16, help="LoRA rank compared with full fine-tuning")
  p.add_argument("--steps", type=int, default=10, help="timed tiny steps (0: none)")
  a = p.parse_args()
  models = [m for m in a.models.split(",") if m]
  bad = [m for m in models if m not in MODELS]
  if bad:
    raise ValueError(f"--models {bad} unknown; choose from {list(MODELS)}")
  print(f"one {jax.devices()[0].platform} device; MB = 1e6 bytes; AdamW + EMA; LoRA targets: attention "
        f"q/k/v/o (self and cross) and both FFN linears of every block")
  print("| model | mode | frozen params | trained params | opt state | EMA | step arguments | step temp | "
        "step total | compile s | step ms (CPU) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for model in models:
    for rank in (0, a.rank):
      r = analyse(model, rank, a.steps if model == "tiny" else 0)
      mode = f"LoRA r={rank}" if rank else "full"
      step_ms = "" if r["step_ms"] is None else f"{r['step_ms']:.1f}"
      print(f"| {model} | {mode} | {r['frozen']:.1f} | {r['trained']:.1f} | {r['opt']:.1f} | {r['ema']:.1f} | "
            f"{r['args']:.1f} | {r['temp']:.1f} | {r['total']:.1f} | {r['compile_s']:.0f} | {step_ms} |",
            flush=True)


if __name__ == "__main__":
  main()
