"""From logical axis names to shardings: parameters, train state and batches."""

from __future__ import annotations

import jax
import numpy as np
from flax import linen as nn
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def logical_to_sharding(spec: P, mesh: Mesh, rules) -> NamedSharding:
  return nn.logical_to_mesh_sharding(spec, mesh, tuple(rules))


def state_shardings(state: nnx.State, mesh: Mesh, rules) -> dict:
  """NamedShardings for an NNX state, as a pure dict, from each variable's logical
  `out_sharding` names; variables without names are replicated. Reads the names
  themselves, so an ambient `logical_axis_rules` context cannot apply them twice."""
  out = {}
  for path, variable in nnx.to_flat_state(state):
    names = variable.get_metadata().get("out_sharding") or ()
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = logical_to_sharding(P(*names), mesh, rules)
  return out


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Examples over (data, fsdp); everything else replicated."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Assembles each process's share of the batch into global arrays sharded over the
  batch axes. `local` holds NumPy arrays with this process's examples."""
  sharding = batch_sharding(mesh)
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  for key, value in local.items():
    examples = np.shape(value)[0] * jax.process_count()
    if examples % ways:
      raise ValueError(f"a batch of {examples} examples ({key!r}) cannot be split over data x fsdp = {ways} "
                       f"devices; make the batch sizes multiples of {ways} or change the mesh")
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
