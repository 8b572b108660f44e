"""Noise-conditioning augmentation of the low-res input of super-resolution stages.

Saharia et al. 2022, sec. 2.5 (after Ho et al. 2021, "Cascaded Diffusion Models"): the low-res
image is corrupted by the forward process at an augmentation level in [0, 1], and the model is
conditioned on that level; training draws it uniformly per example, sampling fixes it.
"""

from __future__ import annotations

import jax.numpy as jnp

from imagen_jax.diffusion import rng
from imagen_jax.diffusion.predictions import q_sample
from imagen_jax.diffusion.schedules import Schedule
from imagen_jax.errors import InputError


def noise_augment(low_res, *, aug_level, schedule: Schedule, key=None, noise=None):
  """z = alpha * low_res + sigma * eps at time aug_level of `schedule` (low_res where it is 0).

  Args:
    low_res: the super-resolution stage's input [B, H, W, C] in [-1, 1].
    aug_level: a scalar or [B] in [0, 1], the time of the forward process (0 leaves the image as
      it is).
    schedule: the noise schedule of the forward process.
    key: draws the noise eps: one PRNG key, or keys [B], one per example; typed or legacy.
    noise: eps [B, H, W, C] itself, in place of `key`.

  Returns:
    (noised low-res [B, H, W, C], aug_level [B] float32) for the model's conditioning.

  Raises:
    InputError: neither `key` nor `noise` given.
  """
  batch = low_res.shape[0]
  aug_level = jnp.broadcast_to(jnp.asarray(aug_level, jnp.float32), (batch,))
  if noise is None:
    if key is None:
      raise InputError("noise_augment needs a key or the noise.")
    noise = rng.normal(key, low_res.shape, low_res.dtype)
  noised = q_sample(x=low_res, eps=noise, logsnr=schedule.logsnr(aug_level))
  return jnp.where((aug_level > 0)[:, None, None, None], noised, low_res), aug_level
