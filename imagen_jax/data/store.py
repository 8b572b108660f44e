"""A store of precomputed text embeddings, read by example index.

Layout of a store directory:
  meta.json        {"encoder", "max_length", "dim", "num_examples", "dataset", "completed"}
  embeddings.npy   bfloat16 [N, L, D] (saved as uint16 bits; numpy has no bfloat16)
  mask.npy         bool [N, L]
Rows [0, completed) are final. Writing goes in index order and `completed` is updated only after
the rows it covers are flushed, so an interrupted run resumes where it stopped and never exposes a
half-written row.
"""

from __future__ import annotations

import json
import os
import pathlib

import ml_dtypes
import numpy as np

from imagen_jax.errors import DataError, MissingPath

META = "meta.json"


def _write_json_atomic(path: pathlib.Path, value: dict) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(value, indent=1))
  os.replace(tmp, path)


class EmbeddingStore:
  """Reads rows of a finished store: `get(index) -> (emb bfloat16 [L, D], mask bool [L])`.

  Opens its memory maps lazily, so it pickles cheaply into data-loader worker processes.
  """

  def __init__(self, path):
    self.path = pathlib.Path(path)
    meta_path = self.path / META
    if not meta_path.exists():
      raise MissingPath(
        f"No embedding store at {self.path}; make one with `imagen-jax encode-text`."
      )
    self.meta = json.loads(meta_path.read_text())
    if self.meta["completed"] < self.meta["num_examples"]:
      raise DataError(
        f"The embedding store {self.path} is incomplete ({self.meta['completed']} of "
        f"{self.meta['num_examples']} rows); run `imagen-jax encode-text` again to finish it."
      )
    self._arrays = None

  def __getstate__(self):
    return {"path": self.path, "meta": self.meta}

  def __setstate__(self, state):
    self.path, self.meta = state["path"], state["meta"]
    self._arrays = None

  def __len__(self) -> int:
    return self.meta["num_examples"]

  def get(self, index: int):
    # Data-loader threads call this concurrently: both maps are opened into locals and published
    # as one tuple, so no thread sees one map without the other.
    arrays = self._arrays
    if arrays is None:
      arrays = (
        np.load(self.path / "embeddings.npy", mmap_mode="r"),
        np.load(self.path / "mask.npy", mmap_mode="r"),
      )
      self._arrays = arrays
    emb, mask = arrays
    return np.asarray(emb[index]).view(ml_dtypes.bfloat16), np.asarray(mask[index])

  def check_matches(
    self, *, encoder: str, max_length: int, dim: int, num_examples: int | None = None
  ) -> None:
    """Raises ValueError if the store was made for another encoder, length or dataset (its
    size, when `num_examples` is given)."""
    want = {"encoder": encoder, "max_length": max_length, "dim": dim}
    if num_examples is not None:
      want["num_examples"] = num_examples
    diff = {k: (self.meta[k], v) for k, v in want.items() if self.meta[k] != v}
    if diff:
      detail = ", ".join(f"{k}: store {a!r} vs config {b!r}" for k, (a, b) in diff.items())
      raise DataError(f"The embedding store {self.path} does not fit this config ({detail}).")


class StoreWriter:
  """Creates or resumes a store. `start` is the first row still to write; `write(rows)` appends
  the next rows and records them as completed."""

  def __init__(
    self, path, *, encoder: str, max_length: int, dim: int, num_examples: int, dataset: str
  ):
    self.path = pathlib.Path(path)
    self.path.mkdir(parents=True, exist_ok=True)
    meta_path = self.path / META
    identity = {
      "encoder": encoder,
      "max_length": max_length,
      "dim": dim,
      "num_examples": num_examples,
      "dataset": dataset,
    }
    if meta_path.exists():
      self.meta = json.loads(meta_path.read_text())
      old = {k: self.meta.get(k) for k in identity}
      if old != identity:
        raise DataError(
          f"{self.path} holds a store for {old}, not {identity}; choose another --out."
        )
      mode = "r+"
    else:
      self.meta = {**identity, "completed": 0}
      mode = "w+"
    self._emb = np.lib.format.open_memmap(
      self.path / "embeddings.npy",
      mode=mode,
      dtype=np.uint16,
      shape=(num_examples, max_length, dim),
    )
    self._mask = np.lib.format.open_memmap(
      self.path / "mask.npy", mode=mode, dtype=np.bool_, shape=(num_examples, max_length)
    )
    if mode == "w+":
      _write_json_atomic(meta_path, self.meta)

  @staticmethod
  def complete(path, **identity) -> bool:
    """Whether `path` holds a finished store of `identity` (the constructor's keywords)."""
    meta_path = pathlib.Path(path) / META
    if not meta_path.exists():
      return False
    meta = json.loads(meta_path.read_text())
    same = all(meta.get(k) == v for k, v in identity.items())
    return same and meta["completed"] >= meta["num_examples"]

  @property
  def start(self) -> int:
    return self.meta["completed"]

  @property
  def done(self) -> bool:
    return self.meta["completed"] >= self.meta["num_examples"]

  def write(self, emb, mask) -> None:
    """Appends rows: emb [n, L, D] (any float dtype; stored as bfloat16), mask [n, L] bool."""
    start = self.meta["completed"]
    stop = start + len(emb)
    self._emb[start:stop] = np.asarray(emb).astype(ml_dtypes.bfloat16).view(np.uint16)
    self._mask[start:stop] = np.asarray(mask, bool)
    self._emb.flush()
    self._mask.flush()
    self.meta["completed"] = stop
    _write_json_atomic(self.path / META, self.meta)
