"""Nested parameter dicts (NNX pure dicts) <-> flat {'a.b.c': array} dicts."""

from __future__ import annotations


def flatten(tree: dict, prefix: str = "") -> dict:
  """{'a': {'b': x}} -> {'a.b': x}."""
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    out.update(flatten(value, path + ".") if isinstance(value, dict) else {path: value})
  return out


def unflatten(flat: dict) -> dict:
  """Inverse of `flatten`; numeric parts become the int keys of nnx.List entries."""
  tree = {}
  for path, value in flat.items():
    *parents, leaf = (int(p) if p.isdigit() else p for p in path.split("."))
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def merge_filled(graphdef, state, values: dict, source: str):
  """The module of `graphdef` with its abstract `state` filled from `values` ({flat name:
  array}); every parameter must have a value (the error names those that do not)."""
  from flax import nnx

  left = sorted(set(flatten(nnx.to_pure_dict(state))) - set(values))
  if left:
    raise ValueError(f"parameters not filled from {source!r}: {left[:10]}")
  nnx.replace_by_pure_dict(state, unflatten(values))
  return nnx.merge(graphdef, state)
