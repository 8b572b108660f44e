"""The rows of a cascade call, (prompt, image index) pairs, prompt-major: their keys and inputs,
run in chunks of at most `batch_size` rows, each padded to split evenly over the mesh (a padding
row repeats the first)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax import parallel
from imagen_jax.errors import InputError
from imagen_jax.images import to_float
from imagen_jax.pipeline.conditioning import Conditioning
from imagen_jax.pipeline.keys import row_keys


@dataclasses.dataclass(frozen=True)
class Rows:
  """What every row of a call reads.

  Attributes:
    cond: the text conditioning, one row each.
    keys: typed PRNG keys [N], one per row (pipeline/keys.py).
    prompt_index: int [N], the prompt of each row.
    start: uint8 [N, S, S, 3], pictures that replace the base stage's (start_image), or None.
    chunk: the most rows one device call runs.
  """

  cond: Conditioning
  keys: jax.Array
  prompt_index: np.ndarray
  start: np.ndarray | None
  chunk: int

  @classmethod
  def plan(cls, cond: Conditioning, *, key, images_per_prompt: int, batch_size, start=None):
    """The rows of `cond` (already repeated images_per_prompt times), keyed from the call's
    `key`; `start` uint8 [P, S, S, 3] is one picture per prompt."""
    count = cond.text.shape[0]
    prompts = count // images_per_prompt
    chunk = count if batch_size is None else batch_size
    if not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk < 1:
      raise InputError(f"batch_size must be a positive integer, got {batch_size}.")
    keys = row_keys(key, cond.texts, prompts, images_per_prompt)
    index = np.repeat(np.arange(prompts), images_per_prompt)
    if start is not None:
      start = np.asarray(start)[index]
    return cls(cond=cond, keys=keys, prompt_index=index, start=start, chunk=int(chunk))

  @property
  def count(self) -> int:
    return len(self.prompt_index)

  def chunks(self) -> Iterator[slice]:
    for lo in range(0, self.count, self.chunk):
      yield slice(lo, min(self.count, lo + self.chunk))


@dataclasses.dataclass(frozen=True)
class Chunk:
  """One chunk's inputs on the devices, padded to split over the mesh; the first `count` rows,
  those of `prompt_index` (the prompt of each), are real."""

  prompt_index: np.ndarray
  keys: jax.Array
  text: jax.Array
  mask: jax.Array
  null_text: jax.Array | None
  null_mask: jax.Array | None
  start: jax.Array | None  # float [padded, S, S, 3] in [-1, 1]

  @property
  def count(self) -> int:
    return len(self.prompt_index)


def put(array, mesh, rank: int):
  """`array` [n, ...] padded to split over the mesh's batch axes, sharded there (None: None)."""
  if array is None:
    return None
  padded = parallel.pad_batch(jnp.asarray(array), mesh)
  return jax.device_put(padded, parallel.batch_sharding(mesh, rank))


def place(rows: Rows, part: slice, mesh) -> Chunk:
  """The rows `part` of `rows`, on the devices of `mesh`."""
  cond = rows.cond
  text = put(cond.text[part], mesh, 3)
  keys = rows.keys[part]
  extra = text.shape[0] - len(keys)
  if extra:
    keys = jnp.concatenate([keys, jnp.repeat(keys[:1], extra)])
  section = lambda a: None if a is None else a[part]
  start = None if rows.start is None else to_float(jnp.asarray(rows.start[part]))
  return Chunk(
    prompt_index=rows.prompt_index[part],
    keys=keys,
    text=text,
    mask=put(cond.mask[part], mesh, 2),
    null_text=put(section(cond.null_text), mesh, 3),
    null_mask=put(section(cond.null_mask), mesh, 2),
    start=put(start, mesh, 4),
  )
