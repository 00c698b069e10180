"""The train state, a plain dict born sharded:

    {"step": int32 [], "params": {...}, "opt_state": ..., "ema": {...} or None}

Parameters are NNX pure dicts (nested dicts of arrays); `nnx.merge(graphdef, params)`
rebuilds the model inside jitted code. With LoRA (lora.rank > 0) "params", "opt_state"
and "ema" hold the adapters only (sama_jax/lora.py) and the frozen model is a fourth item,
"base"; checkpoints save both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from sama_jax import lora as lora_lib
from sama_jax.models import SamaDiT
from sama_jax.parallel.sharding import replicated, state_shardings
from sama_jax.train.optimizer import make_optimizer


def abstract_model(model_config):
  """(graphdef, abstract Param state with logical-axis metadata) without allocating.

  Built outside any active mesh: under one, NNX would read the logical names as mesh axes."""
  with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), ())):
    return nnx.split(nnx.eval_shape(lambda: SamaDiT(model_config, nnx.Rngs(0))), nnx.Param)


def param_shardings(model_config, mesh: Mesh, rules):
  _, abstract = abstract_model(model_config)
  return state_shardings(abstract, mesh, rules)


def create_train_state(model_config, train_config, mesh: Mesh, rules, params=None, lora=None):
  """Builds (graphdef, optimizer, state, state_shardings). Parameters are initialised from
  train_config.seed inside one jitted function whose outputs are already sharded, or taken
  from `params` (a pure dict, e.g. converted from PyTorch) and placed on the mesh. With a
  `lora` config of rank > 0 they become the frozen "base" and fresh adapters are trained."""
  graphdef, _ = abstract_model(model_config)
  p_shard = param_shardings(model_config, mesh, rules)

  def init_params():
    return nnx.to_pure_dict(nnx.state(SamaDiT(model_config, nnx.Rngs(train_config.seed)), nnx.Param))

  if params is None:
    params = jax.jit(init_params, out_shardings=p_shard)()
  else:
    params = jax.device_put(params, p_shard)
  if lora_lib.enabled(lora):
    base, base_shard = params, p_shard
    init = lambda p: lora_lib.init_lora(p, lora, jax.random.key(lora.seed))
    p_shard = lora_lib.lora_shardings(base_shard, jax.eval_shape(init, base))
    params = jax.jit(init, out_shardings=p_shard)(base)
  optimizer = make_optimizer(train_config, params)

  def init_rest(params):
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params),
            "ema": params if train_config.ema_decay else None}

  abstract = jax.eval_shape(init_rest, params)
  shardings = {
      "step": replicated(mesh), "params": p_shard,
      # Optimizer moments shard like their parameters; frozen parameters have none (MaskedNode).
      "opt_state": optax.tree_map_params(
          optimizer, lambda p, s: p if isinstance(p, optax.MaskedNode) else s, abstract["opt_state"], p_shard,
          transform_non_params=lambda _: replicated(mesh), is_leaf=lambda x: isinstance(x, optax.MaskedNode)),
      "ema": p_shard if train_config.ema_decay else None,
  }
  state = jax.jit(init_rest, out_shardings=shardings, donate_argnums=0)(params)
  if lora_lib.enabled(lora):
    state["base"], shardings["base"] = base, base_shard
  return graphdef, optimizer, state, shardings
