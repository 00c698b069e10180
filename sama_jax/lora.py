"""LoRA adapters on the DiT's linear kernels: W' = W + (alpha / rank) · A @ B.

Adapters mirror the parameter tree: the kernel at path `dit.blocks.attn1.to_q.kernel`
([layers, in, out] when stacked, else [in, out]) gets

    lora[...]["to_q"]["kernel"] = {"lora_a": [layers, in, r], "lora_b": [layers, r, out]}

A starts like PEFT's default (Kaiming-uniform, bound 1/sqrt(in)) and B at zero, so the
adapted model starts equal to the base model exactly.

The model always runs on merged kernels (`apply_lora`, inside the jitted loss). Merging
costs in·out·r multiply-adds per matrix and step, negligible next to the activations'
matmuls (2·tokens·in·out); its backward materialises each targeted kernel's gradient
[in, out] once (as full fine-tuning does), but optimizer moments and the EMA exist for the
adapters only. Merging in a bfloat16 base rounds small updates away: keep
model.param_dtype float32 for LoRA training (the adapters are always float32). With LoRA,
train.trainable filters the adapter paths ("dit.blocks.attn1.to_q.kernel.lora_a").
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

from sama_jax.train.optimizer import path_name

# Self- and cross-attention q, k, v, o and both FFN linears of every block.
DEFAULT_TARGETS = r"dit\.blocks\.((attn1|attn2)\.(to_q|to_k|to_v|to_out)|ffn\.(proj_in|proj_out))\.kernel"
A, B = "lora_a", "lora_b"


def lora_config(**overrides) -> ml_collections.ConfigDict:
  """LoRA fine-tuning options; rank 0 trains every parameter as usual."""
  c = ml_collections.ConfigDict()
  c.rank = 0  # 0: off (full fine-tuning, train.trainable decides)
  c.alpha = 0.0  # the update is scaled by alpha / rank; 0 means alpha = rank (scale 1)
  c.targets = DEFAULT_TARGETS  # regex (re.fullmatch) over kernel paths like "dit.blocks.ffn.proj_in.kernel"
  c.seed = 0  # initialisation of the A matrices
  c.update(overrides)
  if not isinstance(c.rank, int) or c.rank < 0:
    raise ValueError(f"lora.rank={c.rank!r}; expected an int >= 0 (0 turns LoRA off)")
  if c.alpha < 0:
    raise ValueError(f"lora.alpha={c.alpha}; expected >= 0 (0 means alpha = rank)")
  return c


def enabled(c) -> bool:
  """True for a LoRA config with rank > 0 (None or a missing section: off)."""
  return c is not None and int(c.get("rank", 0)) > 0


def scale(c) -> float:
  """alpha / rank, the factor on A @ B."""
  return (c.alpha or c.rank) / c.rank


def targets(params, c) -> dict[str, tuple[int, ...]]:
  """{path: kernel shape} of the parameters LoRA adapts. Raises ValueError where the regex
  matches nothing or matches a parameter that is not a linear kernel."""
  regex = re.compile(c.targets)
  found = {}
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_name(path)
    if not regex.fullmatch(name):
      continue
    if not name.endswith(".kernel") or x.ndim not in (2, 3):
      raise ValueError(f"lora.targets={c.targets!r} matches {name!r} {tuple(x.shape)}; LoRA adapts linear "
                       "kernels only ([in, out], or [layers, in, out] when stacked)")
    if c.rank > min(x.shape[-2:]):
      raise ValueError(f"lora.rank={c.rank} exceeds the smaller side of {name!r} {tuple(x.shape)}")
    found[name] = tuple(x.shape)
  if not found:
    example = path_name(jax.tree_util.tree_flatten_with_path(params)[0][0][0])
    raise ValueError(f"lora.targets={c.targets!r} matches no parameter; paths look like {example!r}")
  return found


def _node(tree: dict, name: str) -> dict:
  """The dict at '.'-path `name` of a nested dict, created where missing."""
  for key in name.split("."):
    tree = tree.setdefault(key, {})
  return tree


def _leaves(lora: dict, prefix: str = ""):
  """(kernel path, {"lora_a", "lora_b"}) for every adapter in the tree."""
  if A in lora:
    yield prefix.rstrip("."), lora
    return
  for key, value in lora.items():
    yield from _leaves(value, f"{prefix}{key}.")


def init_lora(params: dict, c, rng: jax.Array) -> dict:
  """Adapters for every targeted kernel of `params` (arrays or ShapeDtypeStructs), float32:
  A ~ U(±1/sqrt(in)) [..., in, r], B = 0 [..., r, out]."""
  lora = {}
  for i, (name, shape) in enumerate(sorted(targets(params, c).items())):
    *lead, fan_in, fan_out = shape
    bound = fan_in ** -0.5
    node = _node(lora, name)
    node[A] = jax.random.uniform(jax.random.fold_in(rng, i), (*lead, fan_in, c.rank), jnp.float32, -bound, bound)
    node[B] = jnp.zeros((*lead, c.rank, fan_out), jnp.float32)
  return lora


def delta(adapter: dict, c) -> jax.Array:
  """(alpha / rank) · A @ B, float32: [..., in, out]."""
  return scale(c) * jnp.einsum("...ir,...ro->...io", adapter[A], adapter[B])


def apply_lora(params: dict, lora: dict, c) -> dict:
  """`params` with every adapted kernel replaced by W + (alpha / rank) · A @ B (computed in
  float32, cast to W's dtype). Pure and differentiable: the jitted loss calls it."""
  updates = dict(_leaves(lora))

  def visit(tree, prefix):
    out = {}
    for key, value in tree.items():
      name = f"{prefix}{key}"
      if isinstance(value, dict):
        out[key] = visit(value, name + ".")
      elif name in updates:
        out[key] = (value.astype(jnp.float32) + delta(updates.pop(name), c)).astype(value.dtype)
      else:
        out[key] = value
    return out

  merged = visit(params, "")
  if updates:
    raise ValueError(f"LoRA adapters for {sorted(updates)[:5]} have no kernel in the parameters")
  return merged


def merge_lora(params: dict, lora: dict, c) -> dict:
  """`apply_lora` for inference and export: jitted with the base parameters donated, so the
  merged model takes the base's memory rather than a second copy."""
  return jax.jit(lambda p, l: apply_lora(p, l, c), donate_argnums=0)(params, lora)


def lora_shardings(param_shardings: dict, lora: dict) -> dict:
  """Adapter shardings from their kernels': A [.., in, r] shards like the kernel's `in`
  axis, B [.., r, out] like its `out` axis; the layer axis as the kernel's; r replicated."""
  out = {}
  flat = {path_name(p): s for p, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]}
  for name, adapter in _leaves(lora):
    s, ndim = flat[name], adapter[A].ndim
    node = _node(out, name)
    if not isinstance(s, NamedSharding):
      node[A] = node[B] = s
      continue
    spec = tuple(s.spec) + (None,) * (ndim - len(s.spec))
    node[A] = NamedSharding(s.mesh, PartitionSpec(*spec[:-1], None))
    node[B] = NamedSharding(s.mesh, PartitionSpec(*spec[:-2], None, spec[-1]))
  return out


def adapter_leaves(lora: dict) -> dict[str, dict]:
  """{kernel path: {"lora_a": A, "lora_b": B}}, for export."""
  return dict(_leaves(lora))
