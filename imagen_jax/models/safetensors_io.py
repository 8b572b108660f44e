"""A memory-mapped reader of safetensors files that yields one numpy tensor at a time.

The format (huggingface.co/docs/safetensors): 8 bytes little-endian header length N, N bytes of
JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the
raw little-endian data. Reading through np.memmap touches only the bytes of the tensor asked for,
and bfloat16 comes back as ml_dtypes.bfloat16, which numpy alone cannot express.
"""

from __future__ import annotations

import json
import pathlib
import struct

import ml_dtypes
import numpy as np

from imagen_jax.errors import DataError

DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}


class SafetensorsFile:
  """Tensors of one .safetensors file, read lazily: `names()`, `shape(name)`, `get(name)`."""

  def __init__(self, path):
    self.path = pathlib.Path(path)
    with open(self.path, "rb") as f:
      (header_len,) = struct.unpack("<Q", f.read(8))
      if header_len > 100 * 2**20:
        raise DataError(f"{self.path} is not a safetensors file (header of {header_len} bytes).")
      header = json.loads(f.read(header_len))
    self.metadata = header.pop("__metadata__", None) or {}
    self._header = header
    self._data_start = 8 + header_len
    self._mmap = None

  def names(self) -> list[str]:
    return list(self._header)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._header[name]["shape"])

  def get(self, name: str) -> np.ndarray:
    """The tensor `name` as a read-only numpy array backed by the file."""
    info = self._header[name]
    if info["dtype"] not in DTYPES:
      raise DataError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}.")
    if self._mmap is None:
      self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
    begin, end = info["data_offsets"]
    raw = self._mmap[self._data_start + begin : self._data_start + end]
    return raw.view(DTYPES[info["dtype"]]).reshape(info["shape"])


def save_file(path, tensors: dict, metadata: dict | None = None) -> None:
  """Writes numpy arrays {name: array} as one .safetensors file (the format above), atomically."""
  codes = {np.dtype(v): k for k, v in DTYPES.items()}
  header, offset, arrays = {}, 0, []
  for name, array in tensors.items():
    array = np.ascontiguousarray(array)
    if array.dtype not in codes:
      raise DataError(f"Tensor {name} has dtype {array.dtype}, which safetensors cannot store.")
    header[name] = {
      "dtype": codes[array.dtype],
      "shape": list(array.shape),
      "data_offsets": [offset, offset + array.nbytes],
    }
    offset += array.nbytes
    arrays.append(array)
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(blob)) + blob)
    for array in arrays:
      f.write(array.tobytes())
  tmp.replace(path)
