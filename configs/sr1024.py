"""Imagen's 256->1024 super-resolution model (~400M parameters, Efficient U-Net).

Trained on 256x256 crops of 1024x1024 images (with 64x64 low-res crops) and run on full 256x256
inputs, which the fully convolutional U-Net allows. Everything else as in sr256.py.

  imagen-jax train --config configs/sr1024.py --workdir gs://BUCKET/runs/sr1024
"""

import ml_collections
import sr256


def get_config() -> ml_collections.ConfigDict:
  config = sr256.get_config()
  config.sample_size = 1024  # training crops are 256 of the 1024 target, 64 of its low-res input
  config.data.crop_from = 1024
  config.data.build_size = 1024
  # No self-attention; explicit text cross-attention (8 heads) in the lowest block.
  config.unet.attention = ("none", "none", "none", "cross")
  config.unet.attn_per_res_block = False
  config.diffusion.schedule = "linear"  # DDPM's linear schedule for this stage
  config.sample.guidance = 3.0
  config.sample.steps = 64
  return config
