"""Per-device memory of editing (the whole guided sampler) at Wan scale, from XLA's compiled
memory analysis, on 1, 4 and 8 devices and with float32 / bfloat16 / int8 weights.

    python benchmarks/edit_memory.py                                  # 14B, every mesh and format
    python benchmarks/edit_memory.py --models 1.3b --meshes 1,fsdp8 --weights bfloat16

Nothing is allocated: the parameters are abstract (shapes, dtypes and the shardings
`load_bundle(mesh=...)` gives them) and `edit`'s jitted sampler (50 Euler steps in one
fori_loop, both guidance branches in one batch of 2) is only lowered and compiled on fake
CPU devices. Read the figures as XLA's plan for this program, not as a GPU measurement.

Shapes: 480×832×81 video -> latents 21×60×104×16 -> 32,760 target + 32,760 source tokens +
65 semantic (one anchor) = 65,585, umT5 text of 512 tokens; bf16 compute (the 14B
config), "chunked" attention standing in for the flash kernels. Context meshes use
Ulysses, which pads the sequence to a multiple of the context degree.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from sama_jax.config import load_config  # noqa: E402
from sama_jax.convert.sharded import conversion_shardings  # noqa: E402
from sama_jax.convert.trees import flatten, unflatten  # noqa: E402
from sama_jax.edit import EditBundle, _make_sampler, edit_config, for_mesh  # noqa: E402
from sama_jax.models.quant import Int8Weight, quantize  # noqa: E402
from sama_jax.parallel.mesh import make_mesh, mesh_config  # noqa: E402
from sama_jax.train.state import abstract_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"1.3b": "wan1_3b.py", "14b": "wan14b.py"}
MESHES = {"1": dict(), "fsdp4": dict(fsdp=4), "context4": dict(context=4), "fsdp8": dict(fsdp=8),
          "fsdp2_context4": dict(fsdp=2, context=4), "tensor8": dict(tensor=8)}
FORMATS = ("float32", "bfloat16", "int8")
LATENTS = (21, 60, 104, 16)
GB = 1e9


def abstract_params(mc, mesh, rules, weights):
  """The pure dict `load_bundle` would hold, as ShapeDtypeStructs with their shardings.
  An int8 kernel's values shard like the kernel; its scales [.., 1, out] like its columns."""
  shardings = flatten(conversion_shardings(mc, mesh, rules))
  like = jax.eval_shape(lambda p: quantize(p, weights), nnx.to_pure_dict(abstract_model(mc)[1]))

  def place(path, x):
    sharding = shardings[path]
    if isinstance(x, Int8Weight):
      spec = tuple(sharding.spec) + (None,) * (x.q.ndim - len(sharding.spec))
      scale = NamedSharding(mesh, P(*spec[:-2], None, spec[-1]))
      return Int8Weight(jax.ShapeDtypeStruct(x.q.shape, x.q.dtype, sharding=sharding),
                        jax.ShapeDtypeStruct(x.scale.shape, x.scale.dtype, sharding=scale), x.dtype)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  flat = flatten(like)
  return unflatten({p: place(p, x) for p, x in flat.items()})


def per_device_bytes(tree) -> float:
  return float(sum(np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def analyse(model_name, mesh_name, weights, text_len, num_semantic):
  mc = load_config(os.path.join(REPO, "configs", MODELS[model_name])).model
  mc.attention = "chunked"
  degrees = MESHES[mesh_name]
  devices = int(np.prod(list(degrees.values()) or [1]))
  mesh_cfg = mesh_config(data=1, **degrees)
  mesh = make_mesh(mesh_cfg, jax.devices()[:devices])
  mc = for_mesh(mc, mesh)
  graphdef, state = abstract_model(mc)
  params = abstract_params(mc, mesh, mesh_cfg.rules, weights)
  nnx.replace_by_pure_dict(state, params)
  config = ml_collections.ConfigDict({"model": mc, "edit": edit_config()})
  bundle = EditBundle(nnx.merge(graphdef, state), None, config, mesh=mesh, rules=tuple(mesh_cfg.rules),
                      weights=weights)
  replicated = NamedSharding(mesh, P())
  s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=replicated)
  args = (s(2, text_len, mc.text_dim), s(1, *LATENTS), s(1, *LATENTS), s(1, num_semantic, mc.semantic_dim))
  start = time.perf_counter()
  with bundle.placement():
    run = _make_sampler(bundle, 50, 5.0, 5.0)
    stats = run.lower(state, *args).compile().memory_analysis()
  return {"devices": devices, "params": per_device_bytes(params) / GB,
          "args": stats.argument_size_in_bytes / GB, "temp": stats.temp_size_in_bytes / GB,
          "total": (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
                    + stats.temp_size_in_bytes) / GB,
          "seconds": time.perf_counter() - start}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="14b", help=f"comma-separated from {list(MODELS)}")
  p.add_argument("--meshes", default=",".join(MESHES), help=f"comma-separated from {list(MESHES)}")
  p.add_argument("--weights", default=",".join(FORMATS), help=f"comma-separated from {FORMATS}")
  p.add_argument("--anchors", type=int, default=1)
  p.add_argument("--text-len", type=int, default=512)
  a = p.parse_args()
  split = lambda s: [x for x in s.split(",") if x]
  models, meshes, formats = split(a.models), split(a.meshes), split(a.weights)
  for flag, given, allowed in (("--models", models, MODELS), ("--meshes", meshes, MESHES),
                               ("--weights", formats, FORMATS)):
    bad = [x for x in given if x not in allowed]
    if bad:
      raise ValueError(f"{flag} {bad} unknown; choose from {list(allowed)}")
  print(f"per-device GB (1e9 bytes) of the 50-step guided edit at 480x832x81 "
        f"({2 * 21 * 30 * 52 + 65 * a.anchors} tokens, batch 2), {a.text_len} text tokens")
  print("| model | mesh | devices | weights | params | arguments | temp | total | compile s |")
  print("|---|---|---|---|---|---|---|---|---|")
  for model in models:
    for mesh in meshes:
      for weights in formats:
        try:
          r = analyse(model, mesh, weights, a.text_len, 65 * a.anchors)
        except Exception as e:  # noqa: BLE001 - the reason goes in the table
          reason = " ".join(f"{type(e).__name__}: {e}".split())[:160].replace("|", "/")
          print(f"| {model} | {mesh} | | {weights} | failed: {reason} |||||", flush=True)
          continue
        print(f"| {model} | {mesh} | {r['devices']} | {weights} | {r['params']:.2f} | {r['args']:.2f} | "
              f"{r['temp']:.2f} | {r['total']:.2f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
