"""Small building blocks shared by the models: parameters with logical axis names,
float32 norms, and activation sharding constraints.

Logical names (`embed`, `heads`, `mlp`, `layers`, ...) are mapped to mesh axes by the
rules in config (see `sama_jax.parallel`); outside a mesh they are inert metadata.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

from sama_jax.models import quant

Names = Sequence[str | None]


def logical(names: Names) -> dict:
  """Variable metadata carrying logical axis names, applied later under a mesh."""
  return {"out_sharding": tuple(names), "eager_sharding": False}


def dense(in_features: int, out_features: int, names: Names, config, rngs: nnx.Rngs,
          kernel_init=nnx.initializers.xavier_uniform(), use_bias: bool = True) -> nnx.Linear:
  """A Linear whose kernel [in, out] carries `names` and computes in config.dtype."""
  return nnx.Linear(
      in_features, out_features, use_bias=use_bias,
      dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype),
      kernel_init=kernel_init, bias_init=nnx.initializers.zeros_init(),
      kernel_metadata=logical(names), bias_metadata=logical(names[-1:]),
      rngs=rngs)


def layer_norm(features: int, eps: float, config, rngs: nnx.Rngs, affine: bool = True,
               name: str = "embed") -> nnx.LayerNorm:
  """LayerNorm computed in float32 (torch's two-pass variance, for parity)."""
  return nnx.LayerNorm(
      features, epsilon=eps, use_scale=affine, use_bias=affine, use_fast_variance=False,
      dtype=jnp.float32, param_dtype=jnp.dtype(config.param_dtype),
      scale_metadata=logical((name,)), bias_metadata=logical((name,)), rngs=rngs)


def rms_norm(features: int, eps: float, config, rngs: nnx.Rngs, name: str = "heads") -> nnx.RMSNorm:
  """RMSNorm over the whole feature axis, computed in float32."""
  return nnx.RMSNorm(
      features, epsilon=eps, dtype=jnp.float32, param_dtype=jnp.dtype(config.param_dtype),
      scale_metadata=logical((name,)), rngs=rngs)


def param(init, shape: tuple[int, ...], names: Names, config, rngs: nnx.Rngs) -> nnx.Param:
  """A raw parameter of `shape` with logical `names`."""
  value = init(rngs.params(), shape, jnp.dtype(config.param_dtype))
  return nnx.Param(value, **logical(names))


def constrain(x: jax.Array, names: Names) -> jax.Array:
  """Sharding constraint by logical axis names; a no-op outside a mesh with rules."""
  return nn.with_logical_constraint(x, tuple(names))


def modulate(x: jax.Array, norm: nnx.Module, shift: jax.Array, scale: jax.Array) -> jax.Array:
  """norm(x) * (1 + scale) + shift in float32, cast back to x.dtype.

  x: [B, L, D]; shift, scale: [B, 1, D] float32.
  """
  return (norm(x.astype(jnp.float32)) * (1.0 + scale) + shift).astype(x.dtype)


def gelu_tanh(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=True)


def gelu_erf(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=False)


REMAT_POLICIES = ("none", "full", "dots_saveable", "offload_dots")


def remat_policy(name: str):
  """Maps a config name to a `jax.checkpoint` policy."""
  if name not in REMAT_POLICIES:
    raise ValueError(f"model.remat={name!r}; expected one of {REMAT_POLICIES}")
  return {
      "none": None,
      "full": jax.checkpoint_policies.nothing_saveable,
      "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
      "offload_dots": jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
  }[name]


def run_stacked(stacked: nnx.Module, x: jax.Array, call: Callable, *, remat: str = "none",
                scan: bool = True) -> jax.Array:
  """Applies the layers of `stacked` (created with nnx.vmap: a leading `layers` axis on
  every parameter) to x in order, `x = call(layer, x)`, with `jax.lax.scan` or a Python
  loop, each layer under the remat policy. Int8 kernels (`quant.Int8Weight`) are
  dequantized one layer at a time, inside the loop."""
  graphdef, state = nnx.split(stacked)

  def body(x, layer_state):
    return call(nnx.merge(graphdef, quant.dequantize(layer_state)), x), None

  remat_policy(remat)  # validates the name
  if remat != "none":
    body = jax.checkpoint(body, policy=remat_policy(remat), prevent_cse=not scan)
  if scan:
    return jax.lax.scan(body, x, state)[0]
  for i in range(jax.tree.leaves(state)[0].shape[0]):
    x, _ = body(x, jax.tree.map(lambda a: a[i], state))
  return x
