"""One stage of the cascade as training and sampling both see it: the U-Net, the noise schedule,
and how the low-res conditioning image is made.

Images inside are float in [-1, 1]; `to_float` / `to_uint8` convert at the edges.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax import diffusion, models, parallel
from imagen_jax.configuration import output_size, upscale_factor


def compute_dtype(name: str):
  if name == "auto":
    return parallel.default_compute_dtype()
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def to_float(images):
  """uint8 [..., 3] -> float32 in [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images):
  """float in [-1, 1] -> uint8 (rounded, clipped)."""
  return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def upsample(low_res, size: int):
  """[B, h, w, 3] -> [B, size, size, 3] by bicubic interpolation (the SR stages' conditioning)."""
  b, _, _, c = low_res.shape
  return jax.image.resize(low_res, (b, size, size, c), "bicubic")


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stage built from its config: `model`, `schedule`, `super_res`, sizes and options."""

  model: nn.Module
  schedule: diffusion.Schedule
  super_res: bool
  image_size: int  # training resolution
  low_res_size: int  # SR: training resolution of the input (0 for the base)
  output_size: int  # resolution produced in the cascade
  factor: int  # output / input resolution (1 for the base)
  text_len: int
  text_dim: int
  objective: str

  @classmethod
  def from_config(cls, config, *, dtype=None) -> Stage:
    if dtype is None:
      dtype = compute_dtype(config.train.compute_dtype)
    sr = config.stage == "sr"
    return cls(
      model=models.build_unet(config.unet, super_res=sr, dtype=dtype),
      schedule=diffusion.get_schedule(
        config.diffusion.schedule, shift=config.diffusion.get("logsnr_shift", 0.0)
      ),
      super_res=sr,
      image_size=config.image_size,
      low_res_size=config.low_res_size if sr else 0,
      output_size=output_size(config),
      factor=upscale_factor(config),
      text_len=config.text.max_length,
      text_dim=config.text.dim,
      objective=config.diffusion.objective,
    )

  def abstract_params(self):
    """Boxed ShapeDtypeStructs of the parameters (for shardings; nothing allocated)."""
    return models.abstract_unet_params(
      self.model, self.image_size, self.text_len, self.text_dim, self.super_res
    )

  def init_params(self, key):
    """Boxed parameters (nn.LogicallyPartitioned leaves)."""
    args = models.unet_inputs(1, self.image_size, self.text_len, self.text_dim, self.super_res)
    zeros = [None if a is None else jnp.zeros(a.shape, a.dtype) for a in args]
    return self.model.init(key, *zeros)["params"]

  def cond_image(self, low_res, *, size: int, aug_level, key):
    """The SR conditioning: low_res [B, h, w, 3] in [-1, 1], upsampled to size x size and
    noise-augmented at aug_level (scalar or [B]); returns (image, aug_level [B])."""
    return diffusion.noise_augment(
      upsample(low_res, size), aug_level=aug_level, key=key, schedule=self.schedule
    )

  def apply(
    self, params, z, t, text, text_mask, cond_image=None, aug_level=None, *, train=False, rngs=None
  ):
    """The model's prediction (of `objective`) [B, H, W, 3], float32."""
    return self.model.apply(
      {"params": params}, z, t, text, text_mask, cond_image, aug_level, train=train, rngs=rngs
    )
