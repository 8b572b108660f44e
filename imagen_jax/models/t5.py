"""The T5 encoder in flax.linen: T5 v1.0 (ReLU) and v1.1 / Flan-T5 / mT5 / ByT5 (gated-GELU).

Architecture facts (Raffel et al. 2020; the T5 v1.1 release notes; Hugging Face's T5 port):
pre-norm residual blocks with RMS layer norm (no bias, no mean subtraction, eps 1e-6); attention
without the 1/sqrt(d) scale (it is folded into the initialisation); one relative position bias
table [buckets, heads], computed in the first layer and shared by all layers; bidirectional
log-spaced buckets; a final RMS norm; no biases anywhere; dropout is not used (frozen encoder).

Every parameter carries logical axis names ("vocab", "embed", "heads", "kv", "mlp",
"relpos_buckets") so that parallel.LOGICAL_AXIS_RULES shards T5-XXL with FSDP and tensor
parallelism.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.errors import ConfigError

ACTIVATIONS = {
  "relu": jax.nn.relu,
  "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # HF "gelu_new": tanh approximation
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
  "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """The encoder's hyper-parameters, named as in Hugging Face's T5Config."""

  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  d_ff: int = 2048
  num_layers: int = 6
  num_heads: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "relu"

  @property
  def is_gated(self) -> bool:
    return self.feed_forward_proj.startswith("gated-")

  @property
  def activation(self) -> str:
    act = self.feed_forward_proj.removeprefix("gated-")
    # HF maps "gated-gelu" to the tanh-approximate GELU ("gelu_new"), as in the original T5 v1.1.
    return "gelu_new" if self.feed_forward_proj == "gated-gelu" else act

  def __post_init__(self):
    if self.activation not in ACTIVATIONS:
      raise ConfigError(
        f"Unsupported feed_forward_proj {self.feed_forward_proj!r}; supported: relu, gelu, "
        f"silu, gelu_new and their gated- forms."
      )

  @classmethod
  def from_dict(cls, d: dict) -> T5Config:
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    if "num_layers" not in kwargs and "num_hidden_layers" in d:
      kwargs["num_layers"] = d["num_hidden_layers"]
    return cls(**kwargs)

  @classmethod
  def from_json_file(cls, path) -> T5Config:
    return cls.from_dict(json.loads(pathlib.Path(path).read_text()))


# T5 v1.1-XXL, the paper's encoder (huggingface.co/google/t5-v1_1-xxl config.json).
T5_V1_1_XXL = T5Config(
  vocab_size=32128,
  d_model=4096,
  d_kv=64,
  d_ff=10240,
  num_layers=24,
  num_heads=64,
  feed_forward_proj="gated-gelu",
)


def relative_position_bucket(relative_position, *, num_buckets: int, max_distance: int):
  """Bidirectional T5 buckets of key_pos - query_pos (int array) -> bucket ids in [0, buckets).

  Half the buckets per direction; in each half, distances below half of it are exact and the rest
  are log-spaced up to max_distance, beyond which all share the last bucket.
  """
  num_buckets //= 2
  buckets = (relative_position > 0).astype(jnp.int32) * num_buckets
  distance = jnp.abs(relative_position)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(
    max_distance / max_exact
  )
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, distance, large)


def _init(init, *names):
  return nn.with_logical_partitioning(init, names)


class RMSNorm(nn.Module):
  """y = x / sqrt(mean(x^2) + eps) * scale, computed in float32."""

  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param(
      "scale", _init(nn.initializers.ones, "embed"), (x.shape[-1],), self.param_dtype
    )
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return (x * scale.astype(jnp.float32)).astype(self.dtype)


class _Layer(nn.Module):
  """A part of the encoder: its config, compute dtype and parameter dtype."""

  config: T5Config
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32


class SelfAttention(_Layer):
  @nn.compact
  def __call__(self, x, bias):
    """x [B, L, D], bias [B or 1, H, L, L] (position bias plus mask) -> [B, L, D]."""
    cfg = self.config
    d, h, k = cfg.d_model, cfg.num_heads, cfg.d_kv
    init = nn.initializers.normal((d * k) ** -0.5)

    def proj(name):
      return nn.DenseGeneral(
        (h, k),
        use_bias=False,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=_init(init, "embed", "heads", "kv"),
        name=name,
      )(x)

    q, k_, v = proj("query"), proj("key"), proj("value")
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k_, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(scores + bias, axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return nn.DenseGeneral(
      d,
      axis=(-2, -1),
      use_bias=False,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=_init(nn.initializers.normal((h * k) ** -0.5), "heads", "kv", "embed"),
      name="out",
    )(out)


class FeedForward(_Layer):
  @nn.compact
  def __call__(self, x):
    cfg = self.config

    def dense(features, names, name, fan_in):
      return nn.Dense(
        features,
        use_bias=False,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=_init(nn.initializers.normal(fan_in**-0.5), *names),
        name=name,
      )

    act = ACTIVATIONS[cfg.activation]
    if cfg.is_gated:
      hidden = act(dense(cfg.d_ff, ("embed", "mlp"), "wi_0", cfg.d_model)(x))
      hidden = hidden * dense(cfg.d_ff, ("embed", "mlp"), "wi_1", cfg.d_model)(x)
    else:
      hidden = act(dense(cfg.d_ff, ("embed", "mlp"), "wi", cfg.d_model)(x))
    return dense(cfg.d_model, ("mlp", "embed"), "wo", cfg.d_ff)(hidden)


class EncoderLayer(_Layer):
  @nn.compact
  def __call__(self, x, bias):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    eps = self.config.layer_norm_epsilon
    x = x + SelfAttention(self.config, name="attention", **kw)(
      RMSNorm(eps, name="pre_attention_norm", **kw)(x), bias
    )
    normed = RMSNorm(eps, name="pre_mlp_norm", **kw)(x)
    return x + FeedForward(self.config, name="mlp", **kw)(normed)


class T5Encoder(_Layer):
  """input_ids [B, L] int, mask [B, L] bool -> last hidden states [B, L, d_model] (`dtype`)."""

  @nn.compact
  def __call__(self, input_ids, mask):
    cfg = self.config
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    embedding = self.param(
      "token_embedder",
      _init(nn.initializers.normal(1.0), "vocab", "embed"),
      (cfg.vocab_size, cfg.d_model),
      self.param_dtype,
    )
    x = jnp.take(embedding, input_ids, axis=0).astype(self.dtype)
    length = input_ids.shape[1]
    rel_table = self.param(
      "relative_attention_bias",
      _init(nn.initializers.normal(1.0), "relpos_buckets", "heads"),
      (cfg.relative_attention_num_buckets, cfg.num_heads),
      self.param_dtype,
    )
    positions = jnp.arange(length)
    buckets = relative_position_bucket(
      positions[None, :] - positions[:, None],
      num_buckets=cfg.relative_attention_num_buckets,
      max_distance=cfg.relative_attention_max_distance,
    )
    position_bias = jnp.transpose(jnp.take(rel_table, buckets, axis=0), (2, 0, 1))  # [H, Lq, Lk]
    mask_bias = jnp.where(mask[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
    bias = position_bias[None].astype(jnp.float32) + mask_bias
    for i in range(cfg.num_layers):
      x = EncoderLayer(cfg, name=f"layers_{i}", **kw)(x, bias)
    return RMSNorm(cfg.layer_norm_epsilon, name="final_norm", **kw)(x)


def count_params(config: T5Config) -> dict[str, int]:
  """Parameter counts of the encoder via jax.eval_shape (nothing is allocated)."""
  model = T5Encoder(config)
  ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  mask = jax.ShapeDtypeStruct((1, 8), jnp.bool_)
  shapes = jax.eval_shape(model.init, jax.random.key(0), ids, mask)["params"]
  sizes = jax.tree.map(lambda x: math.prod(x.shape), nn.unbox(shapes))
  total = sum(jax.tree.leaves(sizes))
  embedding = sizes["token_embedder"]
  return {"total": total, "token_embedding": embedding, "without_embedding": total - embedding}
