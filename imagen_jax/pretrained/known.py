"""DeepFloyd IF's U-Net configs (diffusers' config.json), shipped so that `imagen-jax inspect`
plans a run without downloading anything. Loading always reads the downloaded config.json, which
is the authority.

Sources: IF-I-XL's widths, blocks and cross-attention width are those of its published
unet/config.json (its parameter count here is 4.305B; the model card says 4.3B); IF-II-L's are
those gathered in DESIGN.md section 8 (1.188B here; card: 1.2B). The configs of IF-I-L, IF-I-M
and IF-II-M could not be read offline: they are reconstructed as the same families with the
width that best fits the published parameter counts (here 0.935B for 0.9B, 0.372B for 0.4B,
0.462B for 0.45B), and marked "reconstructed".
"""

from __future__ import annotations

_COMMON = {
  "_class_name": "UNet2DConditionModel",
  "act_fn": "gelu",
  "addition_embed_type": "text",
  "addition_embed_type_num_heads": 64,
  "attention_head_dim": 64,
  "cross_attention_norm": "group_norm",
  "encoder_hid_dim": 4096,
  "encoder_hid_dim_type": "text_proj",
  "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
  "norm_eps": 1e-5,
  "norm_num_groups": 32,
  "out_channels": 6,
  "resnet_time_scale_shift": "scale_shift",
}


def _stage_1(width: int) -> dict:
  return {
    **_COMMON,
    "sample_size": 64,
    "in_channels": 3,
    "block_out_channels": [width, 2 * width, 3 * width, 4 * width],
    "layers_per_block": 3,
    "cross_attention_dim": 4 * width,
    "down_block_types": ["ResnetDownsampleBlock2D"] + ["SimpleCrossAttnDownBlock2D"] * 3,
    "up_block_types": ["SimpleCrossAttnUpBlock2D"] * 3 + ["ResnetUpsampleBlock2D"],
  }


def _stage_2(widths: list[int], cross: int) -> dict:
  return {
    **_COMMON,
    "sample_size": 256,
    "in_channels": 6,
    "block_out_channels": widths,
    "layers_per_block": [2, 2, 3, 5, 5],
    "cross_attention_dim": cross,
    "down_block_types": ["ResnetDownsampleBlock2D"] * 3 + ["SimpleCrossAttnDownBlock2D"] * 2,
    "up_block_types": ["SimpleCrossAttnUpBlock2D"] * 2 + ["ResnetUpsampleBlock2D"] * 3,
    "class_embed_type": "timestep",
    "time_embedding_act_fn": "gelu",
    "resnet_skip_time_act": True,
    "resnet_out_scale_factor": 1.41423,
    "mid_block_scale_factor": 1.41423,
  }


# name -> (config, source, the parameter count its model card publishes)
UNETS = {
  "DeepFloyd/IF-I-XL-v1.0": (_stage_1(704), "published", 4.3e9),
  "DeepFloyd/IF-I-L-v1.0": (_stage_1(320), "reconstructed", 0.9e9),
  "DeepFloyd/IF-I-M-v1.0": (_stage_1(192), "reconstructed", 0.4e9),
  "DeepFloyd/IF-II-L-v1.0": (_stage_2([160, 320, 640, 960, 1280], 1280), "published", 1.2e9),
  "DeepFloyd/IF-II-M-v1.0": (_stage_2([96, 192, 384, 576, 768], 768), "reconstructed", 0.45e9),
}
TEXT_ENCODER = "google/t5-v1_1-xxl"  # IF's text_encoder/: T5 v1.1 XXL's encoder
