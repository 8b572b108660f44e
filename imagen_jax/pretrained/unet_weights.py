"""The tensors of a diffusers UNet2DConditionModel checkpoint, named for the project's U-Net.

diffusers saves `diffusion_pytorch_model.safetensors`, or shards listed in
`diffusion_pytorch_model.safetensors.index.json`; a variant ("fp16") inserts its name before the
extension (`diffusion_pytorch_model.fp16.safetensors`, `....safetensors.index.fp16.json`).
"""

from __future__ import annotations

import json
import pathlib
import re

import flax.linen as nn
from flax.traverse_util import flatten_dict

from imagen_jax.errors import MissingPath
from imagen_jax.models.safetensors_io import SafetensorsFile

WEIGHTS = "diffusion_pytorch_model"
VARIANTS = (None, "fp16")

_RES = {
  "norm_0": "norm1",
  "conv_0": "conv1",
  "emb": "time_emb_proj",
  "norm_1": "norm2",
  "conv_1": "conv2",
  "skip": "conv_shortcut",
}
_ATTN = {
  "norm": "group_norm",
  "query": "to_q",
  "key": "to_k",
  "value": "to_v",
  "out": "to_out.0",
  "text/norm": "norm_cross",
  "text/key": "add_k_proj",
  "text/value": "add_v_proj",
}
_COND = {
  "time/dense_0": "time_embedding.linear_1",
  "time/dense_1": "time_embedding.linear_2",
  "class/dense_0": "class_embedding.linear_1",
  "class/dense_1": "class_embedding.linear_2",
  "text_proj": "encoder_hid_proj",
  "text_pool/norm_in": "add_embedding.norm1",
  "text_pool/query": "add_embedding.pool.q_proj",
  "text_pool/key": "add_embedding.pool.k_proj",
  "text_pool/value": "add_embedding.pool.v_proj",
  "text_pool/proj": "add_embedding.proj",
  "text_pool/norm_out": "add_embedding.norm2",
  "text_pool/position": "add_embedding.pool.positional_embedding",
}
_TOP = {"in_conv": "conv_in", "out_norm": "conv_norm_out", "out_conv": "conv_out"}


def weight_files(directory, variant: str | None = None) -> list[pathlib.Path]:
  """The safetensors files of a diffusers model folder: the given variant, or else the first of
  float32 and fp16 that is present."""
  directory = pathlib.Path(directory)
  for v in VARIANTS if variant is None else (variant,):
    single = f"{WEIGHTS}{'.' + v if v else ''}.safetensors"
    index = f"{WEIGHTS}.safetensors.index{'.' + v if v else ''}.json"
    if (directory / index).exists():
      shards = json.loads((directory / index).read_text())["weight_map"].values()
      return [directory / s for s in sorted(set(shards))]
    if (directory / single).exists():
      return [directory / single]
  found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
  raise MissingPath(
    f"No U-Net weights in safetensors in {directory} (looked for {WEIGHTS}"
    f"{'.' + variant if variant else '[.fp16]'}.safetensors and its sharded index; found "
    f"{found}). Pickled .bin files are not read: save the model with diffusers' "
    "save_pretrained(..., safe_serialization=True)."
  )


def open_weights(directory, variant: str | None = None) -> dict:
  """checkpoint tensor name -> its lazily read SafetensorsFile."""
  tensors = {}
  for path in weight_files(directory, variant):
    file = SafetensorsFile(path)
    tensors.update({name: file for name in file.names()})
  return tensors


def _convert(leaf: str, ndim: int):
  if leaf == "position":  # stored [1, D]
    return lambda w: w.reshape(-1)
  if leaf != "kernel":
    return lambda w: w
  if ndim == 4:  # torch conv [out, in, kh, kw] -> [kh, kw, in, out]
    return lambda w: w.transpose(2, 3, 1, 0)
  return lambda w: w.T  # torch Linear [out, in] -> [in, out]


def _module(block: str, inner: tuple[str, ...], levels: int) -> str:
  """Our module path (block name, inner path) -> diffusers' module name."""
  # GroupNorm and LayerNorm keep their parameters in a child "norm"; ScaleShift in "dense".
  if len(inner) > 1 and inner[-1] == "norm":
    inner = inner[:-1]
  if inner == ("emb", "dense"):
    inner = ("emb",)
  key = "/".join(inner)
  if block in _TOP:
    return _TOP[block]
  if block == "cond":
    return _COND[key]
  m = re.fullmatch(r"(down|up)_(\d+)_(res|attn)_(\d+)|(down|up)_(\d+)_resample", block)
  if m and m[1]:
    kind, level, sub, i = m[1], int(m[2]), m[3], m[4]
    index = level if kind == "down" else levels - 1 - level
    prefix = f"{kind}_blocks.{index}.{'resnets' if sub == 'res' else 'attentions'}.{i}"
  elif m:
    kind, level = m[5], int(m[6])
    index = level if kind == "down" else levels - 1 - level
    prefix = f"{kind}_blocks.{index}.{kind}samplers.0"
    sub = "res"
  elif block.startswith("middle_res_"):
    prefix, sub = f"mid_block.resnets.{block[-1]}", "res"
  elif block == "middle_attn":
    prefix, sub = "mid_block.attentions.0", "attn"
  else:
    raise KeyError(block)
  return f"{prefix}.{(_RES if sub == 'res' else _ATTN)[key]}"


def name_map(abstract_params: dict, levels: int) -> dict:
  """Our flattened parameter path -> ((diffusers' tensor name,), conversion), for every
  parameter of the U-Net (models.weight_loading.load_mapped's mapping)."""
  out = {}
  for path, leaf in flatten_dict(abstract_params).items():
    *module, name = path
    torch_leaf = {"kernel": "weight", "scale": "weight", "bias": "bias", "position": ""}[name]
    if name == "position":
      theirs = _COND["text_pool/position"]
    else:
      theirs = f"{_module(module[0], tuple(module[1:]), levels)}.{torch_leaf}"
    out[path] = ((theirs,), _convert(name, len(nn.unbox(leaf).shape)))
  return out
