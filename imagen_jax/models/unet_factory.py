"""Building a U-Net from a config's `unet` section, and the shapes of its inputs and parameters."""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.errors import ConfigError
from imagen_jax.models.adm_unet import UNet
from imagen_jax.models.efficient_unet import EfficientUNet

UNET_CLASSES = {"adm": UNet, "efficient": EfficientUNet}
UNET_TYPES = tuple(UNET_CLASSES)
# Module fields a config does not set: the cascade decides them.
_NOT_CONFIGURED = ("super_res", "out_channels", "dtype", "parent", "name", "if_conditioning")


def unet_defaults(kind: str) -> dict:
  """The `unet` config section of a U-Net type with every field at the module's default (the
  paper's sizes: the 2B base for "adm", the 64->256 model for "efficient"). Attention kinds
  are strings in configs ("none" for None)."""
  if kind not in UNET_CLASSES:
    raise ConfigError(f"Unknown U-Net type {kind!r}; choose one of {UNET_TYPES}.")
  fields = {
    f.name: f.default
    for f in dataclasses.fields(UNET_CLASSES[kind])
    if f.name not in _NOT_CONFIGURED
  }
  if "attention" in fields:
    fields["attention"] = tuple("none" if a is None else a for a in fields["attention"])
  return {"type": kind, **fields}


def build_unet(unet_config, *, super_res: bool, dtype=jnp.float32) -> nn.Module:
  """The U-Net described by a config's `unet` section (see configs/)."""
  c = dict(unet_config)
  kind = c.pop("type")
  if kind not in UNET_TYPES:
    raise ConfigError(f"Unknown U-Net type {kind!r}; choose one of {UNET_TYPES}.")
  if kind == "adm":
    c = {k: tuple(v) if isinstance(v, list) else v for k, v in c.items()}
    return UNet(super_res=super_res, dtype=dtype, **c)
  for key in ("channels", "num_res_blocks", "strides"):
    c[key] = tuple(c[key])
  c["attention"] = tuple(None if a in (None, "", "none") else a for a in c["attention"])
  return EfficientUNet(super_res=super_res, dtype=dtype, **c)


def unet_inputs(batch: int, *, size: int, text_len: int, text_dim: int, super_res: bool):
  """ShapeDtypeStructs of a U-Net call (z, t, text, text_mask, cond_image, aug_level)."""
  f32 = jnp.float32
  image = jax.ShapeDtypeStruct((batch, size, size, 3), f32)
  return (
    image,
    jax.ShapeDtypeStruct((batch,), f32),
    jax.ShapeDtypeStruct((batch, text_len, text_dim), f32),
    jax.ShapeDtypeStruct((batch, text_len), jnp.bool_),
    image if super_res else None,
    jax.ShapeDtypeStruct((batch,), f32) if super_res else None,
  )


def abstract_unet_params(
  model: nn.Module, *, size: int, text_len: int, text_dim: int, super_res: bool
):
  """Boxed ShapeDtypeStructs of the U-Net's parameters (jax.eval_shape; nothing allocated)."""
  args = unet_inputs(1, size=size, text_len=text_len, text_dim=text_dim, super_res=super_res)
  return jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a), *args)["params"]


def count_params(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(tree)))
