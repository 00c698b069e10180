"""From logical axis names to shardings: parameters, train state and batches."""

from __future__ import annotations

import jax
import numpy as np
from flax import linen as nn
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def logical_to_sharding(spec: P, mesh: Mesh, rules) -> NamedSharding:
  return nn.logical_to_mesh_sharding(spec, mesh, tuple(rules))


def state_shardings(state: nnx.State, mesh: Mesh, rules):
  """NamedShardings for an NNX state from its variables' logical `out_sharding` names;
  variables without names are replicated."""
  specs = nnx.get_partition_spec(state)
  return jax.tree.map(lambda s: logical_to_sharding(s if isinstance(s, P) else P(), mesh, rules), specs,
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Examples over (data, fsdp); everything else replicated."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Assembles each process's share of the batch into global arrays sharded over the
  batch axes. `local` holds NumPy arrays with this process's examples."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
