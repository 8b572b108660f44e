"""Editing inside the samplers: image-to-image (SDEdit: start from the source noised to a time
t_start) and inpainting (at every step the known region is the source noised to that step's
level; after the last step it is the source exactly), with RePaint's resampling (Lugmayr et al.
2022) for coherent boundaries. Pure functions of arrays; the samplers call them in their scan.

Shapes: x_known [B, H, W, C] in [-1, 1]; keep [B, H, W, 1] (or broadcastable), 1 where the
source is kept and 0 where new content is drawn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.diffusion import rng
from imagen_jax.diffusion.predictions import q_sample
from imagen_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class Edit:
  """What to edit: `source` [B, ...] in [-1, 1]; `strength` in (0, 1], the fraction of the
  noise schedule to start from (1 = pure noise, the plain sampler); `keep` [B, ..., 1] or None,
  1 where the source is kept (inpainting); `resample` >= 1, RePaint's jumps per step (1 = none)."""

  source: jax.Array
  strength: float = 1.0
  keep: jax.Array | None = None
  resample: int = 1

  def check(self) -> None:
    check_strength(self.strength)
    check_resample(self.resample)


jax.tree_util.register_dataclass(
  Edit, data_fields=["source", "keep"], meta_fields=["strength", "resample"]
)


def check_strength(strength, name: str = "strength") -> float:
  """`strength` as a float, if it is in (0, 1] (1 starts from pure noise); `name` is what the
  caller calls it."""
  if isinstance(strength, bool) or not isinstance(strength, (int, float, np.number)):
    raise InputError(f"{name} must be a number in (0, 1], got {strength!r}.")
  if not 0.0 < float(strength) <= 1.0:
    raise InputError(f"{name} must be in (0, 1] (1 starts from noise), got {strength}.")
  return float(strength)


def check_resample(resample) -> int:
  """`resample` as an int, if it is a whole number of at least 1 (1: no RePaint jumps)."""
  if isinstance(resample, bool) or not isinstance(resample, (int, np.integer)) or resample < 1:
    raise InputError(f"resample must be a whole number of at least 1, got {resample!r}.")
  return int(resample)


def start_steps(steps: int, strength: float) -> int:
  """The steps run from t_start = strength (as diffusers' img2img: steps x strength, at least 1)."""
  return max(1, round(steps * strength))


def paste_known(z, edit: Edit | None, *, logsnr, noise):
  """z with its known region replaced by the source at log-SNR `logsnr` (the source itself at
  +inf); z unchanged without a mask."""
  if edit is None or edit.keep is None:
    return z
  known = q_sample(x=edit.source, eps=noise, logsnr=logsnr)
  return edit.keep * known + (1.0 - edit.keep) * z


def renoise(z_s, noise, *, lam_t, lam_s):
  """A sample of q(z_t | z_s) for lam_t < lam_s: RePaint's jump back to the noisier time,
  z_t = (alpha_t / alpha_s) z_s + sqrt(sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2) noise."""
  a_t, a_s = jax.nn.sigmoid(lam_t), jax.nn.sigmoid(lam_s)  # alpha^2
  ratio = jnp.sqrt(a_t / a_s)
  var = (1.0 - a_t) - (a_t / a_s) * (1.0 - a_s)
  return ratio * z_s + jnp.sqrt(jnp.maximum(var, 0.0)) * noise


def start(z, edit: Edit | None, *, logsnr, key):
  """Where the reverse process starts: the noise z [B, ...] itself; with an edit at strength < 1
  the source noised by z to log-SNR `logsnr` (SDEdit); and with a mask, the known region the
  source noised to `logsnr` (by a draw of fold_in(key, 1)). The edit is checked by the caller."""
  if edit is None:
    return z
  if float(edit.strength) < 1.0:
    z = q_sample(x=edit.source, eps=z, logsnr=logsnr)
  return paste_known(z, edit, logsnr=logsnr, noise=rng.normal(rng.fold_in(key, 1), z.shape))


def step(one_step: Callable, z, key, edit: Edit | None, *, lam_t, lam_s):
  """One step of the reverse process from log-SNR lam_t to lam_s, as every sampler edits it.

  one_step(z, key) -> (z_s, aux) is the sampler's own step. With a mask, the known region of z_s
  is the source noised to lam_s; with edit.resample = r > 1, RePaint's jumps: r - 1 times, z_s is
  noised back to lam_t and the step taken again. Draws: the step's own from `key` (then from
  fold_in(key, 2 + j) on jump j), the known region's from fold_in(., 1), the jump's from
  fold_in(., 2). Returns (z_s, aux) of the last jump."""
  resample = 1 if edit is None else int(edit.resample)
  for jump in range(resample):
    jump_key = key if jump == 0 else rng.fold_in(key, 2 + jump)
    z_s, aux = one_step(z, jump_key)
    if edit is not None:
      noise = rng.normal(rng.fold_in(jump_key, 1), z_s.shape)
      z_s = paste_known(z_s, edit, logsnr=lam_s, noise=noise)
    if jump < resample - 1:
      z = renoise(z_s, rng.normal(rng.fold_in(jump_key, 2), z_s.shape), lam_t=lam_t, lam_s=lam_s)
  return z_s, aux
