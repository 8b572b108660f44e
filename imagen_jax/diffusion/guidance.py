"""Classifier-free guidance (Ho & Salimans 2022) in Imagen's convention.

guided = w * pred(z, cond) + (1 - w) * pred(z, null): w = 1 is the plain conditional model,
w = 0 the unconditional one. Both halves come from ONE model call on a doubled batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def combine_guidance(pred_cond, pred_uncond, scale):
  """guided = w * pred_cond + (1 - w) * pred_uncond.

  Args:
    pred_cond: the conditional prediction [B, ...].
    pred_uncond: the unconditional prediction, of the same shape.
    scale: w, a scalar or [B] (1: the conditional model, 0: the unconditional one).

  Returns:
    The guided prediction [B, ...].
  """
  w = jnp.asarray(scale, pred_cond.dtype)
  w = w.reshape(w.shape + (1,) * (pred_cond.ndim - w.ndim))
  return pred_uncond + w * (pred_cond - pred_uncond)


def guided_model(model_fn, scale):
  """Wraps model_fn(z, t, cond) into fn(z, t, (cond, null)) -> guided prediction.

  Args:
    model_fn: model_fn(z, t, cond) takes z [B, ...], t [B] and a pytree `cond` whose leaves have
      a leading batch axis, and returns a prediction [B, ...].
    scale: the guidance weight w, a scalar or [B] (combine_guidance).

  Returns:
    fn(z, t, (cond, null)), where `null` is the same pytree as `cond` for the unconditional
    model: it stacks (z, z), (t, t) and (cond, null) into a batch of 2B, calls model_fn once,
    and combines the two halves with weight `scale`. For `sample`:
    lambda z, t: fn(z, t, (cond, null)).
  """

  def fn(z, t, cond_and_null):
    cond, null = cond_and_null
    batch = z.shape[0]
    both = jax.tree.map(lambda c, n: jnp.concatenate([c, n], axis=0), cond, null)
    pred = model_fn(jnp.concatenate([z, z], 0), jnp.concatenate([t, t], 0), both)
    return combine_guidance(pred[:batch], pred[batch:], scale)

  return fn
