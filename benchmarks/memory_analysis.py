"""Per-device memory of the SAMA train step at Wan scale, from XLA's compiled memory analysis.

    python benchmarks/memory_analysis.py                                   # 1.3B, every remat
    python benchmarks/memory_analysis.py --models 14b --remat full,dots_saveable
    python benchmarks/memory_analysis.py --meshes fsdp8 --anchors 1 --text-len 512

Nothing runs and nothing is allocated: the train state is abstract (jax.eval_shape) and each
step is only lowered and compiled, `jax.jit(step, in_shardings, out_shardings).lower(...)
.compile().memory_analysis()`, on 8 fake CPU devices. The numbers are what XLA's CPU
compiler plans per device; a GPU/TPU compiler fuses and schedules differently, so read them
as estimates of the same program, not as a GPU measurement.

Shapes: 480×832×81 video -> VAE latents 21×60×104×16 -> patch (1,2,2) -> 32760 target +
32760 source tokens, plus 65 semantic tokens per anchor frame and 512 umT5 tokens. bf16
compute, float32 master weights, AdamW moments and EMA (the training defaults), one video
per data-parallel group. Attention is "chunked" (blockwise, O(block²) memory): the stand-in
for the cuDNN / splash flash kernels, which the CPU compiler cannot build.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import linen as nn  # noqa: E402

from sama_jax.config import load_config  # noqa: E402
from sama_jax.parallel.mesh import make_mesh, mesh_config  # noqa: E402
from sama_jax.parallel.sharding import batch_sharding  # noqa: E402
from sama_jax.train.config import train_config  # noqa: E402
from sama_jax.train.state import create_train_state  # noqa: E402
from sama_jax.train.step import jit_train_step  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"1.3b": "wan1_3b.py", "14b": "wan14b.py"}
REMATS = ("none", "full", "dots_saveable", "offload_dots")
# name -> mesh degrees.
MESHES = {"fsdp8": dict(data=1, fsdp=8, context=1, tensor=1),
          "fsdp4_context2": dict(data=1, fsdp=4, context=2, tensor=1)}
LATENTS = (21, 60, 104, 16)  # 81 frames of 480×832 through the Wan VAE (4× time, 8× space)
GB = 1e9


def abstract_train_state(model_config, tc, mesh, rules):
  """(graphdef, optimizer, abstract state with shardings, state shardings), nothing allocated:
  `create_train_state` traced under eval_shape, its jitted initialisers never run."""
  built = {}

  def build():
    graphdef, optimizer, state, shardings = create_train_state(model_config, tc, mesh, rules)
    built.update(graphdef=graphdef, optimizer=optimizer, shardings=shardings)
    return state

  shapes = jax.eval_shape(build)
  state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                       built["shardings"])
  return built["graphdef"], built["optimizer"], state, built["shardings"]


def abstract_batch(model_config, mesh, text_len, num_semantic):
  ways = mesh.shape["data"] * mesh.shape["fsdp"]  # one video per data-parallel group
  sharding = batch_sharding(mesh)
  s = lambda *shape: jax.ShapeDtypeStruct((ways, *shape), jnp.float32, sharding=sharding)
  return {"latents": s(*LATENTS), "source": s(*LATENTS), "text": s(text_len, model_config.text_dim),
          "semantic": s(num_semantic, model_config.semantic_dim),
          "task": jax.ShapeDtypeStruct((ways,), jnp.int32, sharding=sharding)}


def per_device_bytes(tree) -> float:
  """Bytes one device holds of an abstract tree with shardings."""
  return float(sum(np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def analyse(model_name, mesh_name, remat, text_len, num_semantic, sequence_parallel="none"):
  """One table row: dict of GB figures and compile seconds, or {"error": reason}."""
  config = load_config(os.path.join(REPO, "configs", MODELS[model_name])).model
  config.remat, config.attention = remat, "chunked"
  degrees = MESHES[mesh_name]
  # Context degrees > 1 shard the sequence by the activation_length rule (GSPMD) unless
  # --sequence-parallel ulysses (the model then pads 65,585 tokens to divide by the degree).
  config.sequence_parallel = sequence_parallel
  mc = mesh_config(**degrees)
  mesh = make_mesh(mc, jax.devices()[:8])
  tc = train_config()
  with jax.set_mesh(mesh), nn.logical_axis_rules(mc.rules):
    graphdef, optimizer, state, shardings = abstract_train_state(config, tc, mesh, mc.rules)
    batch = abstract_batch(config, mesh, text_len, num_semantic)
    step = jit_train_step(graphdef, optimizer, tc, shardings, mesh)
    start = time.perf_counter()
    stats = step.lower(state, batch, jax.random.key(0), np.float32(tc.learning_rate)).compile().memory_analysis()
    seconds = time.perf_counter() - start
  return {"params": per_device_bytes(state["params"]) / GB, "opt": per_device_bytes(state["opt_state"]) / GB,
          "ema": per_device_bytes(state["ema"]) / GB if state["ema"] is not None else 0.0,
          "args": stats.argument_size_in_bytes / GB, "out": stats.output_size_in_bytes / GB,
          "alias": stats.alias_size_in_bytes / GB, "temp": stats.temp_size_in_bytes / GB,
          "host_temp": stats.host_temp_size_in_bytes / GB,
          "total": (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
                    + stats.temp_size_in_bytes) / GB,
          "seconds": seconds}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="1.3b", help=f"comma-separated from {list(MODELS)}")
  p.add_argument("--remat", default=",".join(REMATS), help=f"comma-separated from {REMATS}")
  p.add_argument("--meshes", default=",".join(MESHES), help=f"comma-separated from {list(MESHES)}")
  p.add_argument("--anchors", type=int, default=1, help="anchor frames (65 semantic tokens each)")
  p.add_argument("--text-len", type=int, default=512)
  p.add_argument("--sequence-parallel", default="none", choices=("none", "ulysses"),
                 help="how context meshes split attention (model.sequence_parallel)")
  a = p.parse_args()
  split = lambda s: [x for x in s.split(",") if x]
  models, remats, meshes = split(a.models), split(a.remat), split(a.meshes)
  for flag, given, allowed in (("--models", models, MODELS), ("--remat", remats, REMATS), ("--meshes", meshes, MESHES)):
    bad = [x for x in given if x not in allowed]
    if bad:
      raise ValueError(f"{flag} {bad} unknown; choose from {list(allowed)}")
  num_semantic = 65 * a.anchors
  f, h, w, _ = LATENTS
  video = f * (h // 2) * (w // 2)

  print(f"{len(jax.devices())} fake {jax.devices()[0].platform} devices; per-device GB (1e9 bytes); "
        f"tokens: {video} target + {video} source + {num_semantic} semantic, {a.text_len} text; "
        f"one video per data-parallel group; sequence_parallel={a.sequence_parallel}")
  print("| model | mesh | remat | params | opt state | EMA | arguments | outputs | aliased | temp | "
        "total | host temp | compile s |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for model in models:
    for mesh in meshes:
      for remat in remats:
        try:
          r = analyse(model, mesh, remat, a.text_len, num_semantic, a.sequence_parallel)
        except Exception as e:  # noqa: BLE001 - the reason goes in the table
          reason = " ".join(f"{type(e).__name__}: {e}".split())[:160].replace("|", "/")
          print(f"| {model} | {mesh} | {remat} | failed: {reason} |||||||||", flush=True)
          continue
        print(f"| {model} | {mesh} | {remat} | {r['params']:.2f} | {r['opt']:.2f} | {r['ema']:.2f} | "
              f"{r['args']:.2f} | {r['out']:.2f} | {r['alias']:.2f} | {r['temp']:.2f} | {r['total']:.2f} | "
              f"{r['host_temp']:.2f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
