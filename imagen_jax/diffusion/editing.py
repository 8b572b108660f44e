"""Editing inside the samplers: image-to-image (SDEdit: start from the source noised to a time
t_start) and inpainting (at every step the known region is the source noised to that step's
level; after the last step it is the source exactly), with RePaint's resampling (Lugmayr et al.
2022) for coherent boundaries. Pure functions of arrays; the samplers call them in their scan.

Shapes: x_known [B, H, W, C] in [-1, 1]; keep [B, H, W, 1] (or broadcastable), 1 where the
source is kept and 0 where new content is drawn.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from imagen_jax.diffusion.predictions import q_sample


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
    if not 0.0 < float(self.strength) <= 1.0:
      raise ValueError(f"strength must be in (0, 1], got {self.strength}.")
    if int(self.resample) < 1:
      raise ValueError(f"resample must be at least 1, got {self.resample}.")


jax.tree_util.register_dataclass(
  Edit, data_fields=["source", "keep"], meta_fields=["strength", "resample"]
)


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
