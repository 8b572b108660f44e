"""The ADM-style U-Net of Imagen's 64x64 base model (Dhariwal & Nichol 2021, with Imagen's text
conditioning), and the conditioning shared with the Efficient U-Net.

Inputs of both U-Nets:
  z          [B, H, W, 3]  the noisy image z_t
  t          [B]           diffusion time in [0, 1]
  text       [B, T, D]     text encoder outputs (zeros for the null text), projected once to
                           `text_cond_dim` features shared by the attention and pooling layers
  text_mask  [B, T] bool   True at real tokens
  cond_image [B, H, W, 3]  super-resolution only: the low-res image, upsampled to H x W and
                           noise-augmented at `aug_level` [B]
Output: the prediction [B, H, W, out_channels] (eps for Imagen), float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.models import layers


class Conditioning(nn.Module):
  """(emb [B, emb_dim], text [B, T, cond_dim]): the time embedding plus the attention-pooled text
  (plus the aug-level embedding for SR), and the projected text tokens for attention layers."""

  channels: int
  emb_dim: int
  cond_dim: int
  use_aug_level: bool = False
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, t, text, text_mask, aug_level=None):
    text = layers.TextProjection(self.cond_dim, self.dtype, name="text_proj")(text)
    emb = layers.TimeEmbedding(self.channels, self.emb_dim, self.dtype, name="time")(t)
    emb = emb + layers.AttentionPooling(
      self.channels, self.emb_dim, dtype=self.dtype, name="text_pool"
    )(text, text_mask)
    if self.use_aug_level:
      if aug_level is None:
        raise ValueError("A super-resolution U-Net needs aug_level [B] with its cond_image.")
      emb = emb + layers.TimeEmbedding(self.channels, self.emb_dim, self.dtype, name="aug")(
        aug_level
      )
    return emb, text


def check_inputs(z, cond_image, *, super_res: bool, total_stride: int):
  if z.ndim != 4:
    raise ValueError(f"z must be [B, H, W, C], got shape {z.shape}.")
  if z.shape[1] % total_stride or z.shape[2] % total_stride:
    raise ValueError(
      f"Image size {z.shape[1]}x{z.shape[2]} is not divisible by the U-Net's total stride "
      f"{total_stride}."
    )
  if super_res:
    if cond_image is None or cond_image.shape[:3] != z.shape[:3]:
      got = None if cond_image is None else cond_image.shape
      raise ValueError(
        f"A super-resolution U-Net needs cond_image upsampled to z's size {z.shape[:3]}, got {got}."
      )
  elif cond_image is not None:
    raise ValueError("This U-Net is not a super-resolution model; do not pass cond_image.")


class UNet(nn.Module):
  """ADM U-Net: `channels` x `channel_mult` per level, `num_res_blocks` per level, attention
  (with the text tokens appended to its keys/values) at `attn_resolutions` of an `image_size`
  input, BigGAN-style residual up/down sampling, scale-shift norm. Any input whose size is
  divisible by 2^(levels - 1) works; attention stays at the same levels."""

  channels: int = 512
  channel_mult: tuple[int, ...] = (1, 2, 3, 4)
  num_res_blocks: int = 3
  attn_resolutions: tuple[int, ...] = (32, 16, 8)
  image_size: int = 64
  head_dim: int = 64
  text_attention: bool = True
  text_cond_dim: int = 512
  dropout: float = 0.0
  resblock_updown: bool = True
  super_res: bool = False
  out_channels: int = 3
  remat: str = "none"
  attn_chunk_size: int = 1024
  dtype: layers.Dtype = jnp.float32

  @property
  def total_stride(self) -> int:
    return 2 ** (len(self.channel_mult) - 1)

  @nn.compact
  def __call__(self, z, t, text, text_mask, cond_image=None, aug_level=None, *, train=False):
    check_inputs(z, cond_image, super_res=self.super_res, total_stride=self.total_stride)
    dt = self.dtype
    emb_dim = 4 * self.channels
    emb, text = Conditioning(
      self.channels, emb_dim, self.text_cond_dim, self.super_res, dt, name="cond"
    )(t, text, text_mask, aug_level)
    Res = layers.maybe_remat(layers.ResBlock, self.remat)
    Attn = layers.maybe_remat(layers.AttentionBlock, self.remat)

    def res(ch, name, resample=None):
      return Res(ch, resample, self.dropout, train, dt, name=name)

    def attn(name):
      return Attn(
        "self", self.head_dim, None, self.text_attention, dt, self.attn_chunk_size, name=name
      )

    def has_attn(level):
      return self.image_size // 2**level in self.attn_resolutions

    x = z if cond_image is None else jnp.concatenate([z, cond_image], axis=-1)
    h = layers.conv(self.channels, dtype=dt, name="in_conv")(x.astype(dt))
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      for i in range(self.num_res_blocks):
        h = res(mult * self.channels, f"down_{level}_res_{i}")(h, emb)
        if has_attn(level):
          h = attn(f"down_{level}_attn_{i}")(h, text, text_mask)
        skips.append(h)
      if level < len(self.channel_mult) - 1:
        if self.resblock_updown:
          h = res(mult * self.channels, f"down_{level}_resample", "down")(h, emb)
        else:
          h = layers.conv(mult * self.channels, strides=2, dtype=dt, name=f"down_{level}_conv")(h)
        skips.append(h)
    top = self.channel_mult[-1] * self.channels
    h = res(top, "middle_res_0")(h, emb)
    h = attn("middle_attn")(h, text, text_mask)
    h = res(top, "middle_res_1")(h, emb)
    for level in reversed(range(len(self.channel_mult))):
      ch = self.channel_mult[level] * self.channels
      for i in range(self.num_res_blocks + 1):
        h = res(ch, f"up_{level}_res_{i}")(jnp.concatenate([h, skips.pop()], axis=-1), emb)
        if has_attn(level):
          h = attn(f"up_{level}_attn_{i}")(h, text, text_mask)
      if level > 0:
        if self.resblock_updown:
          h = res(ch, f"up_{level}_resample", "up")(h, emb)
        else:
          h = layers.conv(ch, dtype=dt, name=f"up_{level}_conv")(layers.nearest_upsample(h))
    h = nn.silu(layers.GroupNorm(dtype=dt, name="out_norm")(h))
    out = layers.conv(self.out_channels, names=layers.ROW, zero=True, dtype=dt, name="out_conv")(h)
    return out.astype(jnp.float32)
