"""The Flax T5 encoder against transformers' PyTorch T5EncoderModel, weight import, sharding."""

import json
import logging
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from imagen_jax import parallel
from imagen_jax.errors import DataError, InputError, MissingPath, Unreachable
from imagen_jax.models import t5, t5_weights
from imagen_jax.text import TextEncoder
from imagen_jax.text.tokenizers import load_tokenizer

GOLDEN = pathlib.Path(__file__).parent / "golden" / "t5"
FAMILIES = ["v1_0_relu", "v1_1_gated_gelu", "byt5_vocab", "v1_1_6_buckets_3_layers"]


def encode(directory, ids, mask, mesh=None):
  config = t5_weights.read_config(directory)
  params = t5_weights.load_params(directory, config, mesh=mesh)
  return np.asarray(t5.T5Encoder(config).apply({"params": params}, ids, mask))


@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_matches_transformers_golden_outputs(family):
  """Golden files from tests/golden/make_t5_golden.py: padded inputs longer than the relative
  attention's max distance, and PyTorch's last hidden states at every position."""
  expected = np.load(GOLDEN / family / "expected.npz")
  out = encode(GOLDEN / family, expected["input_ids"], expected["mask"])
  assert not expected["mask"].all()
  assert (
    expected["input_ids"].shape[1]
    > t5_weights.read_config(GOLDEN / family).relative_attention_max_distance
  )
  np.testing.assert_allclose(out, expected["last_hidden_state"], atol=1e-4, rtol=0)


def test_t5_v1_1_xxl_has_the_papers_encoder_size():
  counts = t5.count_params(t5.T5_V1_1_XXL)
  # The paper's 4.6B counts the encoder's layers; the 32128 x 4096 token embedding (0.13B) is the
  # table T5 shares with its decoder.
  assert abs(counts["without_embedding"] / 4.6e9 - 1) < 0.03
  assert counts["token_embedding"] == 32128 * 4096


def test_sharded_forward_equals_single_device():
  expected = np.load(GOLDEN / "v1_1_gated_gelu" / "expected.npz")
  ids, mask = expected["input_ids"], expected["mask"]
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  single = encode(GOLDEN / "v1_1_gated_gelu", ids, mask)
  config = t5_weights.read_config(GOLDEN / "v1_1_gated_gelu")
  params = t5_weights.load_params(GOLDEN / "v1_1_gated_gelu", config, mesh=mesh)
  wi = params["layers_0"]["mlp"]["wi_0"]["kernel"]
  assert wi.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert len(wi.addressable_shards) == 8 and wi.addressable_shards[0].data.shape == (16, 32)
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None))
  sharded = jax.jit(t5.T5Encoder(config).apply)(
    {"params": params}, jax.device_put(ids, batch), jax.device_put(mask, batch)
  )
  np.testing.assert_allclose(np.asarray(sharded), single, atol=1e-5)


def _copy_model(tmp_path):
  dst = tmp_path / "model"
  shutil.copytree(GOLDEN / "v1_1_gated_gelu", dst)
  return dst


def test_missing_tensor_is_named(tmp_path):
  d = _copy_model(tmp_path)
  tensors = load_file(d / "model.safetensors")
  del tensors["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
  save_file(tensors, d / "model.safetensors")
  with pytest.raises(DataError, match=r"missing.*encoder\.block\.1\.layer\.1"):
    t5_weights.load_params(d, t5_weights.read_config(d))


def test_unexpected_tensor_is_named_but_decoder_tensors_are_ignored(tmp_path):
  d = _copy_model(tmp_path)
  tensors = load_file(d / "model.safetensors")
  tensors["decoder.final_layer_norm.weight"] = np.ones(32, np.float32)
  save_file(tensors, d / "model.safetensors")
  t5_weights.load_params(d, t5_weights.read_config(d))  # a full seq2seq checkpoint loads
  tensors["encoder.block.0.layer.2.extra.weight"] = np.ones(3, np.float32)
  save_file(tensors, d / "model.safetensors")
  with pytest.raises(DataError, match=r"unexpected.*layer\.2\.extra"):
    t5_weights.load_params(d, t5_weights.read_config(d))


def test_shape_mismatch_is_named(tmp_path):
  d = _copy_model(tmp_path)
  config = json.loads((d / "config.json").read_text())
  config["d_ff"] = 48
  (d / "config.json").write_text(json.dumps(config))
  with pytest.raises(DataError, match=r"shape.*wi_0\.weight"):
    t5_weights.load_params(d, t5_weights.read_config(d))


def test_sharded_index_checkpoint_loads(tmp_path):
  d = _copy_model(tmp_path)
  tensors = load_file(d / "model.safetensors")
  names = sorted(tensors)
  halves = {
    "model-00001-of-00002.safetensors": names[::2],
    "model-00002-of-00002.safetensors": names[1::2],
  }
  for file, part in halves.items():
    save_file({n: tensors[n] for n in part}, d / file)
  (d / "model.safetensors").unlink()
  weight_map = {n: f for f, part in halves.items() for n in part}
  (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  expected = np.load(d / "expected.npz")
  out = encode(d, expected["input_ids"], expected["mask"])
  np.testing.assert_allclose(out, expected["last_hidden_state"], atol=1e-4)


def test_directory_without_safetensors_says_how_to_convert(tmp_path):
  d = _copy_model(tmp_path)
  (d / "model.safetensors").rename(d / "pytorch_model.bin")
  with pytest.raises(MissingPath, match=r"pytorch_model\.bin.*save_pretrained"):
    t5_weights.load_params(d, t5_weights.read_config(d))


def test_bfloat16_checkpoint_loads(tmp_path):
  import ml_dtypes

  d = _copy_model(tmp_path)
  tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in load_file(d / "model.safetensors").items()}
  save_file(tensors, d / "model.safetensors")
  config = t5_weights.read_config(d)
  params = t5_weights.load_params(d, config)
  ref = t5_weights.load_params(GOLDEN / "v1_1_gated_gelu", config)
  np.testing.assert_allclose(params["token_embedder"], ref["token_embedder"], rtol=1e-2)


def _as_flax_checkpoint(tensors: dict) -> dict:
  """Hugging Face's Flax T5 layout of PyTorch-named tensors: nested by the name's parts, linear
  weights as kernels [in, out], embeddings as `embedding`."""
  tree = {}
  for name, value in tensors.items():
    *parents, leaf = name.split(".")
    if leaf == "weight" and parents[-1] in ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"):
      leaf, value = "kernel", value.T
    elif leaf == "weight" and parents[-1] in ("shared", "relative_attention_bias"):
      leaf = "embedding"
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = np.ascontiguousarray(value)
  return tree


@pytest.mark.parametrize("family", ["v1_0_relu", "v1_1_gated_gelu"])
def test_flax_msgpack_checkpoint_loads_the_same_parameters(tmp_path, family):
  """google/t5-v1_1-xxl on the hub serves Flax msgpack, not safetensors: read it lazily, with
  the decoder (here a full copy of the encoder's tensors under decoder.) skipped unread."""
  from flax import serialization

  d = tmp_path / family
  d.mkdir()
  shutil.copy(GOLDEN / family / "config.json", d)
  tensors = load_file(GOLDEN / family / "model.safetensors")
  tensors |= {"decoder." + k[len("encoder.") :]: v for k, v in tensors.items() if "encoder." in k}
  (d / "flax_model.msgpack").write_bytes(serialization.to_bytes(_as_flax_checkpoint(tensors)))
  config = t5_weights.read_config(d)
  params = t5_weights.load_params(d, config)
  reference = t5_weights.load_params(GOLDEN / family, config)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(reference), strict=True):
    np.testing.assert_array_equal(got, want)
  expected = np.load(GOLDEN / family / "expected.npz")
  out = encode(d, expected["input_ids"], expected["mask"])
  np.testing.assert_allclose(out, expected["last_hidden_state"], atol=1e-4, rtol=0)


def test_hub_downloads_the_first_weights_format_read_without_pickles(monkeypatch):
  import huggingface_hub

  from imagen_jax.text.encoder import hub_files

  repos = {
    "google/t5-v1_1-xxl": [
      "config.json",
      "spiece.model",
      "pytorch_model.bin",
      "flax_model.msgpack",
    ],
    "org/both": ["config.json", "model.safetensors", "flax_model.msgpack"],
    "org/pickles": ["config.json", "pytorch_model.bin", "tf_model.h5"],
  }
  monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id: repos[repo_id])
  assert "flax_model.msgpack*" in hub_files("google/t5-v1_1-xxl")
  assert "*.safetensors" in hub_files("org/both") and "flax_model.msgpack*" not in hub_files(
    "org/both"
  )
  with pytest.raises(MissingPath, match=r"pytorch_model\.bin.*not read"):
    hub_files("org/pickles")


def test_a_hub_id_without_the_hub_uses_the_cache_or_says_what_to_do(monkeypatch, tmp_path, caplog):
  import huggingface_hub
  from huggingface_hub.errors import LocalEntryNotFoundError

  from imagen_jax import hub
  from imagen_jax.text.encoder import hub_files

  # The tests run with HF_HUB_OFFLINE=1: listing the repository fails, nothing is cached.
  with pytest.raises(Unreachable, match=r"cache.*cannot be reached"):
    TextEncoder.from_pretrained("google/t5-v1_1-base")

  class ConnectError(Exception):  # what the hub's HTTP client raises without a network
    pass

  def unreachable(repo_id):
    raise ConnectError("[Errno -2] Name or service not known")

  cache = {}

  def snapshot_download(repo_id, local_files_only=False, **kwargs):
    if not local_files_only:
      raise ConnectError("[Errno -2] Name or service not known")
    if repo_id not in cache:
      raise LocalEntryNotFoundError("not cached")
    return str(cache[repo_id])

  monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
  with pytest.raises(Unreachable, match=r"cannot be reached.*ConnectError.*Errno -2"):
    hub.snapshot("google/t5-v1_1-base", unreachable)
  cache["google/t5-v1_1-base"] = tmp_path
  with caplog.at_level(logging.WARNING):
    assert hub.snapshot("google/t5-v1_1-base", hub_files) == tmp_path
  assert re.search(r"cached.*google/t5-v1_1-base", caplog.text)
  with pytest.raises(InputError, match="'builtin:shapes-tiy'"):
    load_tokenizer("builtin:shapes-tiy")


def _write_t5x_checkpoint(directory, tensors: dict, num_layers: int):
  """A T5X checkpoint of PyTorch-named `tensors`: `checkpoint` (msgpack of the train state) with
  the encoder under target/, the embedding inline and every other tensor a zarr array written by
  TensorStore at a relative path, as T5X writes partitioned parameters; a decoder tensor too."""
  import tensorstore as ts
  from flax import serialization

  t5x = {
    "token_embedder/embedding": tensors["shared.weight"],
    "encoder/relpos_bias/rel_embedding": tensors[
      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    ].T,
    "encoder/encoder_norm/scale": tensors["encoder.final_layer_norm.weight"],
    "decoder/decoder_norm/scale": tensors["encoder.final_layer_norm.weight"],
  }
  for i in range(num_layers):
    block = f"encoder.block.{i}.layer"
    ours = f"encoder/layers_{i}"
    t5x[f"{ours}/pre_attention_layer_norm/scale"] = tensors[f"{block}.0.layer_norm.weight"]
    t5x[f"{ours}/pre_mlp_layer_norm/scale"] = tensors[f"{block}.1.layer_norm.weight"]
    for theirs, torch in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
      t5x[f"{ours}/attention/{theirs}/kernel"] = tensors[
        f"{block}.0.SelfAttention.{torch}.weight"
      ].T
    for name in ("wi_0", "wi_1", "wo"):
      t5x[f"{ours}/mlp/{name}/kernel"] = tensors[f"{block}.1.DenseReluDense.{name}.weight"].T
  target = {}
  for name, value in t5x.items():
    leaf = np.ascontiguousarray(value, np.float32)
    if name != "token_embedder/embedding":
      relative = "target." + name.replace("/", ".")
      spec = {
        "driver": "zarr",
        "kvstore": {"driver": "file", "path": relative},
        "metadata": {"shape": list(leaf.shape), "chunks": list(leaf.shape), "dtype": "<f4"},
      }
      written = dict(spec, kvstore={"driver": "file", "path": str(directory / relative)})
      ts.open(written, create=True).result().write(leaf).result()
      leaf = spec
    node = target
    *parents, last = name.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = leaf
  state = {"target": target, "state": {"step": np.int32(1000)}}
  (directory / "checkpoint").write_bytes(serialization.msgpack_serialize(state))


def test_t5x_native_checkpoint_loads_with_its_config_read_from_the_shapes(tmp_path):
  """T5X's own checkpoints (gs://t5-data/pretrained_models/t5x/ on a TPU VM) have no
  config.json: the config comes from the tensor shapes, the tensors through TensorStore."""
  family = "v1_1_gated_gelu"
  reference_config = t5_weights.read_config(GOLDEN / family)
  d = tmp_path / "checkpoint_1000"
  d.mkdir()
  _write_t5x_checkpoint(
    d, load_file(GOLDEN / family / "model.safetensors"), reference_config.num_layers
  )
  config = t5_weights.read_config(d)
  for field in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
    assert getattr(config, field) == getattr(reference_config, field), field
  assert config.is_gated and config.relative_attention_num_buckets == 8
  assert config.relative_attention_max_distance == 128  # T5's, which shapes cannot tell
  # The tiny golden model uses a max distance of 16: a config.json beside the checkpoint wins.
  shutil.copy(GOLDEN / family / "config.json", d)
  expected = np.load(GOLDEN / family / "expected.npz")
  out = encode(d, expected["input_ids"], expected["mask"])
  np.testing.assert_allclose(out, expected["last_hidden_state"], atol=1e-4, rtol=0)
