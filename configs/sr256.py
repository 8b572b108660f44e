"""Imagen's 64->256 super-resolution model (~600M parameters, Efficient U-Net).

imagen-jax train --config configs/sr256.py --workdir gs://BUCKET/runs/sr256
"""

import ml_collections
import paper_common

from imagen_jax.configuration import stage_defaults, unet_defaults


def get_config() -> ml_collections.ConfigDict:
  config = paper_common.apply(stage_defaults())
  config.stage = "sr"
  config.image_size = 256
  config.low_res_size = 64
  config.sample_size = 256
  config.data.build_size = 256  # a folder of pictures stored at the size this stage reads

  # The default Efficient U-Net is this model: 128/256/512/1024 channels, 2/4/8/8 residual blocks,
  # stride 2 each, self-attention with text keys/values (8 heads) only in the 1024-channel block;
  # here after each of its residual blocks (ADM's convention at attention resolutions; see the
  # sizes in docs/design.md, "The stages against the paper").
  config.unet = unet_defaults("efficient")
  config.unet.attn_per_res_block = True
  config.unet.remat = "full"

  config.train.optimizer = "adam"  # (0.9, 0.999, 1e-8) for the super-resolution models
  config.sample.steps = 128
  config.sample.aug_level = 0.2
  return config
