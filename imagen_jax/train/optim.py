"""Optimizers as in the paper: Adafactor (optax defaults) for the base model, Adam (0.9, 0.999,
1e-8) for the super-resolution models; linear warmup then cosine decay; global-norm clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(train_config) -> optax.Schedule:
  """0 -> learning_rate over warmup_steps, then cosine decay to 0 at decay_steps (or steps)."""
  decay = train_config.decay_steps or train_config.steps
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=train_config.learning_rate,
    warmup_steps=train_config.warmup_steps,
    decay_steps=max(decay, train_config.warmup_steps + 1),
    end_value=0.0,
  )


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
  """optax.clip_by_global_norm (same rule, same empty state) that takes the norm from the caller
  when it has one (`update(..., grad_norm=n)`): the train step reports the norm anyway, and
  inside its skip-on-non-finite `cond` XLA cannot reuse the one computed outside."""

  def update_fn(updates, state, params=None, *, grad_norm=None, **extra_args):
    del params, extra_args
    norm = optax.global_norm(updates) if grad_norm is None else grad_norm
    clip = norm >= max_norm
    updates = jax.tree.map(
      lambda t: jnp.where(clip, t / norm.astype(t.dtype) * max_norm, t), updates
    )
    return updates, state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def make_optimizer(train_config) -> optax.GradientTransformation:
  lr = learning_rate_schedule(train_config)
  if train_config.optimizer == "adafactor":
    opt = optax.adafactor(learning_rate=lr, weight_decay_rate=train_config.weight_decay or None)
  elif train_config.weight_decay:
    opt = optax.adamw(
      lr,
      b1=train_config.b1,
      b2=train_config.b2,
      eps=train_config.eps,
      weight_decay=train_config.weight_decay,
    )
  else:
    opt = optax.adam(lr, b1=train_config.b1, b2=train_config.b2, eps=train_config.eps)
  if train_config.clip_norm:
    opt = optax.chain(clip_by_global_norm(train_config.clip_norm), opt)
  return opt


def ema_decay(step, train_config):
  """min(decay, (1 + step) / (10 + step)) with warmup, else decay."""
  if not train_config.ema_warmup:
    return jnp.float32(train_config.ema_decay)
  step = step.astype(jnp.float32)
  return jnp.minimum(train_config.ema_decay, (1.0 + step) / (10.0 + step))
