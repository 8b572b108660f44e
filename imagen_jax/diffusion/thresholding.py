"""Static and dynamic thresholding of the predicted clean image (Saharia et al. 2022, sec. 2.3)."""

from __future__ import annotations

import jax.numpy as jnp

from imagen_jax.errors import InputError

THRESHOLDS = ("none", "static", "dynamic")


def check_threshold(method: str) -> str:
  if method not in THRESHOLDS:
    raise InputError(f"Unknown thresholding {method!r}; choose one of {THRESHOLDS}.")
  return method


def static_threshold(x):
  """x = clip(x, -1, 1).

  Args:
    x: the predicted clean image, any shape.

  Returns:
    x clipped to [-1, 1].
  """
  return jnp.clip(x, -1.0, 1.0)


def dynamic_threshold(x, *, percentile: float = 99.5, max_value: float = float("inf")):
  """Per sample: s = clip(percentile(|x|, p), 1, max_value); x = clip(x, -s, s) / s.

  Args:
    x: the predicted clean image [B, ...].
    percentile: p in [0, 100], of each sample's |x| (interpolated linearly, as numpy's and
      torch.quantile do; DeepFloyd IF uses 95).
    max_value: the largest scale s (DeepFloyd IF: 1.5 or 1).

  Returns:
    x [B, ...] in [-1, 1], in x's dtype.
  """
  flat = jnp.abs(x.reshape(x.shape[0], -1)).astype(jnp.float32)
  s = jnp.clip(jnp.percentile(flat, percentile, axis=1), 1.0, max_value)
  s = s.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
  return jnp.clip(x, -s, s) / s


def threshold(
  x, *, method: str = "dynamic", percentile: float = 99.5, max_value: float = float("inf")
):
  """x = static_threshold(x), dynamic_threshold(x) or x, as `method` says.

  Args:
    x: the predicted clean image x_hat [B, ...].
    method: "none", "static" or "dynamic".
    percentile: the dynamic threshold's percentile of |x|.
    max_value: the dynamic threshold's largest scale.

  Returns:
    x [B, ...], in [-1, 1] unless method is "none".

  Raises:
    InputError: an unknown method.
  """
  check_threshold(method)
  if method == "static":
    return static_threshold(x)
  if method == "dynamic":
    return dynamic_threshold(x, percentile=percentile, max_value=max_value)
  return x
