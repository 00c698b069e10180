"""Orbax checkpoints: async, atomic, keep-N plus keep-every-K.

Each step directory holds three items:
  state   the train state dict (params, optimizer state, EMA, step), restored straight
          into its sharded layout;
  config  the run's full config as JSON;
  data    the data iterator's state (JSON), so a resumed run continues the exact order.
Stage 2 starts from stage 1 with `restore_params` (params, or EMA params) and a fresh optimizer.
A LoRA run's state also holds the frozen "base" parameters (its params/EMA are adapters);
`restore_params` returns its model with the adapters merged in.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from sama_jax import lora as lora_lib


def checkpoint_manager(directory: str, keep: int = 3, keep_every: int | None = None,
                       async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, keep_period=keep_every, create=True,
                                         enable_async_checkpointing=async_save)
  handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
              "data": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: dict, config: dict, data_state: dict | None,
         force: bool = False) -> bool:
  """Starts saving `step` (asynchronously if the manager is async); True if a save began."""
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config),
      data=ocp.args.JsonSave(data_state or {})), force=force)


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def restore(manager: ocp.CheckpointManager, state_like: dict, shardings: dict, step: int | None = None):
  """Restores (state, config dict, data state) of `step` (default: the latest) into the
  layout `shardings` describes; `state_like` gives shapes and dtypes (arrays or
  ShapeDtypeStructs). Each host reads only its shards."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}")
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(state_like, shardings)), config=ocp.args.JsonRestore(),
      data=ocp.args.JsonRestore()))
  return restored["state"], restored["config"], restored["data"]


def restore_params(directory: str, params_like: dict, shardings: dict, use_ema: bool = False,
                   step: int | None = None) -> dict:
  """Parameters (or their EMA) of a checkpoint written by `save`, in the given layout,
  without reading the optimizer state. For stage handoff (`--init_from`) and inference.
  A LoRA run (saved config lora.rank > 0) gives its base with the adapters (or their EMA)
  merged in."""
  key = "ema" if use_ema else "params"
  step = _step(directory, step)
  lora = read_config(directory, step).get("lora")
  if not lora_lib.enabled(lora):
    return restore_items(directory, {key: params_like}, {key: shardings}, step)[key]
  lora = lora_lib.lora_config(**lora)
  adapters = jax.eval_shape(lambda p: lora_lib.init_lora(p, lora, jax.random.key(0)), params_like)
  items = restore_items(directory, {"base": params_like, key: adapters},
                        {"base": shardings, key: lora_lib.lora_shardings(shardings, adapters)}, step)
  return lora_lib.merge_lora(items["base"], items[key], lora)


def restore_items(directory: str, like: dict, shardings: dict, step: int | None = None) -> dict:
  """The named items of a saved train state ({"params": like, ...}: arrays or
  ShapeDtypeStructs), in the given layout; other items are left on disk."""
  # The PyTree handler (same files as the standard one) can restore part of the tree.
  manager = ocp.CheckpointManager(os.path.abspath(directory), options=ocp.CheckpointManagerOptions(create=False),
                                  item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  step = _step(directory, step)
  target = {k: _abstract(v, shardings[k]) for k, v in like.items()}
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item=target, partial_restore=True, restore_args={
          k: jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings[k]) for k in like})))
  return {k: restored["state"][k] for k in like}


def _step(directory: str, step: int | None) -> int:
  """`step`, or the newest saved step of `directory`."""
  if step is None:
    step = ocp.CheckpointManager(os.path.abspath(directory),
                                 options=ocp.CheckpointManagerOptions(create=False)).latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  return step


def read_config(directory: str, step: int | None = None) -> dict:
  """The config a checkpoint was written with (the `config` item), as a dict."""
  manager = checkpoint_manager(directory, async_save=False)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def read_state(directory: str, step: int | None = None) -> dict:
  """The saved train state as written, on the default device (for inspection and tools;
  training restores with `restore` into its sharded layout)."""
  manager = checkpoint_manager(directory, async_save=False)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  # Target the default device explicitly: the writer's device layout may not exist here.
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  metadata = manager.item_metadata(step)["state"]
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata,
                        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
