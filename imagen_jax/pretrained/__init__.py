"""Pretrained models of other codebases, imported exactly: diffusers' U-Nets of DeepFloyd IF."""

from imagen_jax.pretrained.unet import PretrainedUNet, load_unet
from imagen_jax.pretrained.unet_config import UnsupportedConfig, unet_from_config

__all__ = ["PretrainedUNet", "UnsupportedConfig", "load_unet", "unet_from_config"]
