"""One PRNG key per row of a cascade call, so that a picture depends on its prompt, its index and
the call's key, never on its batch or its position in it.

A row's key comes from the call's key, the prompt's text (and how many times the same text came
before it in the list, so repeated prompts differ) and the image index; each stage folds in its
own index. A prompt alone gives the picture it gave in a grid. Rows given as embeddings are
keyed by their position instead.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.diffusion import rng
from imagen_jax.errors import InputError, InputTypeError


def base_key(key=None, seed=None):
  """The call's PRNG key: `key` (a typed key or a raw uint32[2] PRNGKey) or jax.random.key(seed)
  (seed 0 when neither is given)."""
  if key is not None and seed is not None:
    raise InputError("Give key or seed, not both.")
  if key is None:
    if seed is not None and not isinstance(seed, (int, np.integer)):
      raise InputTypeError(f"seed must be an integer (pass PRNG keys as key=), got {type(seed)}.")
    return jax.random.key(0 if seed is None else int(seed))
  key = rng.typed(key)
  if key.shape != ():
    raise InputError(
      f"key must be one PRNG key, got {key.shape[0]} (each picture's key is made from it)."
    )
  return key


def row_keys(key, prompts: list[str] | None, count: int, images_per_prompt: int):
  """keys [count * images_per_prompt], row (p, j) at p * images_per_prompt + j (see the module
  docstring); `prompts` None: rows given as embeddings, keyed by position."""
  if prompts is None:
    ids, repeats = np.arange(count), np.zeros(count)
  else:
    seen: dict[str, int] = {}
    ids, repeats = [], []
    for text in prompts:
      ids.append(zlib.crc32(text.encode()) & 0x7FFFFFFF)
      repeats.append(seen.get(text, 0))
      seen[text] = repeats[-1] + 1
  ids = jnp.asarray(np.repeat(np.asarray(ids, np.int64), images_per_prompt), jnp.uint32)
  repeats = jnp.asarray(np.repeat(np.asarray(repeats, np.int64), images_per_prompt), jnp.uint32)
  j = jnp.asarray(np.tile(np.arange(images_per_prompt), count), jnp.uint32)
  fold = jax.random.fold_in
  return jax.vmap(lambda a, r, b: fold(fold(fold(key, a), r), b))(ids, repeats, j)
