"""Pretrained models of other codebases, imported exactly: diffusers' U-Nets of DeepFloyd IF,
and IF's stages (`IFStage`, a stages.Stage sampled as IF samples)."""

from imagen_jax.pretrained.if_stage import IFStage
from imagen_jax.pretrained.unet import PretrainedUNet, load_unet
from imagen_jax.pretrained.unet_config import UnsupportedConfig, unet_from_config

__all__ = ["IFStage", "PretrainedUNet", "UnsupportedConfig", "load_unet", "unet_from_config"]
