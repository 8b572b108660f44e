"""The training loss: MSE in the space of the model's objective, with optional min-SNR weighting."""

from __future__ import annotations

import jax.numpy as jnp

from imagen_jax.diffusion.predictions import check_objective, predict_v_from_x_and_eps


def diffusion_loss(pred, *, x, eps, logsnr, objective: str = "eps", min_snr_gamma=None):
  """Per-example loss [B] for a model output `pred` at z = alpha * x + sigma * eps.

  pred, x, eps: [B, ...]; logsnr: [B]. `objective` says what `pred` estimates ("eps", "x", "v");
  the loss is the mean squared error against that target over the non-batch axes.
  `min_snr_gamma` (e.g. 5.0; Hang et al. 2023) weights each example by
  min(snr, gamma) / snr for eps, min(snr, gamma) / (snr + 1) for v and min(snr, gamma) for x,
  which is the same x-space weighting min(snr, gamma) expressed in each target's units.
  """
  check_objective(objective)
  if objective == "eps":
    target = eps
  elif objective == "x":
    target = x
  else:
    target = predict_v_from_x_and_eps(x=x, eps=eps, logsnr=logsnr)
  axes = tuple(range(1, pred.ndim))
  mse = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=axes)
  if min_snr_gamma is None:
    return mse
  snr = jnp.exp(jnp.asarray(logsnr, jnp.float32))
  clipped = jnp.minimum(snr, min_snr_gamma)
  weight = {"eps": clipped / snr, "v": clipped / (snr + 1.0), "x": clipped}[objective]
  return weight * mse
