"""Flax modules: the U-Nets of the three stages (ADM and Efficient) and the T5 text encoder."""

from imagen_jax.models.adm_unet import UNet
from imagen_jax.models.efficient_unet import EfficientUNet
from imagen_jax.models.unet_factory import (
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
  "UNet",
  "abstract_unet_params",
  "build_unet",
  "count_params",
  "unet_defaults",
  "unet_inputs",
]
