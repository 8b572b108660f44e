"""Importing diffusers' UNet2DConditionModel of DeepFloyd IF's kind: the outputs of tiny random
IF-style stage I and stage II U-Nets match diffusers' (goldens from
tests/golden/make_if_unet_golden.py), from single, sharded and fp16 files, sharded over a mesh;
configs and weights that do not fit fail with errors that name what is wrong."""

import json
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from imagen_jax import parallel
from imagen_jax.errors import DataError, InputError, MissingPath
from imagen_jax.models.safetensors_io import SafetensorsFile, save_file
from imagen_jax.pretrained import UnsupportedConfig, load_unet

GOLDEN = pathlib.Path(__file__).parent / "golden" / "if_unet"
STAGES = ("stage_1", "stage_2")


def _io(name):
  io = np.load(GOLDEN / name / "io.npz")
  labels = io["class_labels"] if io["class_labels"].size else None
  return (io["sample"], io["timesteps"], io["encoder_hidden_states"], labels), io["out"]


def _max_error(out, ref):
  """Largest deviation relative to the output's scale."""
  return float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max())


def _copy(name, tmp_path):
  folder = tmp_path / name
  shutil.copytree(GOLDEN / name, folder)
  return folder


@pytest.mark.parametrize("name", STAGES)
def test_outputs_match_diffusers(name):
  unet = load_unet(GOLDEN / name)
  inputs, ref = _io(name)
  out = unet(*inputs)
  assert out.shape == ref.shape and out.shape[-1] == 6  # eps and the variance values
  assert _max_error(out, ref) < 1e-5
  tensors = SafetensorsFile(GOLDEN / name / "diffusion_pytorch_model.safetensors")
  stored = sum(int(np.prod(tensors.shape(n))) for n in tensors.names())
  assert unet.num_params == stored  # every tensor used, nothing added


def test_sharded_index_and_fp16_variant_load_the_same_model(tmp_path):
  folder = _copy("stage_1", tmp_path)
  single = folder / "diffusion_pytorch_model.safetensors"
  file = SafetensorsFile(single)
  names = file.names()
  tensors = {n: np.array(file.get(n)) for n in names}
  single.unlink()
  halves = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
  for shard, members in halves.items():
    save_file(
      folder
      / shard.replace("a.", "diffusion_pytorch_model-00001-of-00002.").replace(
        "b.", "diffusion_pytorch_model-00002-of-00002."
      ),
      {n: tensors[n] for n in members},
    )
  weight_map = {
    n: (
      "diffusion_pytorch_model-00001-of-00002.safetensors"
      if n in halves["a.safetensors"]
      else "diffusion_pytorch_model-00002-of-00002.safetensors"
    )
    for n in names
  }
  (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
    json.dumps({"metadata": {}, "weight_map": weight_map})
  )
  inputs, ref = _io("stage_1")
  assert _max_error(load_unet(folder)(*inputs), ref) < 1e-5

  fp16 = tmp_path / "fp16"
  fp16.mkdir()
  shutil.copy(folder / "config.json", fp16)
  save_file(
    fp16 / "diffusion_pytorch_model.fp16.safetensors",
    {n: t.astype(np.float16) for n, t in tensors.items()},
  )
  for variant in (None, "fp16"):  # found by itself when it is the only one
    unet = load_unet(fp16, variant=variant)
    assert _max_error(unet(*inputs), ref) < 2e-2  # the weights were rounded to fp16
  with pytest.raises(MissingPath, match=r"weights.*\.fp16\.safetensors"):
    load_unet(folder, variant="fp16")


def test_weights_load_sharded_over_a_mesh():
  mesh = parallel.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
  unet = load_unet(GOLDEN / "stage_2", mesh=mesh)
  kernel = unet.params["down_2_attn_0"]["query"]["kernel"]  # [in 32, out 32]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert kernel.addressable_shards[0].data.shape == (8, 16)
  inputs, ref = _io("stage_2")
  assert _max_error(unet(*inputs), ref) < 1e-5


def test_a_stage_2_unet_needs_its_noise_level():
  unet = load_unet(GOLDEN / "stage_2")
  (sample, t, text, _), _ = _io("stage_2")
  with pytest.raises(InputError, match="class_labels"):
    unet(sample, t, text)
  with pytest.raises(InputError, match="6 channels"):
    unet(sample[..., :3], t, text, 250)


@pytest.mark.parametrize(
  "change, named",
  [
    ({"resnet_time_scale_shift": "default"}, "resnet_time_scale_shift='default'"),
    ({"cross_attention_norm": None}, "cross_attention_norm=None"),
    ({"mid_block_type": "UNetMidBlock2DCrossAttn"}, "mid_block_type"),
    ({"down_block_types": ["DownBlock2D", "SimpleCrossAttnDownBlock2D"]}, "DownBlock2D"),
    ({"attention_type": "gated"}, "attention_type='gated'"),
    ({"num_class_embeds": 10}, "num_class_embeds=10"),
    ({"a_new_option": 1}, "a_new_option"),
  ],
)
def test_config_values_it_cannot_compute_are_named(tmp_path, change, named):
  folder = _copy("stage_1", tmp_path)
  config = json.loads((folder / "config.json").read_text())
  (folder / "config.json").write_text(json.dumps({**config, **change}))
  with pytest.raises(UnsupportedConfig, match=re.escape(named)):
    load_unet(folder)


def test_weights_that_do_not_fit_the_config_are_named(tmp_path):
  folder = _copy("stage_1", tmp_path)
  path = folder / "diffusion_pytorch_model.safetensors"
  file = SafetensorsFile(path)
  tensors = {n: np.array(file.get(n)) for n in file.names() if n != "conv_out.bias"}
  tensors["extra.weight"] = np.zeros(3, np.float32)
  save_file(path, tensors)
  with pytest.raises(DataError, match=r"missing.*'conv_out\.bias'.*extra\.weight"):
    load_unet(folder)


def test_inspect_plans_if_i_xl_on_a_v5e_8_without_downloading():
  from imagen_jax.perf.inspection import inspect_pretrained

  report = inspect_pretrained("DeepFloyd/IF-I-XL-v1.0", devices=8, mesh={"fsdp": -1}, chip="v5e")
  assert abs(report["params"] / 4.3e9 - 1) < 0.02  # the model card's 4.3B
  memory = report["memory_per_device"]
  assert memory["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  # bfloat16 weights of the U-Net and of T5 v1.1 XXL's encoder, an eighth on each chip.
  expected = 2 * (report["params"] + report["text_encoder"]["total"]) / 8
  total = memory["unet_params_bytes"] + memory["text_encoder_bytes"]
  assert abs(total / expected - 1) < 0.01
  assert memory["fits"] and memory["chip_memory_gib"] == 16


def test_every_shipped_if_config_builds_near_its_published_size():
  from imagen_jax.perf.inspection import inspect_pretrained
  from imagen_jax.pretrained import known

  for name in known.UNETS:
    report = inspect_pretrained(name, devices=1, mesh={})
    assert abs(report["params_vs_published"]) < 0.08, name
    assert ("text_encoder" in report) == ("IF-I-" in name)
