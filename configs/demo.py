"""The tiny offline cascade of `imagen-jax demo`: three stages that train on a CPU in minutes.

  imagen-jax train --config configs/demo.py:base --workdir runs/demo/base
  imagen-jax train --config configs/demo.py:sr1 --workdir runs/demo/sr1 --config.train.steps=500

Same structure as the paper's stages (configs/base64.py, sr256.py, sr1024.py) at toy sizes:
an ADM base model, then two Efficient U-Nets (self-attention with text in sr1, text
cross-attention in sr2, which trains on crops and samples on the full image), on the procedural
`imagen_shapes` dataset, with an offline text encoder: a seeded, untrained T5 v1.1 architecture that
reads the captions' words as one token each (builtin:shapes-tiny; see imagen_jax/text/).
How each choice was measured: docs/demo.md.
"""

import math

import ml_collections

from imagen_jax.configuration import stage_defaults, unet_defaults

SIZES = (16, 32, 64)  # output resolution of base, sr1, sr2


def _common(config):
  # Whole words as tokens: the model reads "red" at once instead of learning to spell it
  # (docs/demo.md).
  config.text.encoder = "builtin:shapes-tiny"
  config.text.dim = 64
  config.text.max_length = 16  # the longest shapes caption is 14 words and its end token
  config.data.name = "imagen_shapes"
  config.data.build_size = SIZES[-1]
  config.data.num_examples = 20_000
  config.train.batch_size = 32
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.ema_decay = 0.999
  config.train.checkpoint_every = 500
  config.train.compute_dtype = "float32"
  # v-prediction (the paper trains eps): an eps-model's estimate of x at high noise is its eps
  # error amplified by sigma / alpha, so a briefly trained one gets the background and layout
  # (base) wrong and barely uses its low-res input (SR); v keeps that estimate bounded.
  config.diffusion.objective = "v"
  config.sample.prompts = (
    "a red circle at the top left",
    "a small blue square at the bottom right",
    "a big green triangle in the center",
    "a yellow circle to the left of a purple square",
  )
  return config


def get_config(stage: str = "base") -> ml_collections.ConfigDict:
  config = _common(stage_defaults())
  if stage == "base":
    config.stage = "base"
    config.image_size = SIZES[0]
    config.unet = unet_defaults("adm")
    config.unet.update(
      channels=32,
      channel_mult=(1, 2, 2),
      num_res_blocks=1,
      attn_resolutions=(8, 4),
      image_size=SIZES[0],
      head_dim=16,  # 4 heads at 64 channels: pooling and attention can each read several words
      text_cond_dim=64,
    )
    # The cosine schedule carried from 64 px to 16 px (simple diffusion's shift, 2 log(64 / 16)).
    config.diffusion.logsnr_shift = 2 * math.log(64 / SIZES[0])
    config.train.steps = 4000
    # Static thresholding, as in the SR stages: dynamic thresholding's rescaling greyed the black
    # and white backgrounds, and the SR stages, trained on true colours, then rounded more of the
    # squares. With static thresholding, guidance 1.5 draws more shapes right than 2 or 3, and 64
    # DDPM steps draw as many right as 256 (docs/demo.md).
    config.sample.threshold = "static"
    config.sample.guidance = 1.5
    config.sample.steps = 64
  elif stage in ("sr1", "sr2"):
    sr2 = stage == "sr2"
    config.stage = "sr"
    low, high = (SIZES[1], SIZES[2]) if sr2 else (SIZES[0], SIZES[1])
    # sr2, like the paper's 256->1024 model, trains on crops (half the size) and samples on the
    # full image.
    config.image_size = high // 2 if sr2 else high
    config.low_res_size = low // 2 if sr2 else low
    config.sample_size = high
    config.data.crop_from = high if sr2 else 0
    config.unet = unet_defaults("efficient")
    config.unet.update(
      channels=(16, 32, 64),
      num_res_blocks=(1, 1, 1),
      strides=(1, 2, 2),
      attention=("none", "none", "cross" if sr2 else "self"),
      attn_heads=4,
      text_cond_dim=64,
    )
    config.diffusion.schedule = "linear" if sr2 else "cosine"
    # Training aug levels ~ U(0, 0.1) rather than the paper's U(0, 1): in a run this short, the
    # model learns to copy its input far better.
    config.diffusion.aug_max_level = 0.1
    # Min-SNR weighting (Hang et al. 2023): the SR stages draw a shape's corners at mid noise,
    # which it weights up. In the base it cost position, decided at high noise (docs/demo.md).
    config.diffusion.min_snr_gamma = 5.0
    config.train.steps = 1500
    config.sample.guidance = 1.0
    # Ancestral (DDPM, the default) sampling from the clean input (aug level 0), in the fewest
    # steps that draw as well as 256 (docs/performance.md, "Time to quality"); the deterministic
    # samplers draw fewer shapes right here.
    config.sample.steps = 32
    # sr2 starts from its input noised to 30% of the schedule: it keeps the shapes sr1 drew
    # instead of redrawing their edges (docs/demo.md).
    config.sample.sr_strength = 0.3 if sr2 else 1.0
    # Static, not dynamic, thresholding at guidance 1: the shapes' black and white backgrounds sit
    # at -1 and 1, where dynamic thresholding's rescaling greys them.
    config.sample.threshold = "static"
  else:
    raise ValueError(f"Unknown demo stage {stage!r}; use base, sr1 or sr2.")
  return config
