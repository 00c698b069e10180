"""from-torch on several processes: the DiT and its fresh train state as global arrays.

Each parameter is read whole by every process (one at a time) and kept only as the shards
this process's devices hold, laid out by the model's logical axis names over a mesh of
all devices (fsdp over everything), so a process holds about 1/N of the model, plus one
parameter being staged. The fresh optimizer state is born sharded the same way (real
zeros, unlike the single-process zero views: with N processes each holds 3/N of the model
in parameters and moments); the EMA is the parameters' own arrays. Orbax then writes every
process's shards together.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from sama_jax.convert.dit import torch_dit_params
from sama_jax.convert.trees import flatten, unflatten
from sama_jax.parallel.mesh import DEFAULT_RULES, make_mesh, mesh_config
from sama_jax.parallel.sharding import replicated
from sama_jax.train.optimizer import make_optimizer
from sama_jax.train.state import abstract_model, param_shardings


def conversion_mesh() -> jax.sharding.Mesh:
  """fsdp over every device of every process: the most memory each host can shed."""
  return make_mesh(mesh_config(data=1, fsdp=-1))


def conversion_shardings(mc, mesh, rules=DEFAULT_RULES) -> dict:
  """The model's parameter shardings over `mesh` by `rules` (pure dict), with any dimension
  the mesh does not divide evenly replicated instead: a conversion takes any device count."""
  like = flatten(nnx.to_pure_dict(abstract_model(mc)[1]))

  def ways(axes) -> int:
    return math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))

  def fitted(path, sharding):
    shape = like[path].shape
    spec = [None if axes is not None and shape[d] % ways(axes) else axes for d, axes in enumerate(sharding.spec)]
    return NamedSharding(mesh, P(*spec))

  return unflatten({p: fitted(p, s) for p, s in flatten(param_shardings(mc, mesh, rules)).items()})


def sharded_dit_params(path: str, mc, mesh, progress=None, rules=DEFAULT_RULES) -> dict:
  """Pure dict of global arrays, the parameters `load_torch_dit` reads, sharded over `mesh`."""
  shardings = flatten(conversion_shardings(mc, mesh, rules))
  flat = {}
  for ours, full in torch_dit_params(path, mc, progress=progress):
    # A copy per shard: a view would keep the whole staged parameter alive.
    flat[ours] = jax.make_array_from_callback(full.shape, shardings[ours], lambda index, full=full: np.array(full[index]))
    del full
  return unflatten(flat)


def sharded_fresh_state(params: dict, mc, train_config, mesh) -> dict:
  """The step-0 train state of `params` (global arrays), as `create_train_state` lays it
  out: optimizer moments shard like their parameters, everything else is replicated."""
  p_shard = conversion_shardings(mc, mesh)
  optimizer = make_optimizer(train_config, params)
  abstract = jax.eval_shape(optimizer.init, params)
  o_shard = optax.tree_map_params(
      optimizer, lambda p, s: p if isinstance(p, optax.MaskedNode) else s, abstract, p_shard,
      transform_non_params=lambda _: replicated(mesh), is_leaf=lambda x: isinstance(x, optax.MaskedNode))
  opt_state = jax.jit(optimizer.init, out_shardings=o_shard)(params)
  step = jax.jit(lambda: jnp.zeros((), jnp.int32), out_shardings=replicated(mesh))()
  return {"step": step, "params": params, "opt_state": opt_state,
          "ema": params if train_config.ema_decay else None}
