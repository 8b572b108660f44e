"""Imagen's 64x64 base model (~2B parameters; Saharia et al. 2022, sec. 4 and appendix F).

  imagen-jax train --config configs/base64.py --workdir gs://BUCKET/runs/base64 \
      --config.data.name=image_text_folder --config.data.path=gs://BUCKET/data
"""

import ml_collections
import paper_common

from imagen_jax.configuration import stage_defaults, unet_defaults


def get_config() -> ml_collections.ConfigDict:
  config = paper_common.apply(stage_defaults())  # a 64x64 base stage with the cosine schedule
  # The default ADM U-Net is the paper's "Imagen-2B" base model (512 channels).
  config.unet = unet_defaults("adm")
  config.unet.remat = "full"
  config.train.optimizer = "adafactor"  # optax's defaults, for the base model
  config.sample.steps = 256
  # A folder of pictures is stored at the size this stage reads (its own dataset): decoding a
  # full-size photo at every step would cost more than the rest of the pipeline.
  config.data.build_size = 64
  return config
