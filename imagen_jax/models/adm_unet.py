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

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.errors import InputError
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
        raise InputError("A super-resolution U-Net needs aug_level [B] with its cond_image.")
      emb = emb + layers.TimeEmbedding(self.channels, self.emb_dim, self.dtype, name="aug")(
        aug_level
      )
    return emb, text


@dataclasses.dataclass(frozen=True)
class TextTimeConditioning:
  """How DeepFloyd IF's U-Nets (diffusers' UNet2DConditionModel) condition: the time embedding
  of integer steps (sinusoids of width `time_dim`, Dense, `act`, Dense to `emb_dim`), plus the
  embedding of the class label (stage II's noise level) when `class_label`, plus the pooled raw
  text (`pool_heads` heads; 0 for none), then `post_act`; the text tokens reach the attention
  layers through one Dense (`text_proj`) or unchanged."""

  time_dim: int
  emb_dim: int
  act: str = "gelu"
  flip_sin_to_cos: bool = True
  freq_shift: float = 0.0
  class_label: bool = False
  pool_heads: int = 64
  post_act: str | None = None
  text_proj: bool = True


class IFConditioning(nn.Module):
  """(emb [B, emb_dim], text [B, T, cond_dim]) as TextTimeConditioning describes; t [B] and
  class_label [B] are integer steps (floats are accepted)."""

  spec: TextTimeConditioning
  cond_dim: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, t, text, class_label=None):
    c = self.spec

    def embedding(name):
      return layers.TimeEmbedding(
        channels=c.time_dim, emb_dim=c.emb_dim, dtype=self.dtype, act=c.act, scale=1.0,
        flip_sin_to_cos=c.flip_sin_to_cos, freq_shift=c.freq_shift, name=name,
      )  # fmt: skip

    emb = embedding("time")(t)
    if c.class_label:
      if class_label is None:
        raise InputError("This U-Net is conditioned on a class label (IF: the noise level).")
      emb = emb + embedding("class")(class_label)
    if c.pool_heads:
      emb = emb + layers.TextTimeEmbedding(c.pool_heads, c.emb_dim, self.dtype, name="text_pool")(
        text.astype(self.dtype)
      )
    if c.post_act is not None:
      emb = layers.activation(c.post_act)(emb)
    if c.text_proj:
      proj = layers.dense(self.cond_dim, dtype=self.dtype, name="text_proj")
      text = proj(text.astype(self.dtype))
    return emb, text


def check_inputs(z, cond_image, *, super_res: bool, total_stride: int):
  if z.ndim != 4:
    raise InputError(f"z must be [B, H, W, C], got shape {z.shape}.")
  if z.shape[1] % total_stride or z.shape[2] % total_stride:
    raise InputError(
      f"Image size {z.shape[1]}x{z.shape[2]} is not divisible by the U-Net's total stride "
      f"{total_stride}."
    )
  if super_res:
    if cond_image is None or cond_image.shape[:3] != z.shape[:3]:
      got = None if cond_image is None else cond_image.shape
      raise InputError(
        f"A super-resolution U-Net needs cond_image upsampled to z's size {z.shape[:3]}, got {got}."
      )
  elif cond_image is not None:
    raise InputError("This U-Net is not a super-resolution model; do not pass cond_image.")


class UNet(nn.Module):
  """ADM U-Net: `channels` x `channel_mult` per level, `num_res_blocks` per level, attention
  (with the text tokens appended to its keys/values) at `attn_resolutions` of an `image_size`
  input, BigGAN-style residual up/down sampling, scale-shift norm. Any input whose size is
  divisible by 2^(levels - 1) works; attention stays at the same levels.

  DeepFloyd IF's U-Nets are this architecture with options (pretrained.unet_config sets them):
  `level_channels` and `attn_levels` per level, `num_res_blocks` per level, the activation,
  GroupNorm eps and groups, `skip_time_act`, residual output scales, IF's text keys/values
  (`text_kv="added"`) and its conditioning (`if_conditioning`; then t is an integer step and
  aug_level the class label).
  """

  channels: int = 512
  channel_mult: tuple[int, ...] = (1, 2, 3, 4)
  num_res_blocks: int | tuple[int, ...] = 3  # one for all levels or one per level
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
  attn_impl: str = "auto"  # layers.ATTENTION_IMPLS: cuDNN's fused kernel on GPU in bfloat16
  dtype: layers.Dtype = jnp.float32
  # DeepFloyd IF's options (see the class docstring); the defaults are Imagen's U-Net.
  level_channels: tuple[int, ...] = ()  # default: channels x channel_mult
  attn_levels: tuple[bool, ...] = ()  # default: from attn_resolutions
  act: str = "silu"
  norm_eps: float = 1e-6
  norm_groups: int = 32
  attn_norm_eps: float = 1e-6
  skip_time_act: bool = False
  res_scale: float = 1.0
  mid_scale: float = 1.0
  text_kv: str = "imagen"
  if_conditioning: TextTimeConditioning | None = None

  @property
  def levels(self) -> tuple[int, ...]:
    return self.level_channels or tuple(m * self.channels for m in self.channel_mult)

  @property
  def total_stride(self) -> int:
    return 2 ** (len(self.levels) - 1)

  def _res_blocks(self, level: int) -> int:
    n = self.num_res_blocks
    return n[level] if isinstance(n, (tuple, list)) else n

  def _has_attn(self, level: int) -> bool:
    if self.attn_levels:
      return self.attn_levels[level]
    return self.image_size // 2**level in self.attn_resolutions

  def _conditioning(self, t, text, text_mask, aug_level):
    if self.if_conditioning is not None:
      return IFConditioning(self.if_conditioning, self.text_cond_dim, self.dtype, name="cond")(
        t, text, aug_level
      )
    return Conditioning(
      channels=self.channels, emb_dim=4 * self.channels, cond_dim=self.text_cond_dim,
      use_aug_level=self.super_res, dtype=self.dtype, name="cond",
    )(t, text, text_mask, aug_level)  # fmt: skip

  @nn.compact
  def __call__(self, z, t, text, text_mask, cond_image=None, aug_level=None, *, train=False):
    check_inputs(z, cond_image, super_res=self.super_res, total_stride=self.total_stride)
    dt = self.dtype
    emb, text = self._conditioning(t, text, text_mask, aug_level)
    res, attn = self._block_makers(train)
    x = z if cond_image is None else jnp.concatenate([z, cond_image], axis=-1)
    h = layers.conv(self.levels[0], dtype=dt, name="in_conv")(x.astype(dt))
    h, skips = self._down(h, emb, text, text_mask, res, attn)
    h = res(self.levels[-1], "middle_res_0", scale=self.mid_scale)(h, emb)
    h = attn("middle_attn")(h, text, text_mask)
    h = res(self.levels[-1], "middle_res_1", scale=self.mid_scale)(h, emb)
    h = self._up(h, skips, emb, text, text_mask, res, attn)
    h = layers.GroupNorm(self.norm_groups, dt, self.norm_eps, name="out_norm")(h)
    h = layers.activation(self.act)(h)
    out = layers.conv(self.out_channels, names=layers.ROW, zero=True, dtype=dt, name="out_conv")(h)
    return out.astype(jnp.float32)

  def _block_makers(self, train: bool):
    """(res(channels, name, resample=None, scale=res_scale), attn(name)): this U-Net's residual
    and attention blocks, remat'd as configured."""
    Res = layers.maybe_remat(layers.ResBlock, self.remat)
    Attn = layers.maybe_remat(layers.AttentionBlock, self.remat)

    def res(channels, name, resample=None, scale=self.res_scale):
      return Res(
        out_channels=channels, resample=resample, dropout=self.dropout, train=train,
        dtype=self.dtype, act=self.act, eps=self.norm_eps, groups=self.norm_groups,
        skip_time_act=self.skip_time_act, out_scale=scale, name=name,
      )  # fmt: skip

    def attn(name):
      return Attn(
        mode="self", head_dim=self.head_dim, heads=None, use_text=self.text_attention,
        dtype=self.dtype, chunk_size=self.attn_chunk_size, text_kv=self.text_kv,
        eps=self.attn_norm_eps, groups=self.norm_groups, impl=self.attn_impl, name=name,
      )  # fmt: skip

    return res, attn

  def _down(self, h, emb, text, text_mask, res, attn):
    """The down path: (h at the lowest resolution, the skip activations, first to last)."""
    levels, skips = self.levels, [h]
    for level, ch in enumerate(levels):
      for i in range(self._res_blocks(level)):
        h = res(ch, f"down_{level}_res_{i}")(h, emb)
        if self._has_attn(level):
          h = attn(f"down_{level}_attn_{i}")(h, text, text_mask)
        skips.append(h)
      if level < len(levels) - 1:
        if self.resblock_updown:
          h = res(ch, f"down_{level}_resample", "down")(h, emb)
        else:
          h = layers.conv(ch, strides=2, dtype=self.dtype, name=f"down_{level}_conv")(h)
        skips.append(h)
    return h, skips

  def _up(self, h, skips, emb, text, text_mask, res, attn):
    """The up path, reading the skip activations last to first."""
    levels = self.levels
    for level in reversed(range(len(levels))):
      ch = levels[level]
      for i in range(self._res_blocks(level) + 1):
        h = res(ch, f"up_{level}_res_{i}")(jnp.concatenate([h, skips.pop()], axis=-1), emb)
        if self._has_attn(level):
          h = attn(f"up_{level}_attn_{i}")(h, text, text_mask)
      if level > 0:
        if self.resblock_updown:
          h = res(ch, f"up_{level}_resample", "up")(h, emb)
        else:
          up = layers.nearest_upsample(h)
          h = layers.conv(ch, dtype=self.dtype, name=f"up_{level}_conv")(up)
    return h
