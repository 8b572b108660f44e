"""The forward process and conversions between eps, x and v predictions, in log-SNR form.

Arrays: `x`, `z`, `eps`, `v` share one shape [B, ...]; `logsnr` is [B] (or broadcastable to x)
and is broadcast over the trailing axes.
"""

from __future__ import annotations

import jax.numpy as jnp

from imagen_jax.diffusion.schedules import alpha_sigma_from_logsnr
from imagen_jax.errors import InputError

OBJECTIVES = ("eps", "x", "v")


def _bcast(logsnr, like):
  logsnr = jnp.asarray(logsnr, jnp.float32)
  return logsnr.reshape(logsnr.shape + (1,) * (like.ndim - logsnr.ndim))


def _alpha_sigma(logsnr, like):
  return alpha_sigma_from_logsnr(_bcast(logsnr, like))


def q_sample(*, x, eps, logsnr):
  """z = alpha * x + sigma * eps."""
  alpha, sigma = _alpha_sigma(logsnr, x)
  return alpha * x + sigma * eps


def predict_x_from_eps(*, z, eps, logsnr):
  """x = (z - sigma * eps) / alpha."""
  alpha, sigma = _alpha_sigma(logsnr, z)
  return (z - sigma * eps) / alpha


def predict_eps_from_x(*, z, x, logsnr):
  """eps = (z - alpha * x) / sigma."""
  alpha, sigma = _alpha_sigma(logsnr, z)
  return (z - alpha * x) / sigma


def predict_v_from_x_and_eps(*, x, eps, logsnr):
  """v = alpha * eps - sigma * x."""
  alpha, sigma = _alpha_sigma(logsnr, x)
  return alpha * eps - sigma * x


def predict_x_from_v(*, z, v, logsnr):
  """x = alpha * z - sigma * v."""
  alpha, sigma = _alpha_sigma(logsnr, z)
  return alpha * z - sigma * v


def predict_eps_from_v(*, z, v, logsnr):
  """eps = sigma * z + alpha * v."""
  alpha, sigma = _alpha_sigma(logsnr, z)
  return sigma * z + alpha * v


def check_objective(objective: str) -> str:
  if objective not in OBJECTIVES:
    raise InputError(f"Unknown objective {objective!r}; choose one of {OBJECTIVES}.")
  return objective


def x_and_eps_from_prediction(pred, *, z, logsnr, objective: str = "eps"):
  """(x_hat, eps_hat) from a model output that predicts eps, x or v at (z, logsnr)."""
  check_objective(objective)
  if objective == "eps":
    return predict_x_from_eps(z=z, eps=pred, logsnr=logsnr), pred
  if objective == "x":
    return pred, predict_eps_from_x(z=z, x=pred, logsnr=logsnr)
  x_hat = predict_x_from_v(z=z, v=pred, logsnr=logsnr)
  return x_hat, predict_eps_from_v(z=z, v=pred, logsnr=logsnr)
