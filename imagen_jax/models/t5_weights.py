"""Import T5 checkpoints (Hugging Face's safetensors or Flax msgpack, or T5X's native checkpoints)
into the parameters of models.t5.T5Encoder.

Tensors are read one at a time from memory-mapped files and placed straight onto their devices
(each device receives only its own slice when a mesh is given), so loading T5-XXL never holds a
second copy of the model in host memory. No PyTorch is needed.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
from etils import epath

from imagen_jax.errors import DataError, MissingPath
from imagen_jax.models import t5x_io
from imagen_jax.models.flax_msgpack_io import FlaxMsgpackFile
from imagen_jax.models.safetensors_io import SafetensorsFile
from imagen_jax.models.t5 import T5Config, T5Encoder
from imagen_jax.models.weight_loading import load_mapped

# Tensors of full encoder-decoder checkpoints that the encoder does not use.
IGNORED_PREFIXES = ("decoder.", "lm_head.")


def _linear(heads: int | None = None, kv: int | None = None, out: bool = False) -> Callable:
  """torch Linear weight [out, in] -> our kernel layout."""

  def convert(w):
    w = w.T  # [in, out]
    if heads is None:
      return w
    if out:  # [H*K, D] -> [H, K, D]
      return w.reshape(heads, kv, w.shape[-1])
    return w.reshape(w.shape[0], heads, kv)  # [D, H*K] -> [D, H, K]

  return convert


def name_map(config: T5Config) -> dict[tuple[str, ...], tuple[tuple[str, ...], Callable]]:
  """Our parameter path -> (accepted checkpoint names, conversion of the stored tensor)."""
  same = lambda w: w
  h, k = config.num_heads, config.d_kv
  m = {
    ("token_embedder",): (("shared.weight", "encoder.embed_tokens.weight"), same),
    ("relative_attention_bias",): (
      ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",),
      same,
    ),
    ("final_norm", "scale"): (("encoder.final_layer_norm.weight",), same),
  }
  for i in range(config.num_layers):
    pre = f"encoder.block.{i}.layer"
    ours = f"layers_{i}"
    m[(ours, "pre_attention_norm", "scale")] = ((f"{pre}.0.layer_norm.weight",), same)
    m[(ours, "pre_mlp_norm", "scale")] = ((f"{pre}.1.layer_norm.weight",), same)
    for our, theirs in (("query", "q"), ("key", "k"), ("value", "v")):
      m[(ours, "attention", our, "kernel")] = (
        (f"{pre}.0.SelfAttention.{theirs}.weight",),
        _linear(h, k),
      )
    m[(ours, "attention", "out", "kernel")] = (
      (f"{pre}.0.SelfAttention.o.weight",),
      _linear(h, k, out=True),
    )
    ff = ("wi_0", "wi_1", "wo") if config.is_gated else ("wi", "wo")
    for name in ff:
      m[(ours, "mlp", name, "kernel")] = ((f"{pre}.1.DenseReluDense.{name}.weight",), _linear())
  return m


def abstract_params(config: T5Config, param_dtype=jnp.float32):
  """Boxed (logically partitioned) ShapeDtypeStructs of the encoder's parameters."""
  model = T5Encoder(config, param_dtype=param_dtype)
  ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  mask = jax.ShapeDtypeStruct((1, 8), jnp.bool_)
  return jax.eval_shape(model.init, jax.random.key(0), ids, mask)["params"]


def tensor_files(directory) -> dict:
  """name -> lazily read file of the encoder's tensors in a model directory, named as in Hugging
  Face's PyTorch checkpoints: a T5X checkpoint, `model.safetensors` (or a sharded index), or
  else Flax's `flax_model.msgpack` (or a sharded index; the decoder is skipped unread).
  Pickled PyTorch (`.bin`) and TensorFlow (`.h5`) files are not read: the error names what the
  folder holds."""
  if t5x_io.is_checkpoint(directory):  # T5X's native checkpoint (local or gs://)
    file = t5x_io.T5XCheckpoint(directory)
    return {tensor: file for tensor in file.names()}
  directory = pathlib.Path(directory)
  readers = (
    ("model.safetensors", "model.safetensors.index.json", SafetensorsFile),
    # The fp16 variant of diffusers' pipelines (DeepFloyd IF's text_encoder/), when it is alone.
    ("model.fp16.safetensors", "model.safetensors.index.fp16.json", SafetensorsFile),
    (
      "flax_model.msgpack",
      "flax_model.msgpack.index.json",
      lambda path: FlaxMsgpackFile(path, keep=("shared", "encoder")),
    ),
  )
  for name, index_name, reader in readers:
    index = directory / index_name
    if index.exists():
      shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / name).exists():
      shards = [name]
    else:
      continue
    tensors = {}
    for shard in shards:
      file = reader(directory / shard)
      tensors.update({tensor: file for tensor in file.names()})
    return tensors
  found = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".h5", ".ckpt", ".pt"))
  hint = (
    f" It holds {found}, which are not read (pickles and TensorFlow files): use a copy in "
    "safetensors, e.g. T5EncoderModel.from_pretrained(src).save_pretrained(dst) with "
    "transformers."
    if found
    else ""
  )
  raise MissingPath(
    f"No T5 weights in {directory}: it needs model.safetensors or flax_model.msgpack (or their "
    f"sharded .index.json), or is a T5X checkpoint directory.{hint}"
  )


def load_params(directory, config: T5Config, *, param_dtype=jnp.float32, mesh=None):
  """Encoder parameters from the safetensors checkpoint in `directory`.

  With `mesh`, every parameter is created sharded by parallel.LOGICAL_AXIS_RULES, each device
  reading only its slice; without, parameters land on the default device.
  Raises ValueError naming every missing, unexpected or wrongly shaped tensor.
  """
  return load_mapped(
    tensor_files(directory),
    abstract_params(config, param_dtype),
    name_map(config),
    description=(
      f"The checkpoint in {directory} does not fit the T5 config (d_model={config.d_model}, "
      f"layers={config.num_layers}, heads={config.num_heads}, gated={config.is_gated})"
    ),
    ignored_prefixes=IGNORED_PREFIXES,
    mesh=mesh,
  )


def read_config(directory) -> T5Config:
  """The T5Config of a model directory: its config.json, or the shapes of a T5X checkpoint."""
  path = epath.Path(directory) / "config.json"
  if not path.exists() and t5x_io.is_checkpoint(directory):
    return t5x_io.T5XCheckpoint(directory).config()
  if not path.exists():
    raise MissingPath(f"No config.json in {directory}; it should be a T5 model directory.")
  config = json.loads(path.read_text())
  if config.get("model_type") not in (None, "t5", "mt5", "umt5"):
    raise DataError(f"{path} describes a {config['model_type']!r} model, not a T5 encoder.")
  return T5Config.from_dict(config)
