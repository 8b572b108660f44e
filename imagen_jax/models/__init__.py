"""Flax modules: the U-Nets of the three stages, the T5 text encoder, and `Stage`, a U-Net with
its noise schedule and conditioning as training and sampling both see it."""

from imagen_jax.models.efficient_unet import EfficientUNet
from imagen_jax.models.sampler import StageSampler
from imagen_jax.models.stage import Stage
from imagen_jax.models.unet import UNet
from imagen_jax.models.unets import (
  UNET_TYPES,
  abstract_unet_params,
  build_unet,
  count_params,
  unet_defaults,
  unet_inputs,
)

__all__ = [
  "UNET_TYPES",
  "EfficientUNet",
  "Stage",
  "StageSampler",
  "UNet",
  "abstract_unet_params",
  "build_unet",
  "count_params",
  "unet_defaults",
  "unet_inputs",
]
