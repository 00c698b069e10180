"""Trainer workdirs as conversion ends: write converted parameters as a step-0 trainer
checkpoint, read a workdir's parameters (or EMA) back for export.

A workdir is `WORKDIR/checkpoints/<step>/{state,config,data}` (sama_jax/train/checkpoint.py);
state = {"step", "params", "opt_state", "ema"}.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from sama_jax.config import model_config
from sama_jax.convert.trees import flatten, unflatten
from sama_jax.models import SamaDiT
from sama_jax.train import checkpoint as ckpt
from sama_jax.train.optimizer import make_optimizer


def fresh_train_state(params: dict, train_config) -> dict:
  """The state `create_train_state(..., params=params)` builds (step 0, fresh optimizer,
  EMA = params), without its memory: the EMA is the params' own arrays, and every
  optimizer leaf of the trainer's AdamW (moments, counts, accumulators) starts at zero,
  so each is a read-only zero view that allocates nothing."""
  optimizer = make_optimizer(train_config, params)
  abstract = jax.eval_shape(optimizer.init, params)
  opt_state = jax.tree.map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), abstract)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": opt_state,
          "ema": params if train_config.ema_decay else None}


def _low_memory_manager(run_dir: str, largest_leaf_bytes: int) -> ocp.CheckpointManager:
  """A manager writing the same items as `checkpoint.checkpoint_manager` (state, config,
  data), tuned so a save adds well under one model copy of host memory: arrays are written
  a few at a time (Orbax's default lets 96 GB be in flight at once) and NumPy leaves (the
  zero optimizer views) are written from the caller's array, not a deep copy of each."""
  registry = ocp.type_handlers.create_type_handler_registry(
      (int, ocp.type_handlers.ScalarHandler()), (float, ocp.type_handlers.ScalarHandler()),
      (np.number, ocp.type_handlers.ScalarHandler()),
      (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
      (jax.Array, ocp.type_handlers.ArrayHandler()))
  # Orbax refuses a single array above the limit, so it is the largest leaf plus a margin.
  state = ocp.PyTreeCheckpointHandler(save_concurrent_gb=(largest_leaf_bytes + 2**20) / 1e9,
                                      type_handler_registry=registry)
  options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
  return ocp.CheckpointManager(run_dir, options=options, item_handlers={
      "state": state, "config": ocp.JsonCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})


def write_trainer_checkpoint(workdir: str, params: dict, config, step: int = 0) -> str:
  """Writes `params` with `config` (a ConfigDict with .model and .train) as the checkpoint
  of `step` in `workdir`, in the trainer's format; returns the step folder. Refuses a
  workdir that already has checkpoints."""
  return write_train_state(workdir, fresh_train_state(params, config.train), config, step)


def write_train_state(workdir: str, state: dict, config, step: int = 0) -> str:
  """Writes a train state dict (host arrays, or global arrays that every process passes
  together: each process writes its own shards, process 0 the config) as the checkpoint of
  `step` in `workdir`; returns the step folder. Refuses a workdir that already has checkpoints."""
  run_dir = os.path.abspath(os.path.join(workdir, "checkpoints"))
  if os.path.isdir(run_dir) and os.listdir(run_dir):
    raise FileExistsError(f"--out {workdir!r} already holds checkpoints ({sorted(os.listdir(run_dir))[:5]}); "
                          "choose a new workdir")
  if jax.process_count() > 1:  # every process has looked before any starts writing
    multihost_utils.sync_global_devices("sama_jax.convert: workdir checked")
  manager = _low_memory_manager(run_dir, max(x.nbytes for x in jax.tree.leaves(state)))
  manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                             config=ocp.args.JsonSave(config.to_dict()),
                                             data=ocp.args.JsonSave({})))
  manager.wait_until_finished()
  manager.close()
  return os.path.join(run_dir, str(step))


def _leaves_by_path(tree) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {jax.tree_util.keystr(path): tuple(x.shape) for path, x in leaves}


def check_matches(saved, like, what: str) -> None:
  """Raises ValueError naming the first parameter whose saved shape the config does not give."""
  saved, like = _leaves_by_path(saved), _leaves_by_path(like)
  for path in sorted(set(saved) | set(like)):
    if saved.get(path) != like.get(path):
      raise ValueError(f"{what}: parameter {path} is {saved.get(path, 'absent')} in the checkpoint but the "
                       f"saved model config gives {like.get(path, 'absent')}; the config does not match the "
                       "checkpoint")


def trainer_step(workdir: str, use_ema: bool | None = None, step: int | None = None):
  """(run dir, model config, "ema" or "params", step) of a trainer workdir, checked against
  its saved shapes, without reading any parameter. use_ema None: the EMA where the run kept
  one, else the raw parameters."""
  if not os.path.exists(workdir):
    raise FileNotFoundError(f"--checkpoint {workdir!r} does not exist")
  run_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(run_dir):
    raise FileNotFoundError(f"--checkpoint {workdir!r} is not a trainer workdir: it has no checkpoints/ "
                            "folder (for a PyTorch checkpoint use from-torch first)")
  manager = ckpt.checkpoint_manager(run_dir, async_save=False)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"--checkpoint {workdir!r} has no saved step under checkpoints/")
  saved = ckpt.read_config(run_dir, step)
  if "model" not in saved:
    raise ValueError(f"the config saved in {workdir!r} (step {step}) has no model section")
  mc = model_config(**saved["model"])
  metadata = manager.item_metadata(step)["state"]
  has_ema = metadata.get("ema") is not None
  if use_ema and not has_ema:
    raise ValueError(f"{workdir!r} step {step} has no EMA parameters (trained with train.ema_decay=0); "
                     "export the raw ones with --no-ema")
  key = "ema" if (has_ema if use_ema is None else use_ema) else "params"
  # A LoRA run's params/EMA are adapters; its model is the frozen base they merge into.
  model = metadata.get("base")
  check_matches(metadata[key] if model is None else model, _params_like(mc), f"{workdir!r} step {step}")
  return run_dir, mc, key, step


def _params_like(mc) -> dict:
  return nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: SamaDiT(mc, nnx.Rngs(0))), nnx.Param))


def read_trainer_params(workdir: str, use_ema: bool | None = None, step: int | None = None):
  """(params pure dict, model config, "ema" or "params", step) of a trainer workdir.
  use_ema None: the EMA where the run kept one, else the raw parameters."""
  run_dir, mc, key, step = trainer_step(workdir, use_ema, step)
  like = _params_like(mc)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  params = ckpt.restore_params(run_dir, like, jax.tree.map(lambda _: device, like), use_ema=key == "ema",
                               step=step)
  return params, mc, key, step


def host_leaf_reader(run_dir: str, step: int, key: str):
  """A function: list of '.'-joined parameter paths (as `trees.flatten` names them) ->
  {path: NumPy array} of those parameters of `state[key]` at `step`; nothing else is read.
  Process-local: it synchronises with no other process, so each process may read a
  different set."""
  here = {jax.process_index()}
  local = ocp.options.MultiprocessingOptions(primary_host=None, active_processes=here)
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=local),
                                  multiprocessing_options=local)
  directory = os.path.join(run_dir, str(step), "state")
  flat = flatten(checkpointer.metadata(directory).item_metadata.tree[key])

  def read(paths: list[str]) -> dict:
    target = unflatten({p: flat[p] for p in paths})
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target,
                        is_leaf=lambda x: hasattr(x, "shape"))
    restored = checkpointer.restore(directory, args=ocp.args.PyTreeRestore(
        item={key: target}, restore_args={key: args}, partial_restore=True))
    return flatten(restored[key])

  return read
