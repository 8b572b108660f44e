"""Random draws that are one key for a batch, or one key per example.

With keys [B] (a batch of PRNG keys), example i's draws come from keys[i] alone, so a sample is
the same whatever else is in its batch; with one key, the batch is drawn from it together.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def per_example(key) -> bool:
  return jnp.ndim(key) > 0


def normal(key, shape, dtype=jnp.float32):
  """Standard normal [*shape]; with keys [B], row i from keys[i] (shape[0] must be B)."""
  if not per_example(key):
    return jax.random.normal(key, shape, dtype)
  if key.shape[0] != shape[0]:
    raise ValueError(f"{key.shape[0]} keys for a batch of {shape[0]}: give one per example.")
  return jax.vmap(lambda k: jax.random.normal(k, shape[1:], dtype))(key)


def split(key, num: int = 2):
  """`num` keys (each a key or keys [B]) from one key or from keys [B]."""
  if not per_example(key):
    return tuple(jax.random.split(key, num))
  keys = jax.vmap(lambda k: jax.random.split(k, num))(key)  # [B, num]
  return tuple(keys[:, i] for i in range(num))


def fold_in(key, data):
  """jax.random.fold_in on one key or on each of keys [B]."""
  if not per_example(key):
    return jax.random.fold_in(key, data)
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)
