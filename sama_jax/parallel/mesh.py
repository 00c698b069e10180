"""Mesh construction from config, one config for a CPU, a GPU box, a TPU slice or a
multi-slice / multi-node job; only the degrees change.

Axes: data (pure data parallel), fsdp (data parallel with sharded weights and optimizer
state), context (sequence), tensor (heads / mlp). A degree of -1 takes the devices left
over. dcn_* degrees split an axis across slices (TPU multi-slice) or nodes (GPU clusters).
"""

from __future__ import annotations

import math

import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

MESH_AXES = ("data", "fsdp", "context", "tensor")

# logical name -> mesh axes. Activations: batch over (data, fsdp), sequence over context,
# heads and mlp over tensor. Weights: embed over fsdp (ZeRO-3 style), heads/mlp over tensor.
DEFAULT_RULES = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", "context"),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
)


def mesh_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data, c.fsdp, c.context, c.tensor = -1, 1, 1, 1
  c.dcn_data, c.dcn_fsdp, c.dcn_context, c.dcn_tensor = 1, 1, 1, 1
  c.rules = DEFAULT_RULES
  c.update(overrides)
  return c


def resolve_degrees(degrees: dict, total: int) -> tuple[int, ...]:
  """Fills one -1 with what is left so the product equals `total` devices."""
  free = [a for a in MESH_AXES if degrees[a] == -1]
  if len(free) > 1:
    raise ValueError(f"mesh degrees {degrees}: at most one axis may be -1, got {free}")
  fixed = math.prod(degrees[a] for a in MESH_AXES if degrees[a] != -1)
  if any(degrees[a] == 0 or degrees[a] < -1 for a in MESH_AXES):
    raise ValueError(f"mesh degrees {degrees} must be positive (or -1 for 'the rest')")
  if free:
    if total % fixed:
      raise ValueError(f"mesh degrees {degrees}: {total} devices are not divisible by {fixed}")
    degrees = {**degrees, free[0]: total // fixed}
  shape = tuple(degrees[a] for a in MESH_AXES)
  if math.prod(shape) != total:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices; "
                     f"there are {total}")
  return shape


def make_mesh(config, devices=None) -> Mesh:
  """The device mesh for `config` (a mesh_config) over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  dcn = tuple(config[f"dcn_{a}"] for a in MESH_AXES)
  slices = math.prod(dcn)
  if len(devices) % slices:
    raise ValueError(f"{len(devices)} devices cannot be split into {slices} slices/nodes (dcn degrees {dcn})")
  per_slice = resolve_degrees({a: config[a] for a in MESH_AXES}, len(devices) // slices)
  if slices > 1:
    array = mesh_utils.create_hybrid_device_mesh(per_slice, dcn, devices)
  else:
    try:
      array = mesh_utils.create_device_mesh(per_slice, devices)
    except (AssertionError, NotImplementedError, ValueError):  # e.g. faked CPU devices
      array = np.asarray(devices).reshape(per_slice)
  return Mesh(array, MESH_AXES)
