"""Building blocks of the U-Nets: convolutions and norms with logical axis names, embeddings,
attention (with text keys/values, cross-attention, attention pooling) and residual blocks.

Arrays are NHWC; text is [B, T, D_text] with a mask [B, T] (True = a real token). Parameters are
float32 (`param_dtype`); compute runs in `dtype` (bfloat16 on accelerators), with norms and
softmax in float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.errors import ConfigError

Dtype = jnp.dtype
# Parameter axis names (parallel.LOGICAL_AXIS_RULES maps them to the mesh). "column" layers split
# their outputs over "tensor", "row" layers their inputs, as in Megatron-LM's pairs of matmuls.
COLUMN = ("channels_in", "channels")
ROW = ("channels", "channels_in")


def _boxed(init: Callable, names: tuple[str, ...]) -> Callable:
  return nn.with_logical_partitioning(init, names)


def zeros_init(names):
  return _boxed(nn.initializers.zeros_init(), names)


def default_init(names, scale: float = 1.0):
  return _boxed(nn.initializers.variance_scaling(scale, "fan_avg", "uniform"), names)


def dense(features, *, names=COLUMN, zero=False, dtype=jnp.float32, name=None, use_bias=True):
  return nn.Dense(
    features,
    dtype=dtype,
    use_bias=use_bias,
    kernel_init=zeros_init(names) if zero else default_init(names),
    bias_init=zeros_init(names[-1:]),
    name=name,
  )


def conv(features, *, kernel=3, strides=1, names=COLUMN, zero=False, dtype=jnp.float32, name=None):
  kernel_names = ("conv_height", "conv_width", *names)
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(strides, strides),
    padding="SAME",
    dtype=dtype,
    kernel_init=zeros_init(kernel_names) if zero else default_init(kernel_names),
    bias_init=zeros_init(names[-1:]),
    name=name,
  )


def num_groups(channels: int, preferred: int = 32) -> int:
  """The largest group count <= preferred that divides the channels."""
  return math.gcd(channels, preferred)


class GroupNorm(nn.Module):
  """GroupNorm in float32, returning `dtype`; parameters "norm/scale" and "norm/bias" [C], as in
  flax's nn.GroupNorm (epsilon 1e-6), with the statistics and gradient of `group_norm`."""

  groups: int = 32
  dtype: Dtype = jnp.float32
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    scale, bias = _NormParams(name="norm")(x.shape[-1])
    groups = num_groups(x.shape[-1], self.groups)
    return group_norm(x, scale, bias, groups, self.eps).astype(self.dtype)


class _NormParams(nn.Module):
  @nn.compact
  def __call__(self, channels):
    scale = self.param("scale", _boxed(nn.initializers.ones_init(), ("norm",)), (channels,))
    bias = self.param("bias", _boxed(nn.initializers.zeros_init(), ("norm",)), (channels,))
    return scale, bias


def group_norm(x, scale, bias, groups: int, eps: float = 1e-6):
  """GroupNorm of x [B, ..., C] over its non-batch axes in `groups` groups of channels, then
  scale and bias [C]: float32 [B, ..., C].

  Written out rather than left to autodiff, for XLA:CPU: one pass over x for both statistics,
  one over (dy, x) for both gradient sums, each a single variadic reduce over [B, N / 8, 8, C]
  (XLA:CPU reduces over N alone far slower); the per-group values are spread back to channels
  by a 0/1 matrix product that XLA computes once, where a reshape-broadcast was recomputed for
  every element of the pass that normalises. Measurements: docs/performance.md.
  """
  if x.shape[-1] % groups:
    raise ConfigError(f"GroupNorm: {x.shape[-1]} channels do not split into {groups} groups.")
  return _group_norm(x, scale, bias, groups, eps)


def _sum2(a, b):
  """(sum(a), sum(b)) over axis 1 of [B, N, C] -> [B, C], in one variadic reduce."""
  bsz, n, c = a.shape
  k = math.gcd(n, 8)
  a, b = a.reshape(bsz, n // k, k, c), b.reshape(bsz, n // k, k, c)
  zero = jnp.float32(0)
  s1, s2 = jax.lax.reduce((a, b), (zero, zero), lambda u, v: (u[0] + v[0], u[1] + v[1]), (1,))
  return s1.sum(1), s2.sum(1)


def _group_mean(v, groups, n):
  """[B, C] per-channel sums -> [B, G] means of each group's n values."""
  return v.reshape(v.shape[0], groups, -1).sum(-1) / n


def _per_channel(v, channels):
  """[..., G] -> [..., C]: each channel takes its group's value."""
  groups = v.shape[-1]
  member = jnp.arange(channels) // (channels // groups) == jnp.arange(groups)[:, None]
  return jnp.dot(v, member.astype(v.dtype), precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _group_norm(x, scale, bias, groups, eps):
  return _group_norm_fwd(x, scale, bias, groups, eps)[0]


def _group_norm_fwd(x, scale, bias, groups, eps):
  x3 = x.astype(jnp.float32).reshape(x.shape[0], -1, x.shape[-1])  # [B, N, C]
  n = x3.shape[1] * x3.shape[2] // groups
  s1, s2 = _sum2(x3, x3 * x3)
  mean = _group_mean(s1, groups, n)
  # E[x^2] - mean^2, as flax computes it by default.
  rstd = jax.lax.rsqrt(jnp.maximum(_group_mean(s2, groups, n) - mean * mean, 0.0) + eps)
  r, m = _per_channel(jnp.stack([rstd, mean * rstd]), x.shape[-1])  # xhat = x * r - m
  y = x3 * (r * scale)[:, None] + (bias - m * scale)[:, None]
  return y.reshape(x.shape), (x, r, m, scale, bias)


def _group_norm_bwd(groups, eps, res, dy):
  x, r, m, scale, bias = res
  x3 = x.astype(jnp.float32).reshape(x.shape[0], -1, x.shape[-1])
  dy3 = dy.astype(jnp.float32).reshape(x3.shape)
  n = x3.shape[1] * x3.shape[2] // groups
  sum_dy, sum_dyx = _sum2(dy3, dy3 * x3)  # [B, C]
  sum_dyxhat = r * sum_dyx - m * sum_dy
  # Group means of g = dL/dxhat = dy * scale and of g * xhat.
  m1, m2 = _per_channel(
    jnp.stack([_group_mean(scale * sum_dy, groups, n), _group_mean(scale * sum_dyxhat, groups, n)]),
    x.shape[-1],
  )
  # dx = r * (g - mean(g) - xhat * mean(g * xhat)), one multiply-add per element.
  a, b, c = r * scale, -r * r * m2, r * (m * m2 - m1)
  dx = (dy3 * a[:, None] + x3 * b[:, None] + c[:, None]).reshape(x.shape).astype(x.dtype)
  return dx, sum_dyxhat.sum(0).astype(scale.dtype), sum_dy.sum(0).astype(bias.dtype)


_group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


class LayerNorm(nn.Module):
  """LayerNorm in float32 over the last axis, returning `dtype`."""

  dtype: Dtype = jnp.float32
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm(
      epsilon=self.eps,
      dtype=jnp.float32,
      scale_init=_boxed(nn.initializers.ones_init(), ("norm",)),
      bias_init=_boxed(nn.initializers.zeros_init(), ("norm",)),
      name="norm",
    )(x.astype(jnp.float32))
    return y.astype(self.dtype)


ACTIVATIONS = {
  "silu": nn.silu,
  "swish": nn.silu,
  # Exact GELU, as torch's nn.GELU (and so diffusers' "gelu"); jax's default is the tanh form.
  "gelu": functools.partial(nn.gelu, approximate=False),
}


def activation(name: str) -> Callable:
  if name not in ACTIVATIONS:
    raise ConfigError(f"Unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}.")
  return ACTIVATIONS[name]


def sinusoidal_embedding(
  t,
  dim: int,
  *,
  max_period: float = 10_000.0,
  scale: float = 1000.0,
  flip_sin_to_cos: bool = True,
  freq_shift: float = 0.0,
):
  """[B] -> [B, dim]: sin/cos of scale * t at geometric frequencies exp(-ln(max_period) i /
  (dim / 2 - freq_shift)), cos first when `flip_sin_to_cos` (the ADM/DDPM timestep embedding;
  scale 1000 maps continuous t in [0, 1] onto the 0..1000 range of discrete steps, scale 1 takes
  the steps themselves)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
  args = (scale * t.astype(jnp.float32))[:, None] * freqs[None]
  pair = (jnp.cos(args), jnp.sin(args)) if flip_sin_to_cos else (jnp.sin(args), jnp.cos(args))
  return jnp.pad(jnp.concatenate(pair, axis=-1), ((0, 0), (0, dim - 2 * half)))


class TimeEmbedding(nn.Module):
  """t [B] -> [B, emb_dim]: sinusoids of width `channels`, Dense, activation, Dense."""

  channels: int
  emb_dim: int
  dtype: Dtype = jnp.float32
  act: str = "silu"
  scale: float = 1000.0  # see sinusoidal_embedding
  flip_sin_to_cos: bool = True
  freq_shift: float = 0.0

  @nn.compact
  def __call__(self, t):
    h = sinusoidal_embedding(
      t,
      self.channels,
      scale=self.scale,
      flip_sin_to_cos=self.flip_sin_to_cos,
      freq_shift=self.freq_shift,
    ).astype(self.dtype)
    h = dense(self.emb_dim, names=("time_embed", "channels"), dtype=self.dtype, name="dense_0")(h)
    h = activation(self.act)(h)
    return dense(self.emb_dim, names=("channels", "time_embed"), dtype=self.dtype, name="dense_1")(
      h
    )


# How attention is computed (the U-Nets' `attn_impl`): "chunked" is `attention` below;
# "dot_product" is jax.nn.dot_product_attention's XLA path (the same arithmetic); "cudnn" is its
# fused cuDNN kernel (GPU, bfloat16 or float16); "auto" takes cuDNN where it applies, else
# "chunked".
ATTENTION_IMPLS = ("auto", "chunked", "dot_product", "cudnn")


def attention_impl(impl: str, dtype, head_dim: int, backend: str | None = None) -> str:
  """The implementation `impl` resolves to for inputs of `dtype` and `head_dim` on `backend`
  (default: JAX's default backend)."""
  if impl not in ATTENTION_IMPLS:
    raise ConfigError(f"Unknown attn_impl {impl!r}; choose one of {ATTENTION_IMPLS}.")
  if impl != "auto":
    return impl
  backend = backend or jax.default_backend()
  # cuDNN's fused attention takes half-precision inputs with head sizes a multiple of 8, up to
  # 128 (jax.nn.dot_product_attention's documented limits).
  fused = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128
  return "cudnn" if backend == "gpu" and fused else "chunked"


def attention(q, k, v, mask=None, *, chunk_size: int = 1024, impl: str = "chunked"):
  """Multi-head attention: q [B, Lq, H, D], k and v [B, Lk, H, D], mask [B, Lk] (True = attend)
  -> [B, Lq, H, D]. Queries scaled by 1/sqrt(D); scores and softmax in float32.

  `impl` (ATTENTION_IMPLS) chooses the computation; every one computes the same function. The
  rest of this docstring describes "chunked".

  Keys and values are put heads-major ([B, H, Lk, D]) once, so both products are plain batched
  matmuls, and the softmax is normalised after the value product (a division per output rather
  than per score, as in flash attention).

  When Lq exceeds `chunk_size`, queries are processed in chunks under jax.checkpoint, so the
  scores never take more than chunk_size x Lk per head (Rabe & Staats 2021, query chunking);
  the backward pass recomputes each chunk.
  """
  impl = attention_impl(impl, q.dtype, q.shape[-1])
  if impl in ("dot_product", "cudnn"):
    return _jax_attention(q, k, v, mask, "xla" if impl == "dot_product" else "cudnn")
  scale = q.shape[-1] ** -0.5
  k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
  bias = None if mask is None else jnp.where(mask, 0.0, -1e30)[:, None, None, :]

  def block(q_chunk):  # [B, c, H, D] -> [B, c, H, D]
    q_heads = jnp.swapaxes(q_chunk * scale, 1, 2)
    s = jnp.einsum("bhqd,bhkd->bhqk", q_heads, k, preferred_element_type=jnp.float32)
    if bias is not None:
      s = s + bias
    # The max is a constant shift for stability; its gradient cancels, so none flows through it.
    e = jnp.exp(s - jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True)))
    out = jnp.einsum("bhqk,bhkd->bhqd", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return jnp.swapaxes(out / jnp.sum(e, axis=-1, keepdims=True), 1, 2).astype(v.dtype)

  length = q.shape[1]
  if length <= chunk_size or length % chunk_size:
    return block(q)
  chunks = q.reshape(q.shape[0], length // chunk_size, chunk_size, *q.shape[2:])
  out = jax.lax.map(jax.checkpoint(block), jnp.moveaxis(chunks, 1, 0))
  return jnp.moveaxis(out, 0, 1).reshape(q.shape[:3] + v.shape[3:])


def _jax_attention(q, k, v, mask, implementation: str):
  """`attention` through jax.nn.dot_product_attention. cuDNN's kernel, with a mask and gradients,
  takes even query and key lengths only (one image token plus the text is often odd), so odd
  lengths get one more key that the mask hides, or one more query whose output is dropped."""
  b, lq, lk = q.shape[0], q.shape[1], k.shape[1]
  if mask is None:
    mask = jnp.ones((b, lk), bool)
  if lk % 2:
    k, v = (jnp.pad(a, ((0, 0), (0, 1), (0, 0), (0, 0))) for a in (k, v))
    mask = jnp.pad(mask, ((0, 0), (0, 1)))
  padded_q = jnp.pad(q, ((0, 0), (0, lq % 2), (0, 0), (0, 0)))
  # A mask over every (query, key) pair, as cuDNN takes it.
  full = jnp.broadcast_to(mask[:, None, None, :], (b, 1, padded_q.shape[1], k.shape[1]))
  out = jax.nn.dot_product_attention(padded_q, k, v, mask=full, implementation=implementation)
  return out[:, :lq]


class TextKeysValues(nn.Module):
  """LayerNorm-ed text tokens projected to keys and values, plus one learned "null" token that is
  always attendable (so an all-masked text, the unconditional case, is well defined).

  text [B, T, D_text], mask [B, T] -> k, v [B, T + 1, H, D], mask [B, T + 1].
  """

  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, text, mask):
    batch = text.shape[0]
    text = LayerNorm(self.dtype, name="text_norm")(text)
    inner = self.heads * self.head_dim
    kv = dense(2 * inner, dtype=self.dtype, name="text_kv")(text)
    null = self.param("null_kv", _boxed(nn.initializers.normal(1.0), ("norm",)), (2 * inner,))
    null = jnp.broadcast_to(null.astype(self.dtype), (batch, 1, 2 * inner))
    kv = jnp.concatenate([null, kv], axis=1).reshape(batch, -1, 2, self.heads, self.head_dim)
    mask = jnp.concatenate([jnp.ones((batch, 1), bool), mask], axis=1)
    return kv[:, :, 0], kv[:, :, 1], mask


class AddedKeysValues(nn.Module):
  """DeepFloyd IF's text keys and values: the projected text tokens group-normalised (32 groups,
  eps 1e-5, as diffusers' `cross_attention_norm="group_norm"` fixes them) and projected by
  separate Dense layers. No null token and no mask: IF attends to every token, padding included.

  text [B, T, D] -> k, v [B, T, H, Dh]."""

  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, text):
    b, length, _ = text.shape
    text = GroupNorm(32, self.dtype, 1e-5, name="norm")(text)
    shape = (b, length, self.heads, self.head_dim)
    k = dense(self.heads * self.head_dim, dtype=self.dtype, name="key")(text).reshape(shape)
    v = dense(self.heads * self.head_dim, dtype=self.dtype, name="value")(text).reshape(shape)
    return k, v


class AttentionBlock(nn.Module):
  """Residual attention over an image [B, H, W, C].

  mode "self": self-attention whose keys/values also hold the text tokens (Imagen's base and
  64->256 models); mode "cross": queries from the image, keys/values from the text only (the
  256->1024 model). heads = channels // head_dim unless `heads` is given.
  `text_kv` "imagen" makes the text keys/values with TextKeysValues (masked, with a null token),
  "added" with AddedKeysValues (DeepFloyd IF's, unmasked); `eps` and `groups` are the image
  GroupNorm's; `impl` how attention is computed (see `attention`).
  """

  mode: str = "self"
  head_dim: int = 64
  heads: int | None = None
  use_text: bool = True
  dtype: Dtype = jnp.float32
  chunk_size: int = 1024
  text_kv: str = "imagen"
  eps: float = 1e-6
  groups: int = 32
  impl: str = "chunked"  # ATTENTION_IMPLS

  def _text_keys_values(self, heads, head_dim, text, text_mask):
    if self.text_kv == "imagen":
      return TextKeysValues(heads, head_dim, self.dtype, name="text")(text, text_mask)
    if self.text_kv == "added":
      k, v = AddedKeysValues(heads, head_dim, self.dtype, name="text")(text)
      return k, v, jnp.ones(k.shape[:2], bool)
    raise ConfigError(f"Unknown text_kv {self.text_kv!r}; use 'imagen' or 'added'.")

  @nn.compact
  def __call__(self, x, text, text_mask):
    b, h, w, c = x.shape
    heads = self.heads or max(1, c // self.head_dim)
    head_dim = c // heads
    y = GroupNorm(self.groups, self.dtype, self.eps, name="norm")(x).reshape(b, h * w, c)
    q = dense(c, dtype=self.dtype, name="query")(y).reshape(b, h * w, heads, head_dim)
    if self.mode == "self":
      k = dense(c, dtype=self.dtype, name="key")(y).reshape(b, h * w, heads, head_dim)
      v = dense(c, dtype=self.dtype, name="value")(y).reshape(b, h * w, heads, head_dim)
      mask = jnp.ones((b, h * w), bool)
      if self.use_text:
        tk, tv, tmask = self._text_keys_values(heads, head_dim, text, text_mask)
        k, v = jnp.concatenate([k, tk], 1), jnp.concatenate([v, tv], 1)
        mask = jnp.concatenate([mask, tmask], 1)
    elif self.mode == "cross":
      k, v, mask = self._text_keys_values(heads, head_dim, text, text_mask)
    else:
      raise ConfigError(f"Unknown attention mode {self.mode!r}; use 'self' or 'cross'.")
    out = attention(q, k, v, mask, chunk_size=self.chunk_size, impl=self.impl)
    out = out.reshape(b, h * w, c)
    out = dense(c, names=ROW, zero=True, dtype=self.dtype, name="out")(out)
    return x + out.reshape(b, h, w, c)


class FeedForward(nn.Module):
  """Residual channel MLP of an image [B, H, W, C]: GN, Dense(mult * C), GELU, Dense(C) (zero
  init); the feed-forward half of the Efficient U-Net's transformer-style attention layers."""

  mult: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    h = GroupNorm(dtype=self.dtype, name="norm")(x)
    h = nn.gelu(dense(self.mult * c, dtype=self.dtype, name="wi")(h))
    return x + dense(c, names=ROW, zero=True, dtype=self.dtype, name="wo")(h)


class AttentionPooling(nn.Module):
  """Text [B, T, D_text] -> one vector [B, out_dim]: a learned query attends over the LayerNorm-ed
  tokens and a learned null token (Imagen's pooled text embedding, added to the time embedding)."""

  channels: int
  out_dim: int
  head_dim: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, text, mask):
    heads = max(1, self.channels // self.head_dim)
    head_dim = self.channels // heads
    k, v, mask = TextKeysValues(heads, head_dim, self.dtype, name="text")(text, mask)
    query = self.param("query", _boxed(nn.initializers.normal(1.0), ("norm",)), (heads * head_dim,))
    q = jnp.broadcast_to(
      query.astype(self.dtype).reshape(1, 1, heads, head_dim), (text.shape[0], 1, heads, head_dim)
    )
    pooled = attention(q, k, v, mask).reshape(text.shape[0], heads * head_dim)
    pooled = LayerNorm(self.dtype, name="pooled_norm")(pooled)
    return dense(self.out_dim, names=("channels_in", "time_embed"), dtype=self.dtype, name="proj")(
      pooled
    )


class TextTimeEmbedding(nn.Module):
  """DeepFloyd IF's pooled text (diffusers' TextTimeEmbedding): text [B, T, D] -> [B, out_dim].

  LayerNorm; one query, the mean token plus a learned position, attends in `heads` heads over
  itself and the tokens (each side scaled by head_dim^-1/4, as IF does); Dense; LayerNorm.
  LayerNorms use torch's eps 1e-5."""

  heads: int
  out_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, text):
    b, _, d = text.shape
    text = LayerNorm(self.dtype, 1e-5, name="norm_in")(text)
    position = self.param("position", _boxed(nn.initializers.normal(d**-0.5), ("norm",)), (d,))
    query = text.mean(axis=1, keepdims=True) + position.astype(self.dtype)  # [B, 1, D]
    tokens = jnp.concatenate([query, text], axis=1)
    head_shape = (b, -1, self.heads, d // self.heads)
    q = dense(d, dtype=self.dtype, name="query")(query).reshape(head_shape)
    k = dense(d, dtype=self.dtype, name="key")(tokens).reshape(head_shape)
    v = dense(d, dtype=self.dtype, name="value")(tokens).reshape(head_shape)
    pooled = attention(q, k, v).reshape(b, d)  # attention scales q by head_dim^-1/2
    proj = dense(self.out_dim, names=("channels_in", "time_embed"), dtype=self.dtype, name="proj")
    pooled = proj(pooled)
    return LayerNorm(self.dtype, 1e-5, name="norm_out")(pooled)


def average_pool(x, factor: int = 2):
  """Average pooling by `factor` (the resampling of BigGAN-style residual blocks)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def nearest_upsample(x, factor: int = 2):
  """Nearest-neighbour upsampling by `factor`."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class ResBlock(nn.Module):
  """Residual block with scale-shift conditioning (ADM; Dhariwal & Nichol 2021):

  h = conv(SiLU(GN(x)));  h = GN(h) * (1 + scale) + shift with (scale, shift) = Dense(SiLU(emb));
  h = conv_zero(dropout(SiLU(h)));  out = skip(x) + h.
  `resample` "down" / "up" resamples inside the block and on the skip (BigGAN-style). With
  emb=None the block is unconditioned (the Efficient U-Net's ResNetBlock).
  DeepFloyd IF's blocks (diffusers' ResnetBlock2D with scale_shift) are these with options: the
  activation `act`, GroupNorm `eps` and `groups`, `skip_time_act` (emb enters the Dense without
  the activation) and `out_scale` (the sum is divided by it).
  """

  out_channels: int
  resample: str | None = None
  dropout: float = 0.0
  train: bool = False
  dtype: Dtype = jnp.float32
  act: str = "silu"
  eps: float = 1e-6
  groups: int = 32
  skip_time_act: bool = False
  out_scale: float = 1.0

  @nn.compact
  def __call__(self, x, emb):
    resize = {"down": average_pool, "up": nearest_upsample, None: lambda v: v}[self.resample]
    act = activation(self.act)
    h = act(GroupNorm(self.groups, self.dtype, self.eps, name="norm_0")(x))
    h = resize(h)
    x = resize(x)
    h = conv(self.out_channels, dtype=self.dtype, name="conv_0")(h)
    h = GroupNorm(self.groups, self.dtype, self.eps, name="norm_1")(h)
    if emb is not None:
      h = ScaleShift(self.dtype, act=None if self.skip_time_act else self.act, name="emb")(h, emb)
    h = nn.Dropout(self.dropout, deterministic=not self.train)(act(h))
    h = conv(self.out_channels, names=ROW, zero=True, dtype=self.dtype, name="conv_1")(h)
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, kernel=1, dtype=self.dtype, name="skip")(x)
    out = x + h
    return out if self.out_scale == 1.0 else out / self.out_scale


class ScaleShift(nn.Module):
  """h * (1 + scale) + shift with (scale, shift) = Dense(act(emb)): FiLM by the conditioning
  embedding emb [B, E] of an image h [B, H, W, C] (`act` None: Dense(emb))."""

  dtype: Dtype = jnp.float32
  zero_init: bool = False  # start as the identity
  act: str | None = "silu"

  @nn.compact
  def __call__(self, h, emb):
    channels = h.shape[-1]
    ss = dense(
      2 * channels,
      names=("time_embed", "channels"),
      zero=self.zero_init,
      dtype=self.dtype,
      name="dense",
    )(emb if self.act is None else activation(self.act)(emb))
    scale, shift = jnp.split(ss[:, None, None, :], 2, axis=-1)
    return h * (1 + scale) + shift


class TextProjection(nn.Module):
  """Text encoder outputs [B, T, D_text] -> LayerNorm -> Dense -> [B, T, cond_dim], computed once
  per U-Net call and shared by its attention and pooling layers (which LayerNorm it again)."""

  cond_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, text):
    text = LayerNorm(self.dtype, name="norm")(text)
    return dense(self.cond_dim, names=("text_embed", "channels"), dtype=self.dtype, name="dense")(
      text
    )


REMAT_POLICIES = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.checkpoint_dots,
}


def maybe_remat(module_cls, policy: str):
  """The module class, rematerialised under `policy` ("none", "full" or "dots")."""
  if policy not in REMAT_POLICIES:
    raise ConfigError(f"Unknown remat policy {policy!r}; choose one of {sorted(REMAT_POLICIES)}.")
  if policy == "none":
    return module_cls
  return nn.remat(module_cls, policy=REMAT_POLICIES[policy])
