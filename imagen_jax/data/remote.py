"""Datasets on object stores (gs://): sources read from them and built datasets written to them.

TFDS writes ArrayRecord shards with a native writer, so a dataset for a `data_dir` on an object
store is built in a local temporary folder and then uploaded, file by file, through etils.epath
(gcsfs for gs://); a folder of images on an object store is copied to a local temporary folder
before it is read. Every host then reads its own shard from the uploaded dataset.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator

from etils import epath

from imagen_jax import paths
from imagen_jax.errors import PathError

log = logging.getLogger(__name__)
_CHUNK = 16 * 2**20


def _copy(source: epath.Path, target: epath.Path) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  with source.open("rb") as a, target.open("wb") as b:
    shutil.copyfileobj(a, b, _CHUNK)


def files(folder) -> list[epath.Path]:
  """Every file under `folder` (local or a URL; object stores refuse recursive globs), sorted."""
  folder = epath.Path(folder)
  return sorted(epath.Path(top) / name for top, _, names in folder.walk() for name in names)


def copy_tree(source, target) -> int:
  """Copies every file under `source` to the same place under `target` (either may be a URL);
  returns the number of files."""
  source, target = epath.Path(source), epath.Path(target)
  found = files(source)
  for path in found:
    _copy(path, target / path.relative_to(source))
  return len(found)


@contextlib.contextmanager
def local_copy(folder: str) -> Iterator[pathlib.Path]:
  """`folder` itself when it is local, else a temporary local copy of it (removed afterwards)."""
  if not paths.is_url(folder):
    yield pathlib.Path(folder)
    return
  with tempfile.TemporaryDirectory(prefix="imagen-jax-source-") as tmp:
    count = copy_tree(folder, tmp)
    log.info("copied %d files of %s to read them", count, folder)
    yield pathlib.Path(tmp)


def build(make: Callable, data_dir: str | None, prepare: Callable | None = None):
  """make(data_dir) -> a TFDS builder; builds its dataset (with `prepare(builder)`, default
  download_and_prepare) in `data_dir`, or, for an object-store data_dir, in a local temporary
  folder uploaded to it afterwards. Returns the builder of `data_dir`."""
  prepare = prepare or (lambda builder: builder.download_and_prepare())
  if not paths.is_url(data_dir or ""):
    builder = make(data_dir)
    root = pathlib.Path(builder.data_dir_root)
    try:
      root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise PathError(
        f"Cannot write the dataset into {root} ({e.strerror or e}): set --config.data.data_dir "
        "to a folder you can write."
      ) from None
    prepare(builder)
    return builder
  with tempfile.TemporaryDirectory(prefix="imagen-jax-build-") as tmp:
    prepare(make(tmp))
    count = copy_tree(tmp, data_dir)
  log.info("uploaded the dataset (%d files) to %s", count, data_dir)
  return make(data_dir)
