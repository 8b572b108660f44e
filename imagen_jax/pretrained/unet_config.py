"""diffusers' UNet2DConditionModel configs of DeepFloyd IF's kind -> the project's U-Net.

Every key of a saved config.json is read: a value this importer computes is turned into a
models.unet.UNet option; anything else (another block type, a different attention or embedding
variant) is refused with an error that names the key, never approximated.
"""

from __future__ import annotations

import json
import pathlib

import jax.numpy as jnp

from imagen_jax.errors import InputError, MissingPath
from imagen_jax.models.adm_unet import TextTimeConditioning, UNet

ACTIVATIONS = ("gelu", "silu", "swish")
DOWN_BLOCKS = {"ResnetDownsampleBlock2D": False, "SimpleCrossAttnDownBlock2D": True}
UP_BLOCKS = {False: "ResnetUpsampleBlock2D", True: "SimpleCrossAttnUpBlock2D"}
_ANY = None  # any value: read below, or without effect at inference

# diffusers' defaults for the keys a config may omit (UNet2DConditionModel.__init__).
DEFAULTS = {
  "in_channels": 4,
  "out_channels": 4,
  "center_input_sample": False,
  "flip_sin_to_cos": True,
  "freq_shift": 0,
  "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
  "mid_block_type": "UNetMidBlock2DCrossAttn",
  "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
  "only_cross_attention": False,
  "block_out_channels": (320, 640, 1280, 1280),
  "layers_per_block": 2,
  "mid_block_scale_factor": 1.0,
  "act_fn": "silu",
  "norm_num_groups": 32,
  "norm_eps": 1e-5,
  "cross_attention_dim": 1280,
  "transformer_layers_per_block": 1,
  "encoder_hid_dim": None,
  "encoder_hid_dim_type": None,
  "attention_head_dim": 8,
  "num_attention_heads": None,
  "dual_cross_attention": False,
  "use_linear_projection": False,
  "class_embed_type": None,
  "addition_embed_type": None,
  "num_class_embeds": None,
  "resnet_time_scale_shift": "default",
  "resnet_skip_time_act": False,
  "resnet_out_scale_factor": 1.0,
  "time_embedding_type": "positional",
  "time_embedding_dim": None,
  "time_embedding_act_fn": None,
  "timestep_post_act": None,
  "time_cond_proj_dim": None,
  "conv_in_kernel": 3,
  "conv_out_kernel": 3,
  "projection_class_embeddings_input_dim": None,
  "attention_type": "default",
  "class_embeddings_concat": False,
  "mid_block_only_cross_attention": None,
  "cross_attention_norm": None,
  "addition_embed_type_num_heads": 64,
  "addition_time_embed_dim": None,
  "reverse_transformer_layers_per_block": None,
  "upcast_attention": False,
}

# key -> the values supported (a tuple), or _ANY.
SUPPORTED = {
  "_class_name": ("UNet2DConditionModel",),
  "_diffusers_version": _ANY,
  "_name_or_path": _ANY,
  "_use_default_values": _ANY,
  "sample_size": _ANY,
  "in_channels": _ANY,
  "out_channels": _ANY,
  "center_input_sample": (False,),
  "flip_sin_to_cos": (True, False),
  "freq_shift": _ANY,
  "down_block_types": _ANY,  # checked block by block
  "mid_block_type": ("UNetMidBlock2DSimpleCrossAttn",),
  "up_block_types": _ANY,
  "only_cross_attention": (False,),
  "mid_block_only_cross_attention": (None, False),
  "block_out_channels": _ANY,
  "layers_per_block": _ANY,
  "downsample_padding": _ANY,  # read only by convolutional downsamplers, which IF's blocks lack
  "mid_block_scale_factor": _ANY,
  "dropout": _ANY,  # inference only
  "act_fn": ACTIVATIONS,
  "norm_num_groups": _ANY,
  "norm_eps": _ANY,
  "cross_attention_dim": _ANY,
  "transformer_layers_per_block": (1,),
  "reverse_transformer_layers_per_block": (None,),
  "encoder_hid_dim": _ANY,
  "encoder_hid_dim_type": ("text_proj", None),
  "attention_head_dim": _ANY,
  "num_attention_heads": (None,),
  "dual_cross_attention": (False,),
  "use_linear_projection": (False,),
  "class_embed_type": ("timestep", None),
  "addition_embed_type": ("text", None),
  "addition_time_embed_dim": (None,),
  "num_class_embeds": (None,),
  "upcast_attention": (False, True),  # scores and softmax are float32 here either way
  "resnet_time_scale_shift": ("scale_shift",),
  "resnet_skip_time_act": (True, False),
  "resnet_out_scale_factor": _ANY,
  "time_embedding_type": ("positional",),
  "time_embedding_dim": _ANY,
  "time_embedding_act_fn": (None, *ACTIVATIONS),
  "timestep_post_act": (None,),
  "time_cond_proj_dim": (None,),
  "conv_in_kernel": (3,),
  "conv_out_kernel": (3,),
  "projection_class_embeddings_input_dim": (None,),
  "attention_type": ("default",),
  "class_embeddings_concat": (False,),
  "cross_attention_norm": ("group_norm",),
  "addition_embed_type_num_heads": _ANY,
}


class UnsupportedConfig(InputError):
  """A U-Net config with values this importer does not compute."""


def read_config(directory) -> dict:
  path = pathlib.Path(directory) / "config.json"
  if not path.exists():
    raise MissingPath(f"No config.json in {directory}: not a diffusers U-Net folder.")
  return json.loads(path.read_text())


def _problems(config: dict) -> list[str]:
  out = []
  for key, value in config.items():
    if key not in SUPPORTED:
      out.append(f"{key}={value!r} (an option this importer does not know)")
    elif SUPPORTED[key] is not _ANY and value not in SUPPORTED[key]:
      out.append(f"{key}={value!r} (supported: {', '.join(map(repr, SUPPORTED[key]))})")
  full = {**DEFAULTS, **config}
  for key in DEFAULTS:
    supported = SUPPORTED.get(key, _ANY)
    if key not in config and supported is not _ANY and full[key] not in supported:
      out.append(f"{key} is missing and diffusers' default {full[key]!r} is not supported")
  down = list(full["down_block_types"])
  wrong = [b for b in down if b not in DOWN_BLOCKS]
  if wrong:
    out.append(f"down_block_types {wrong} (supported: {sorted(DOWN_BLOCKS)})")
  elif list(full["up_block_types"]) != [UP_BLOCKS[DOWN_BLOCKS[b]] for b in reversed(down)]:
    out.append(
      f"up_block_types={full['up_block_types']} (supported: the mirror of down_block_types, "
      f"{[UP_BLOCKS[DOWN_BLOCKS[b]] for b in reversed(down)]})"
    )
  if len(full["block_out_channels"]) != len(down):
    levels = len(full["block_out_channels"])
    out.append(f"block_out_channels has {levels} levels, the blocks {len(down)}")
  layers = full["layers_per_block"]
  if isinstance(layers, (list, tuple)) and len(layers) != len(down):
    out.append(f"layers_per_block={layers} (one per level: {len(down)})")
  heads = full["attention_head_dim"]
  if isinstance(heads, (list, tuple)) and len(set(heads)) > 1:
    out.append(f"attention_head_dim={heads} (supported: one width for all levels)")
  if full["norm_num_groups"] is None:
    out.append("norm_num_groups=None (supported: a group count)")
  if full["encoder_hid_dim"] is None and full["encoder_hid_dim_type"] is not None:
    out.append("encoder_hid_dim_type is set without encoder_hid_dim")
  return out


def unet_from_config(config: dict, *, dtype=jnp.float32, source: str = "the config") -> UNet:
  """The models.unet.UNet that computes what diffusers' UNet2DConditionModel computes for
  `config` (a saved config.json as a dict). Raises UnsupportedConfig naming every value that
  it does not compute."""
  problems = _problems(config)
  if problems:
    raise UnsupportedConfig(
      f"{source} describes a U-Net this importer cannot compute exactly (it reads DeepFloyd IF's "
      "kind of UNet2DConditionModel): " + "; ".join(problems)
    )
  c = {**DEFAULTS, **config}
  levels = tuple(int(x) for x in c["block_out_channels"])
  n = len(levels)
  layers = c["layers_per_block"]
  layers = tuple(layers) if isinstance(layers, (list, tuple)) else (int(layers),) * n
  head_dim = c["attention_head_dim"]
  head_dim = int(head_dim[0] if isinstance(head_dim, (list, tuple)) else head_dim)
  attn = tuple(DOWN_BLOCKS[b] for b in c["down_block_types"])
  text_dim = c["encoder_hid_dim"] or c["cross_attention_dim"]
  pool_heads = int(c["addition_embed_type_num_heads"]) if c["addition_embed_type"] else 0
  checks = [
    (levels[-1] % head_dim == 0 and all(ch % head_dim == 0 for ch, a in zip(levels, attn) if a)),
    c["cross_attention_dim"] % 32 == 0,
    not pool_heads or text_dim % pool_heads == 0,
  ]
  if not all(checks):
    raise UnsupportedConfig(
      f"{source}: attention widths must divide into heads of attention_head_dim={head_dim}, "
      f"cross_attention_dim={c['cross_attention_dim']} into 32 groups, and the text width "
      f"{text_dim} into {pool_heads} pooling heads."
    )
  conditioning = TextTimeConditioning(
    time_dim=levels[0],
    emb_dim=int(c["time_embedding_dim"] or 4 * levels[0]),
    act=c["act_fn"],
    flip_sin_to_cos=bool(c["flip_sin_to_cos"]),
    freq_shift=float(c["freq_shift"]),
    class_label=c["class_embed_type"] == "timestep",
    pool_heads=pool_heads,
    post_act=c["time_embedding_act_fn"],
    text_proj=c["encoder_hid_dim"] is not None,
  )
  return UNet(
    channels=levels[0],
    channel_mult=(1,) * n,
    num_res_blocks=layers,
    attn_resolutions=(),
    image_size=int(c.get("sample_size") or 64),
    head_dim=head_dim,
    text_cond_dim=int(c["cross_attention_dim"]),
    resblock_updown=True,
    out_channels=int(c["out_channels"]),
    dtype=dtype,
    level_channels=levels,
    attn_levels=attn,
    act=c["act_fn"],
    norm_eps=float(c["norm_eps"]),
    norm_groups=int(c["norm_num_groups"]),
    attn_norm_eps=1e-5,  # diffusers' Attention keeps its default eps for the image GroupNorm
    skip_time_act=bool(c["resnet_skip_time_act"]),
    res_scale=float(c["resnet_out_scale_factor"]),
    mid_scale=float(c["mid_block_scale_factor"]),
    text_kv="added",
    if_conditioning=conditioning,
  )
