"""What the paper's three stages (base64.py, sr256.py, sr1024.py) share; imported by them."""

import ml_collections


def apply(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Frozen T5-XXL text (128 tokens of 4096 features; the paper does not give the length), batch
  2048 for 2.5M steps at lr 1e-4 (the default) after 10k warmup steps, and FSDP over every chip
  (256 TPU-v4 chips in the paper)."""
  config.text.encoder = "google/t5-v1_1-xxl"
  config.text.dim = 4096
  config.text.max_length = 128
  config.train.batch_size = 2048
  config.train.steps = 2_500_000
  config.train.warmup_steps = 10_000
  config.mesh.data = 1
  config.mesh.fsdp = -1
  return config
