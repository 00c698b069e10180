"""The jitted training step: flow matching on the target latents plus the semantic loss
on the anchor slots (SAMA_METHOD.md §5.4–5.6).

A batch is a dict of arrays with the examples on axis 0:
  latents  [B, F, H, W, C]   clean target latents x0 (normalised VAE latents)
  text     [B, L, D_text]    umT5 embeddings
  source   [B, Fs, H, W, C]  clean source latents (optional: absent for plain T2V)
  semantic [B, N, D_sem]     clean SigLIP anchor tokens s0 (optional)
  task     [B] int32         index into train_config.task_names (per-task metrics, train.task_weights)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sama_jax import lora as lora_lib
from sama_jax.diffusion.flow import (X0_SIGMA_MIN, batch_broadcast, interpolate, semantic_loss,
                                     velocity_from_x0, velocity_target)
from sama_jax.diffusion.schedule import NUM_TRAIN_TIMESTEPS, sample_training_sigmas
from sama_jax.parallel.sharding import batch_sharding
from sama_jax.train.config import task_weight_vector


EDIT_THRESHOLD = 0.05  # |target − source| above this (latent units) counts as edited


def edit_weights(x0: jax.Array, source: jax.Array | None, edit_weight: float,
                 area_normalised: bool = False) -> jax.Array | float:
  """Per-element flow-loss weights 1 + edit_weight · [|x0 − source| > EDIT_THRESHOLD]
  (train.edit_weight; 0, the paper's plain loss, gives 1). An edit that touches a few
  percent of the latents is a few percent of a plain loss, which the copy term drowns
  (docs/results.md, finding 10). With `area_normalised` (train.edit_area_norm) the edit
  term of each example is divided by the share of its latents the edit changes, so the
  mean loss is (copy term) + edit_weight · (mean error over the edited latents): a small
  object's recolour weighs as much as a new background (finding 14).
  [B, F, H, W, C], or 1 without a same-shaped source."""
  if not edit_weight or source is None or source.shape != x0.shape:
    return 1.0
  edited = (jnp.abs(x0.astype(jnp.float32) - source.astype(jnp.float32)) > EDIT_THRESHOLD).astype(jnp.float32)
  if area_normalised:
    share = jnp.mean(edited, axis=tuple(range(1, edited.ndim)), keepdims=True)
    edited = edited / jnp.maximum(share, 1.0 / edited[0].size)
  return 1.0 + edit_weight * edited


def compute_loss(model, batch: dict, rng: jax.Array, c):
  """Total loss and its parts for one batch. Returns (loss, aux dict)."""
  x0 = batch["latents"]
  b = x0.shape[0]
  k_sigma, k_noise, k_sem = jax.random.split(rng, 3)
  sigma, weight = sample_training_sigmas(k_sigma, b, c.timestep_shift, c.per_sample_timesteps, c.loss_weighting)
  noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
  s0 = batch.get("semantic")
  s_noise = None if s0 is None else jax.random.normal(k_sem, s0.shape, jnp.float32)
  x_t = interpolate(x0, noise, sigma)
  s_t = None if s0 is None else interpolate(s0, s_noise, sigma)
  out, s_out = model(x_t, NUM_TRAIN_TIMESTEPS * sigma, batch["text"], source=batch.get("source"), semantic=s_t)
  velocity, s_pred, scale = out, s_out, None
  if model.config.get("prediction", "velocity") == "x0":
    # Velocity loss on x0 predictions: error / max(σ, floor), i.e. both velocities over the
    # held divisor (JiT); the semantic "x0_l1" target reads the predicted tokens themselves.
    held = jnp.maximum(sigma, c.get("x0_sigma_floor", X0_SIGMA_MIN))
    scale = sigma / held
    velocity = velocity_from_x0(out, x_t, held)
    if s0 is not None and c.semantic_target == "velocity":
      s_pred = velocity_from_x0(s_out, s_t, held)
  target = velocity_target(x0, noise)
  if scale is not None:
    target = target * batch_broadcast(scale, target)
  err = jnp.square(velocity - target) * edit_weights(x0, batch.get("source"), c.get("edit_weight", 0.0),
                                                        c.get("edit_area_norm", False))
  per_example = jnp.mean(err.reshape(b, -1), axis=1) * weight  # [B]
  task = batch.get("task", jnp.zeros((b,), jnp.int32))
  flow = jnp.mean(per_example * jnp.asarray(task_weight_vector(c), jnp.float32)[task])
  sem = jnp.zeros(()) if s0 is None else semantic_loss(s_pred, s0, s_noise, c.semantic_target, scale)
  loss = flow + c.semantic_weight * sem
  onehot = jax.nn.one_hot(task, len(c.task_names), dtype=jnp.float32)  # [B, K]
  aux = {"loss_flow": flow, "loss_semantic": sem, "sigma_mean": jnp.mean(sigma),
         "task_loss_sum": onehot.T @ per_example, "task_count": onehot.sum(0)}
  return loss, aux


def make_train_step(graphdef, optimizer: optax.GradientTransformation, train_config, lora=None):
  """train_step(state, batch, rng, learning_rate) -> (state, metrics), pure; jit it with
  shardings. `learning_rate` (float32 scalar) is this step's rate from
  `optimizer.learning_rate_table` (the optimizer runs at rate 1; make_optimizer). With a
  `lora` config of rank > 0, state["params"] are the adapters, merged into the frozen
  state["base"] inside the loss."""
  c = train_config

  def train_step(state, batch, rng, learning_rate):
    rng = jax.random.fold_in(rng, state["step"])

    def loss_fn(params):
      if lora_lib.enabled(lora):
        params = lora_lib.apply_lora(state["base"], params, lora)
      return compute_loss(nnx.merge(graphdef, params), batch, rng, c)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    updates = jax.tree.map(lambda u: learning_rate * u, updates)
    params = optax.apply_updates(state["params"], updates)
    ema = state["ema"]
    if ema is not None:
      ema = jax.tree.map(lambda e, p: c.ema_decay * e + (1.0 - c.ema_decay) * p, ema, params)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads),
               "learning_rate": learning_rate}
    frozen = {"base": state["base"]} if lora_lib.enabled(lora) else {}
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "ema": ema, **frozen}, metrics

  return train_step


def jit_train_step(graphdef, optimizer: optax.GradientTransformation, train_config, shardings, mesh, lora=None):
  """`make_train_step` jitted as training runs it: the state in and out with `shardings`
  (donated), the batch split over the mesh's batch axes, rng and learning rate replicated."""
  return jax.jit(make_train_step(graphdef, optimizer, train_config, lora),
                 in_shardings=(shardings, batch_sharding(mesh), None, None),
                 out_shardings=(shardings, None), donate_argnums=0)
