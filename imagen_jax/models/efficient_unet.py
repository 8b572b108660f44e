"""Imagen's Efficient U-Net for the super-resolution stages (Saharia et al. 2022, appendix B.1).

More residual blocks at low resolution, fewer at high resolution; a DBlock downsamples BEFORE its
convolutions and a UBlock upsamples AFTER them; skip connections are scaled by 1/sqrt(2). The
conditioning embedding enters once per block ("CombineEmbs" in the paper's figures A.28-A.29)
as a scale and shift; the ResNetBlocks inside are unconditioned.

  DBlock i: strided 3x3 conv -> channels[i]; CombineEmbs; num_res_blocks[i] x ResNetBlock;
            attention layers
  UBlock i: concat(x, skip_i / sqrt(2)); CombineEmbs; num_res_blocks[i] x ResNetBlock;
            attention layers; nearest upsample by strides[i] and 3x3 conv -> channels[i - 1]

An attention layer is attention (self with text keys/values, or text cross-attention) followed
by a channel MLP (`attn_ff_mult`, 0 for none); a block has one after its last ResNetBlock, or
one after every ResNetBlock when `attn_per_res_block`.

Inputs and output as in models.unet (cond_image is required: the upsampled, noise-augmented
low-res image, concatenated to z on the channel axis).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.errors import ConfigError
from imagen_jax.models import layers
from imagen_jax.models.adm_unet import Conditioning, check_inputs

SKIP_SCALE = 2**-0.5


class EfficientUNet(nn.Module):
  """attention[i] is None, "self" (self-attention with text keys/values) or "cross" (text
  cross-attention), each with `attn_heads` heads."""

  channels: tuple[int, ...] = (128, 256, 512, 1024)
  num_res_blocks: tuple[int, ...] = (2, 4, 8, 8)
  strides: tuple[int, ...] = (2, 2, 2, 2)
  attention: tuple[str | None, ...] = (None, None, None, "self")
  attn_heads: int = 8
  attn_per_res_block: bool = False
  attn_ff_mult: int = 2
  text_cond_dim: int = 512
  dropout: float = 0.0
  super_res: bool = True
  out_channels: int = 3
  remat: str = "none"
  attn_chunk_size: int = 1024
  attn_impl: str = "auto"  # layers.ATTENTION_IMPLS: cuDNN's fused kernel on GPU in bfloat16
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self):
    n = len(self.channels)
    if not (len(self.num_res_blocks) == len(self.strides) == len(self.attention) == n):
      raise ConfigError(
        "EfficientUNet needs one entry per block in channels, num_res_blocks, strides and "
        f"attention; got {self.channels}, {self.num_res_blocks}, {self.strides}, "
        f"{self.attention}."
      )
    super().__post_init__()

  @property
  def total_stride(self) -> int:
    return math.prod(self.strides)

  @nn.compact
  def __call__(self, z, t, text, text_mask, cond_image=None, aug_level=None, *, train=False):
    check_inputs(z, cond_image, super_res=self.super_res, total_stride=self.total_stride)
    dt = self.dtype
    base = self.channels[0]
    emb, text = Conditioning(
      channels=base, emb_dim=4 * base, cond_dim=self.text_cond_dim, use_aug_level=self.super_res,
      dtype=dt, name="cond",
    )(t, text, text_mask, aug_level)  # fmt: skip
    Res = layers.maybe_remat(layers.ResBlock, self.remat)
    Attn = layers.maybe_remat(layers.AttentionBlock, self.remat)
    FF = layers.maybe_remat(layers.FeedForward, self.remat)

    def block_body(h, i, prefix):
      h = layers.ScaleShift(dt, zero_init=True, name=f"{prefix}_{i}_emb")(h, emb)
      n = self.num_res_blocks[i]
      for j in range(n):
        h = Res(
          out_channels=self.channels[i], dropout=self.dropout, train=train, dtype=dt,
          name=f"{prefix}_{i}_res_{j}",
        )(h, None)  # fmt: skip
        if self.attention[i] is not None and (self.attn_per_res_block or j == n - 1):
          h = Attn(
            mode=self.attention[i], head_dim=0, heads=self.attn_heads, use_text=True, dtype=dt,
            chunk_size=self.attn_chunk_size, impl=self.attn_impl, name=f"{prefix}_{i}_attn_{j}",
          )(h, text, text_mask)  # fmt: skip
          if self.attn_ff_mult:
            h = FF(self.attn_ff_mult, dt, name=f"{prefix}_{i}_ff_{j}")(h)
      return h

    x = z if cond_image is None else jnp.concatenate([z, cond_image], axis=-1)
    h = layers.conv(base, dtype=dt, name="in_conv")(x.astype(dt))
    skips = []
    for i, stride in enumerate(self.strides):
      if stride > 1:  # downsample first
        h = layers.conv(self.channels[i], strides=stride, dtype=dt, name=f"down_{i}_conv")(h)
      h = block_body(h, i, "down")
      skips.append(h)
    for i in reversed(range(len(self.channels))):
      h = jnp.concatenate([h, skips.pop() * SKIP_SCALE], axis=-1)
      h = block_body(h, i, "up")
      out_ch = self.channels[max(i - 1, 0)]
      if self.strides[i] > 1:  # upsample last
        h = layers.nearest_upsample(h, self.strides[i])
      h = layers.conv(out_ch, dtype=dt, name=f"up_{i}_conv")(h)
    h = nn.silu(layers.GroupNorm(dtype=dt, name="out_norm")(h))
    out = layers.conv(self.out_channels, names=layers.ROW, zero=True, dtype=dt, name="out_conv")(h)
    return out.astype(jnp.float32)
