"""Optimizers as in the paper: Adafactor (optax defaults) for the base model, Adam (0.9, 0.999,
1e-8) for the super-resolution models; linear warmup then cosine decay; global-norm clipping."""

from __future__ import annotations

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
    opt = optax.chain(optax.clip_by_global_norm(train_config.clip_norm), opt)
  return opt


def ema_decay(step, train_config):
  """min(decay, (1 + step) / (10 + step)) with warmup, else decay."""
  import jax.numpy as jnp

  if not train_config.ema_warmup:
    return jnp.float32(train_config.ema_decay)
  step = step.astype(jnp.float32)
  return jnp.minimum(train_config.ema_decay, (1.0 + step) / (10.0 + step))
