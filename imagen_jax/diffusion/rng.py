"""Random draws that are one key for a batch, or one key per example.

Keys come in JAX's two forms: typed (`jax.random.key(0)`, dtype key<...>, shape ()) and legacy
raw (`jax.random.PRNGKey(0)`, uint32 [2] for the default implementation). `typed` takes either,
one key or keys [B], and every function here reads keys through it. With keys [B], example i's
draws come from keys[i] alone, so a sample is the same whatever else is in its batch; with one
key, the batch is drawn from it together.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from imagen_jax.errors import InputTypeError


@functools.cache
def _raw_width() -> int:
  """uint32 words in one legacy key of the default implementation (2 for threefry)."""
  return jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape[-1]


def typed(key):
  """A typed key (shape ()) or typed keys [B] from either form: typed keys as they are, legacy
  uint32 keys [W] or [B, W] wrapped (W = 2 for the default implementation)."""
  if not isinstance(key, jax.Array):
    key = jnp.asarray(key)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.ndim > 1:
      raise InputTypeError(f"keys must be one PRNG key or keys [B], got shape {key.shape}.")
    return key
  if key.dtype == jnp.uint32 and key.ndim in (1, 2) and key.shape[-1] == _raw_width():
    return jax.random.wrap_key_data(key)
  raise InputTypeError(
    "key must be a JAX PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), or one per "
    f"example [B]; got {key.dtype} {key.shape}."
  )


def normal(key, shape, dtype=jnp.float32):
  """Standard normal [*shape]; with keys [B], row i from keys[i] (shape[0] must be B)."""
  key = typed(key)
  if key.ndim == 0:
    return jax.random.normal(key, shape, dtype)
  if key.shape[0] != shape[0]:
    raise InputTypeError(f"{key.shape[0]} keys for a batch of {shape[0]}: give one per example.")
  return jax.vmap(lambda k: jax.random.normal(k, shape[1:], dtype))(key)


def split(key, num: int = 2):
  """`num` keys (each a key or keys [B]) from one key or from keys [B]."""
  key = typed(key)
  if key.ndim == 0:
    return tuple(jax.random.split(key, num))
  keys = jax.vmap(lambda k: jax.random.split(k, num))(key)  # [B, num]
  return tuple(keys[:, i] for i in range(num))


def fold_in(key, data):
  """jax.random.fold_in on one key or on each of keys [B]."""
  key = typed(key)
  if key.ndim == 0:
    return jax.random.fold_in(key, data)
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)
