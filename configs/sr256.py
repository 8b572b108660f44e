"""Imagen's 64->256 super-resolution model (~600M parameters, Efficient U-Net).

imagen-jax train --config configs/sr256.py --workdir gs://BUCKET/runs/sr256
"""

import ml_collections

from imagen_jax.configuration import stage_defaults


def get_config() -> ml_collections.ConfigDict:
  config = stage_defaults()
  config.stage = "sr"
  config.image_size = 256
  config.low_res_size = 64
  config.sample_size = 256

  config.text.encoder = "google/t5-v1_1-xxl"
  config.text.dim = 4096
  config.text.max_length = 128

  # Efficient U-Net: 128/256/512/1024 channels, 2/4/8/8 residual blocks, stride 2 each;
  # self-attention with text keys/values (8 heads) only in the 1024-channel block, after each of
  # its residual blocks (the convention of ADM, whose attention follows every residual block at
  # the attention resolutions); see the note on sizes in README.md.
  config.unet = ml_collections.ConfigDict(
    dict(
      type="efficient",
      channels=(128, 256, 512, 1024),
      num_res_blocks=(2, 4, 8, 8),
      strides=(2, 2, 2, 2),
      attention=("none", "none", "none", "self"),
      attn_heads=8,
      attn_per_res_block=True,
      attn_ff_mult=2,
      text_cond_dim=512,
      dropout=0.0,
      remat="full",
      attn_chunk_size=1024,
    )
  )

  config.diffusion.schedule = "cosine"

  # Adam (0.9, 0.999, 1e-8) for the super-resolution models.
  config.train.optimizer = "adam"
  config.train.batch_size = 2048
  config.train.steps = 2_500_000
  config.train.learning_rate = 1e-4
  config.train.warmup_steps = 10_000

  config.sample.guidance = 5.0
  config.sample.steps = 128
  config.sample.aug_level = 0.2

  config.mesh.data = 1
  config.mesh.fsdp = -1
  return config
