"""A reader of T5X's native checkpoints (e.g. gs://t5-data/pretrained_models/t5x/t5_1_1_xxl/
checkpoint_1000000), tensor by tensor, giving the encoder's tensors Hugging Face's PyTorch names
and layouts, so models/t5_weights.py loads them as it loads safetensors.

A T5X checkpoint directory holds `checkpoint`, a msgpack (flax.serialization) of the train state
whose parameters sit under `target`: small ones inline, partitioned ones as TensorStore specs
({"driver": "zarr", "kvstore": {"driver": "file" | "gcs", "path": relative path}, ...}) of zarr
arrays beside it (t5x/checkpoints.py). T5X names (t5x/examples/t5/network.py) map to PyTorch's
as Hugging Face's T5X conversion does: kernels [in, out] become weights [out, in], the relative
position table [heads, buckets] becomes [buckets, heads].
"""

from __future__ import annotations

import copy
import re

import numpy as np
from etils import epath
from flax import serialization

from imagen_jax.errors import DataError

_LAYER = re.compile(r"encoder/layers_(\d+)/(.+)")
# T5X name within an encoder layer -> (PyTorch name within block i, transposed)
_IN_LAYER = {
  "pre_attention_layer_norm/scale": ("layer.0.layer_norm.weight", False),
  "attention/query/kernel": ("layer.0.SelfAttention.q.weight", True),
  "attention/key/kernel": ("layer.0.SelfAttention.k.weight", True),
  "attention/value/kernel": ("layer.0.SelfAttention.v.weight", True),
  "attention/out/kernel": ("layer.0.SelfAttention.o.weight", True),
  "pre_mlp_layer_norm/scale": ("layer.1.layer_norm.weight", False),
  "mlp/wi/kernel": ("layer.1.DenseReluDense.wi.weight", True),
  "mlp/wi_0/kernel": ("layer.1.DenseReluDense.wi_0.weight", True),
  "mlp/wi_1/kernel": ("layer.1.DenseReluDense.wi_1.weight", True),
  "mlp/wo/kernel": ("layer.1.DenseReluDense.wo.weight", True),
}
_TOP = {
  "token_embedder/embedding": ("shared.weight", False),
  "encoder/relpos_bias/rel_embedding": (
    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    True,
  ),
  "encoder/encoder_norm/scale": ("encoder.final_layer_norm.weight", False),
}


def torch_name(t5x_name: str) -> tuple[str, bool] | None:
  """(PyTorch name, transposed) of a T5X encoder parameter name, or None for other parameters
  (the decoder's)."""
  if t5x_name in _TOP:
    return _TOP[t5x_name]
  match = _LAYER.fullmatch(t5x_name)
  if match and match[2] in _IN_LAYER:
    name, transposed = _IN_LAYER[match[2]]
    return f"encoder.block.{match[1]}.{name}", transposed
  return None


def is_checkpoint(directory) -> bool:
  return (epath.Path(directory) / "checkpoint").exists()


def _leaves(tree, path=()):
  """(path, array or TensorStore spec) of every parameter of a T5X state tree."""
  if isinstance(tree, dict) and not {"driver", "kvstore"} <= set(tree):
    for key, value in tree.items():
      yield from _leaves(value, (*path, key))
  else:
    yield path, tree


class T5XCheckpoint:
  """The encoder tensors of a T5X checkpoint directory (local or gs://): `names()`,
  `shape(name)`, `get(name)`; each `get` reads one tensor."""

  def __init__(self, directory):
    self.directory = epath.Path(directory)
    state = serialization.msgpack_restore((self.directory / "checkpoint").read_bytes())
    if "target" not in state:
      raise DataError(f"{self.directory}/checkpoint has no `target` parameters: not T5X's.")
    self._tensors = {}
    for path, leaf in _leaves(state["target"]):
      mapped = torch_name("/".join(path))
      if mapped is not None:
        self._tensors[mapped[0]] = (leaf, mapped[1])

  def names(self) -> list[str]:
    return list(self._tensors)

  def shape(self, name: str) -> tuple[int, ...]:
    leaf, transposed = self._tensors[name]
    shape = tuple(leaf["metadata"]["shape"]) if isinstance(leaf, dict) else np.shape(leaf)
    return tuple(shape[::-1] if transposed else shape)

  def get(self, name: str) -> np.ndarray:
    leaf, transposed = self._tensors[name]
    array = self._read(leaf) if isinstance(leaf, dict) else np.asarray(leaf)
    return array.T if transposed else array

  def _read(self, spec: dict) -> np.ndarray:
    """A TensorStore array of the checkpoint, its relative path made absolute (a gs://
    checkpoint is read through TensorStore's GCS driver)."""
    import tensorstore as ts

    spec = copy.deepcopy(spec)
    kvstore = spec["kvstore"]
    where = str(self.directory)
    match = re.fullmatch(r"gs://([^/]+)/(.*)", where)
    if match:
      kvstore.update(driver="gcs", bucket=match[1], path=f"{match[2]}/{kvstore['path']}")
    else:
      kvstore.update(driver="file", path=f"{where}/{kvstore['path']}")
    return np.asarray(ts.open(spec, open=True, read=True).result().read().result())

  def config(self):
    """The T5Config these tensors describe (T5X checkpoints carry no config.json): sizes from
    the shapes, gated GELU when the MLP has wi_0 and wi_1 (T5 v1.1), ReLU otherwise (v1.0)."""
    from imagen_jax.models.t5 import T5Config

    layers = {n.split(".")[2] for n in self._tensors if n.startswith("encoder.block.")}
    vocab, d_model = self.shape("shared.weight")
    buckets, heads = self.shape(
      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    )
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in self._tensors
    wi = "wi_0" if gated else "wi"
    return T5Config(
      vocab_size=vocab,
      d_model=d_model,
      d_kv=self.shape("encoder.block.0.layer.0.SelfAttention.q.weight")[0] // heads,
      d_ff=self.shape(f"encoder.block.0.layer.1.DenseReluDense.{wi}.weight")[0],
      num_layers=len(layers),
      num_heads=heads,
      relative_attention_num_buckets=buckets,
      feed_forward_proj="gated-gelu" if gated else "relu",
    )
