"""A lazy reader of Flax msgpack checkpoints (Hugging Face's `flax_model.msgpack`), tensor by
tensor, without unpickling and without reading the tensors it is not asked for.

The format (flax.serialization.to_bytes): a msgpack map of maps whose leaves are msgpack
extension objects of type 1, each holding msgpack (shape, dtype name, raw bytes). One pass over
the file's headers records where each tensor's bytes lie (skipping them, and whole subtrees that
are not wanted, such as T5's decoder, without reading their data); `get` then returns a
read-only view of a memory map, as the safetensors reader does. Tensors are named as in Hugging
Face's PyTorch checkpoints ("encoder.block.0.layer.0.SelfAttention.q.weight"), Flax kernels
[in, out] given back transposed as PyTorch's [out, in] weights, so one name table serves both.
"""

from __future__ import annotations

import pathlib

import ml_dtypes
import msgpack
import numpy as np

from imagen_jax.errors import DataError

_NDARRAY_EXT = 1  # flax.serialization's extension type of numpy arrays
# msgpack's sized types: (kind, bytes of the length field).
_SIZED = {
  0xDE: ("map", 2),
  0xDF: ("map", 4),
  0xDC: ("array", 2),
  0xDD: ("array", 4),
  0xD9: ("str", 1),
  0xDA: ("str", 2),
  0xDB: ("str", 4),
  0xC4: ("bin", 1),
  0xC5: ("bin", 2),
  0xC6: ("bin", 4),
}
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}  # ext 8, 16, 32: bytes of the length field
# Fixed-size scalars: bytes after the type byte (ints, uints, float32, float64).
_SCALAR = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xCA: 4, 0xCB: 8}


def _uint(buf, pos: int, width: int) -> int:
  return int.from_bytes(bytes(buf[pos : pos + width]), "big")


def _header(buf, pos: int) -> tuple[str, int, int]:
  """(kind, n, position after the header) of the msgpack object at `pos`: n is the entry count
  of a "map" or "array", the byte length of a "str", "bin" or "ext" (an ext's type byte
  included), the bytes of a "scalar"'s value."""
  b = int(buf[pos])
  if 0x80 <= b <= 0x8F:
    return "map", b & 0x0F, pos + 1
  if 0x90 <= b <= 0x9F:
    return "array", b & 0x0F, pos + 1
  if 0xA0 <= b <= 0xBF:
    return "str", b & 0x1F, pos + 1
  if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):  # fixints, nil, false, true
    return "scalar", 0, pos + 1
  if b in _SIZED:
    kind, width = _SIZED[b]
    return kind, _uint(buf, pos + 1, width), pos + 1 + width
  if 0xD4 <= b <= 0xD8:  # fixext 1, 2, 4, 8, 16
    return "ext", 1 + (1 << (b - 0xD4)), pos + 1
  if b in _EXT:
    return "ext", 1 + _uint(buf, pos + 1, _EXT[b]), pos + 1 + _EXT[b]
  if b in _SCALAR:
    return "scalar", _SCALAR[b], pos + 1
  raise DataError(f"not a msgpack object at byte {pos}")


def _skip(buf, pos: int) -> int:
  """The position after the msgpack object at `pos` (only headers are read)."""
  kind, n, pos = _header(buf, pos)
  if kind in ("map", "array"):
    for _ in range(2 * n if kind == "map" else n):
      pos = _skip(buf, pos)
    return pos
  return pos + n


def _dtype(name: str) -> np.dtype:
  return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def torch_name(path: tuple[str, ...]) -> tuple[str, bool]:
  """(PyTorch-style name, whether the stored tensor is transposed from PyTorch's layout) of a
  Flax parameter path: kernels and embeddings are named `weight`, kernels are [in, out]."""
  *parents, leaf = path
  if leaf == "kernel":
    return ".".join([*parents, "weight"]), True
  if leaf == "embedding":
    return ".".join([*parents, "weight"]), False
  return ".".join(path), False


class FlaxMsgpackFile:
  """Tensors of one Flax msgpack file under the top-level keys in `keep` (all when None), read
  lazily: `names()`, `shape(name)`, `get(name)`."""

  def __init__(self, path, keep: tuple[str, ...] | None = None):
    self.path = pathlib.Path(path)
    self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
    self._tensors: dict[str, tuple[int, tuple[int, ...], np.dtype, bool]] = {}
    if not len(self._mmap) or _header(self._mmap, 0)[0] != "map":
      raise DataError(f"{self.path} is not a Flax msgpack checkpoint (no map at its start).")
    self._walk(0, (), keep)

  def _walk(self, pos: int, path: tuple[str, ...], keep) -> int:
    """Records the tensors of the map at `pos`; returns the position after it."""
    _, entries, pos = _header(self._mmap, pos)
    for _ in range(entries):
      kind, n, start = _header(self._mmap, pos)
      if kind != "str":
        raise DataError(f"{self.path}: the key at byte {pos} is not a string.")
      here = (*path, bytes(self._mmap[start : start + n]).decode())
      top = here[1:] if here[0] == "params" else here  # a {"params": ...} wrapper
      pos = start + n
      kind, n, start = _header(self._mmap, pos)
      if kind == "map" and (keep is None or len(top) != 1 or top[0] in keep):
        pos = self._walk(pos, here, keep)
      elif kind == "ext" and int(self._mmap[start]) == _NDARRAY_EXT:
        name, transposed = torch_name(top)
        self._tensors[name] = (*self._array_header(start + 1), transposed)
        pos = start + n
      else:  # an unwanted subtree, a scalar, or a chunked array (not in these models)
        pos = _skip(self._mmap, pos)
    return pos

  def _array_header(self, payload: int) -> tuple[int, tuple[int, ...], np.dtype]:
    """(offset of the raw bytes, shape, dtype) of the (shape, dtype, bytes) payload there."""
    kind, _, pos = _header(self._mmap, payload)
    if kind != "array":
      raise DataError(f"{self.path}: the array at byte {payload} has no (shape, dtype, bytes).")
    end = _skip(self._mmap, pos)
    shape = tuple(msgpack.unpackb(bytes(self._mmap[pos:end])))
    _, n, start = _header(self._mmap, end)
    dtype = _dtype(bytes(self._mmap[start : start + n]).decode())
    kind, size, offset = _header(self._mmap, start + n)
    if kind != "bin" or size != int(np.prod(shape)) * dtype.itemsize:
      raise DataError(f"{self.path}: the tensor at byte {payload} does not match its shape.")
    return offset, shape, dtype

  def names(self) -> list[str]:
    return list(self._tensors)

  def shape(self, name: str) -> tuple[int, ...]:
    _, shape, _, transposed = self._tensors[name]
    return shape[::-1] if transposed else shape

  def get(self, name: str) -> np.ndarray:
    """The tensor `name` in PyTorch's layout, as a read-only view of the file."""
    offset, shape, dtype, transposed = self._tensors[name]
    size = int(np.prod(shape)) * dtype.itemsize
    array = self._mmap[offset : offset + size].view(dtype).reshape(shape)
    return array.T if transposed else array
