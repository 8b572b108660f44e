"""Tiny random DeepFloyd-IF-style U-Nets and their outputs from diffusers' UNet2DConditionModel,
for tests/test_pretrained_unet.py. Run by hand in a separate environment (CI never installs torch):

  python3 -m venv /tmp/goldenv && /tmp/goldenv/bin/pip install torch==2.13.0 diffusers==0.42.1
  /tmp/goldenv/bin/python tests/golden/make_if_unet_golden.py

Writes tests/golden/if_unet/<name>/: the model as diffusers saves it (config.json and
diffusion_pytorch_model.safetensors, float32) and io.npz with fixed inputs and the model's output,
in NHWC (our layout); and upsample.npz, stage II's bilinear upsampling. Every weight is
perturbed, so zero-initialised layers (the output conv, the last conv of each block) take part
in the comparison.
"""

import pathlib

import numpy as np
import torch
from diffusers import UNet2DConditionModel

OUT = pathlib.Path(__file__).parent / "if_unet"

COMMON = dict(
  act_fn="gelu",
  addition_embed_type="text",
  attention_head_dim=16,
  cross_attention_norm="group_norm",
  mid_block_type="UNetMidBlock2DSimpleCrossAttn",
  norm_eps=1e-5,
  resnet_time_scale_shift="scale_shift",
  out_channels=6,
  encoder_hid_dim_type="text_proj",
)

# Stage I: IF-I's block types and conditioning, at toy widths (cross_attention_dim must be a
# multiple of 32: IF group-normalises the projected text in 32 groups). Both read text of width
# 32, that of the tiny T5 in tests/golden/t5/v1_1_gated_gelu, so the tests can chain them into a
# cascade with that encoder.
STAGE_1 = dict(
  COMMON,
  sample_size=16,
  in_channels=3,
  block_out_channels=(16, 32),
  layers_per_block=1,
  down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
  up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
  norm_num_groups=8,
  cross_attention_dim=32,
  encoder_hid_dim=32,
  addition_embed_type_num_heads=4,
)

# Stage II: IF-II's options (noise level as class label, GELU after the embedding sum, no
# activation before the blocks' time projections, residual output scale sqrt 2), per-level block
# counts, and the other sinusoid conventions.
STAGE_2 = dict(
  COMMON,
  sample_size=64,  # four times stage I's, as IF's 64 -> 256
  in_channels=6,
  block_out_channels=(8, 16, 32),
  layers_per_block=(1, 1, 2),
  down_block_types=(
    "ResnetDownsampleBlock2D",
    "ResnetDownsampleBlock2D",
    "SimpleCrossAttnDownBlock2D",
  ),
  up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
  norm_num_groups=4,
  cross_attention_dim=32,
  encoder_hid_dim=32,
  addition_embed_type_num_heads=2,
  class_embed_type="timestep",
  time_embedding_act_fn="gelu",
  resnet_skip_time_act=True,
  resnet_out_scale_factor=1.41423,
  mid_block_scale_factor=1.41423,
  flip_sin_to_cos=False,
  freq_shift=1,
  time_embedding_dim=48,
)


def make(name, config, *, size, text_len, seed):
  torch.manual_seed(seed)
  unet = UNet2DConditionModel(**config).eval()
  with torch.no_grad():
    for p in unet.parameters():
      p.add_(0.1 * torch.randn_like(p))
  rng = np.random.default_rng(seed)
  batch = 2
  sample = rng.standard_normal((batch, config["in_channels"], size, size)).astype(np.float32)
  timesteps = np.array([999, 37], np.int64)
  text = rng.standard_normal((batch, text_len, config["encoder_hid_dim"])).astype(np.float32)
  kwargs = {}
  if config.get("class_embed_type") == "timestep":
    kwargs["class_labels"] = torch.tensor([250, 0])
  with torch.no_grad():
    out = unet(
      torch.from_numpy(sample), torch.from_numpy(timesteps), torch.from_numpy(text), **kwargs
    ).sample.numpy()
  folder = OUT / name
  unet.save_pretrained(folder, safe_serialization=True)
  (folder / "diffusion_pytorch_model.safetensors").chmod(0o644)
  np.savez(
    folder / "io.npz",
    sample=sample.transpose(0, 2, 3, 1),
    timesteps=timesteps.astype(np.int32),
    encoder_hidden_states=text,
    class_labels=np.array([250, 0], np.int32) if kwargs else np.zeros((0,), np.int32),
    out=out.transpose(0, 2, 3, 1),
  )
  params = sum(p.numel() for p in unet.parameters())
  print(f"{name}: {params} parameters, output {out.shape}, |out| mean {np.abs(out).mean():.3f}")


def upsample():
  """Stage II's input: torch's bilinear interpolation with aligned corners, 16 -> 64."""
  x = np.random.default_rng(2).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  up = torch.nn.functional.interpolate(
    torch.from_numpy(x).permute(0, 3, 1, 2), (64, 64), mode="bilinear", align_corners=True
  )
  np.savez(OUT / "upsample.npz", x=x, up=up.permute(0, 2, 3, 1).numpy())


def main():
  make("stage_1", STAGE_1, size=16, text_len=7, seed=0)
  make("stage_2", STAGE_2, size=32, text_len=5, seed=1)
  upsample()


if __name__ == "__main__":
  main()
