"""Imagen's 64x64 base model (~2B parameters; Saharia et al. 2022, sec. 4 and appendix F).

  imagen-jax train --config configs/base64.py --workdir gs://BUCKET/runs/base64 \
      --config.data.name=image_text_folder --config.data.path=gs://BUCKET/data
"""

import ml_collections

from imagen_jax.configuration import stage_defaults


def get_config() -> ml_collections.ConfigDict:
  config = stage_defaults()
  config.stage = "base"
  config.image_size = 64

  # Frozen T5-XXL: 128 tokens of 4096 features (the paper does not give the token length).
  config.text.encoder = "google/t5-v1_1-xxl"
  config.text.dim = 4096
  config.text.max_length = 128

  # ADM-style U-Net at 512 channels (the paper's "Imagen-2B" base model).
  config.unet = ml_collections.ConfigDict(
    dict(
      type="adm",
      channels=512,
      channel_mult=(1, 2, 3, 4),
      num_res_blocks=3,
      attn_resolutions=(32, 16, 8),
      image_size=64,
      head_dim=64,
      text_attention=True,
      text_cond_dim=512,
      dropout=0.0,
      resblock_updown=True,
      remat="full",
      attn_chunk_size=1024,
    )
  )

  config.diffusion.schedule = "cosine"

  # Adafactor (optax defaults) for the base model; batch 2048, 2.5M steps, lr 1e-4 with 10k
  # warmup steps then cosine decay.
  config.train.optimizer = "adafactor"
  config.train.batch_size = 2048
  config.train.steps = 2_500_000
  config.train.learning_rate = 1e-4
  config.train.warmup_steps = 10_000

  config.sample.guidance = 5.0
  config.sample.steps = 256

  # 256 TPU-v4 chips in the paper: FSDP over all of them by default.
  config.mesh.data = 1
  config.mesh.fsdp = -1
  return config
