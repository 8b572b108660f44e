"""Imagen's 256->1024 super-resolution model (~400M parameters, Efficient U-Net).

Trained on 256x256 crops of 1024x1024 images (with 64x64 low-res crops) and run on full 256x256
inputs, which the fully convolutional U-Net allows.

  imagen-jax train --config configs/sr1024.py --workdir gs://BUCKET/runs/sr1024
"""

import ml_collections

from imagen_jax.configuration import stage_defaults


def get_config() -> ml_collections.ConfigDict:
  config = stage_defaults()
  config.stage = "sr"
  config.image_size = 256  # training crops of the 1024x1024 target
  config.low_res_size = 64  # and of its 256x256 low-res version
  config.sample_size = 1024
  config.data.crop_from = 1024  # crops are cut from images resized to 1024

  config.text.encoder = "google/t5-v1_1-xxl"
  config.text.dim = 4096
  config.text.max_length = 128

  # No self-attention; explicit text cross-attention (8 heads) in the lowest block.
  config.unet = ml_collections.ConfigDict(
    dict(
      type="efficient",
      channels=(128, 256, 512, 1024),
      num_res_blocks=(2, 4, 8, 8),
      strides=(2, 2, 2, 2),
      attention=("none", "none", "none", "cross"),
      attn_heads=8,
      attn_per_res_block=False,
      attn_ff_mult=2,
      text_cond_dim=512,
      dropout=0.0,
      remat="full",
      attn_chunk_size=1024,
    )
  )

  # DDPM's linear schedule for this stage.
  config.diffusion.schedule = "linear"

  config.train.optimizer = "adam"
  config.train.batch_size = 2048
  config.train.steps = 2_500_000
  config.train.learning_rate = 1e-4
  config.train.warmup_steps = 10_000

  config.sample.guidance = 3.0
  config.sample.steps = 64
  config.sample.aug_level = 0.2

  config.mesh.data = 1
  config.mesh.fsdp = -1
  return config
