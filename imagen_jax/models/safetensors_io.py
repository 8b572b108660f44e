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
        raise ValueError(f"{self.path} is not a safetensors file (header of {header_len} bytes).")
      header = json.loads(f.read(header_len))
    header.pop("__metadata__", None)
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
      raise ValueError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}.")
    if self._mmap is None:
      self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
    begin, end = info["data_offsets"]
    raw = self._mmap[self._data_start + begin : self._data_start + end]
    return raw.view(DTYPES[info["dtype"]]).reshape(info["shape"])


def open_checkpoint(directory) -> dict[str, SafetensorsFile]:
  """name -> file for `model.safetensors` or a sharded `model.safetensors.index.json` in a dir."""
  directory = pathlib.Path(directory)
  index = directory / "model.safetensors.index.json"
  if index.exists():
    weight_map = json.loads(index.read_text())["weight_map"]
    files = {f: SafetensorsFile(directory / f) for f in sorted(set(weight_map.values()))}
    return {name: files[f] for name, f in weight_map.items()}
  single = directory / "model.safetensors"
  if single.exists():
    f = SafetensorsFile(single)
    return {name: f for name in f.names()}
  others = sorted(p.name for p in directory.glob("*") if p.suffix in (".bin", ".msgpack", ".h5"))
  hint = (
    f" It has {others}: convert them with transformers, e.g. "
    "T5EncoderModel.from_pretrained(src).save_pretrained(dst), which writes safetensors."
    if others
    else ""
  )
  raise FileNotFoundError(
    f"No model.safetensors or model.safetensors.index.json in {directory}.{hint}"
  )
