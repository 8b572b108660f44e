"""Side-by-side speed of imagen_jax and imagen-pytorch 2.1.0 on this machine's CPU.

Both train and sample a base U-Net of about the same size on the same input (16 text tokens of
width 64, batch 32 for training; sampling with guidance w = 3 at the same number of DDPM steps),
at two sizes (SIZES): the demo base stage (configs/demo.py:base, 16x16 images) and a 32 px base
at a size people train, FLOP-matched. Reported: parameters, forward GFLOPs per image, train
images/s and sampling seconds per image for each, and the ratios, also per FLOP. Not part of the
package or of CI.

Setup (CPU only; keep pip away from CUDA wheels):
  pip install -e .                                   # imagen_jax
  pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
  pip install beartype einops
  pip install --no-deps imagen-pytorch==2.1.0        # its torchvision/kornia/accelerate are not
                                                     # needed for the U-Net and are stubbed here
Run:
  python benchmarks/compare_imagen_pytorch.py [--sizes demo 32px] [--batch 32] \
    [--sample-batch 8] [--steps 64] [--repeats 3] [--out FILE]
Each side is measured `repeats` times, alternating, and its best time is kept (the host's speed
drifts by up to 40% over hours; the best of alternating runs compares the two at their least
disturbed); every run's figures are in the JSON too.
imagen_jax is measured by `imagen-jax bench`, which on a CPU trains on one JAX device per core
and samples on one device (XLA_FLAGS=--xla_force_host_platform_device_count=N overrides both);
torch uses all cores.

imagen-pytorch reads the T5 config `google/t5-v1_1-base` from the Hugging Face hub when it is
imported (a default argument of its Unet). Offline, this script registers that config's only
used figure (d_model = 768) in imagen-pytorch's config table instead, so nothing is downloaded and
no Hugging Face cache needs to be placed by hand; the U-Nets are built with text_embed_dim=64.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
import types


@functools.cache
def _import_imagen_pytorch():
  """imagen_pytorch.imagen_pytorch without the package __init__ (trainer, data, torchvision)."""
  spec = importlib.util.find_spec("imagen_pytorch")
  if spec is None:
    sys.exit("imagen-pytorch is not installed: pip install --no-deps imagen-pytorch==2.1.0")
  import transformers  # before the stubs below, which it would take for real packages

  package = types.ModuleType("imagen_pytorch")
  package.__path__ = list(spec.submodule_search_locations)
  sys.modules["imagen_pytorch"] = package
  for name in ("torchvision", "torchvision.transforms", "kornia", "kornia.augmentation"):
    sys.modules.setdefault(name, types.ModuleType(name))  # only used for PIL output and crops
  sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
  sys.modules["kornia"].augmentation = sys.modules["kornia.augmentation"]
  import imagen_pytorch.t5 as t5

  t5.T5_CONFIGS[t5.DEFAULT_T5_NAME] = {"config": transformers.T5Config(d_model=768)}
  import imagen_pytorch.imagen_pytorch as ip

  return ip


# The two sizes compared. "demo": the demo base stage (configs/demo.py:base, 16 px). "32px": a
# base at a size people train, 32 px with 64-channel-scale U-Nets, ours narrowed (channels 56)
# so that both forward passes cost the same FLOPs per image within 5% (torch's FlopCounterMode
# for the peer, XLA's cost analysis for ours).
SIZES = {
  "demo": {
    "image": 16,
    "peer": dict(
      dim=32,
      dim_mults=(1, 2, 2),
      num_resnet_blocks=1,
      layer_attns=(False, True, True),
      layer_cross_attns=(False, True, True),
      attn_dim_head=16,
      attn_heads=4,
    ),
    "ours": [],
  },
  "32px": {
    "image": 32,
    "peer": dict(
      dim=64,
      dim_mults=(1, 2, 4),
      num_resnet_blocks=2,
      layer_attns=(False, False, True),
      layer_cross_attns=(False, False, True),
      attn_dim_head=32,
      attn_heads=8,
    ),
    "ours": [
      "--config.image_size=32",
      "--config.unet.image_size=32",
      "--config.unet.channels=56",
      "--config.unet.channel_mult=(1, 2, 4)",
      "--config.unet.num_res_blocks=2",
      "--config.unet.attn_resolutions=(8,)",
      "--config.unet.head_dim=32",
    ],
  },
}


def bench_peer(args, size: dict) -> dict:
  import torch
  from torch.utils.flop_counter import FlopCounterMode

  from imagen_jax.configuration import load_config

  tokens = load_config("configs/demo.py:base").text.max_length

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  ip = _import_imagen_pytorch()
  unet = ip.Unet(
    **size["peer"], text_embed_dim=64, cond_dim=64, max_text_len=tokens, memory_efficient=False
  )
  res = size["image"]
  imagen = ip.Imagen(
    unets=(unet,),
    image_sizes=(res,),
    timesteps=args.steps,
    text_embed_dim=64,
    cond_drop_prob=0.1,
    noise_schedules="cosine",
    pred_objectives="noise",
  )
  params = sum(p.numel() for p in unet.parameters())
  opt = torch.optim.Adam(unet.parameters(), lr=1e-4)
  images = torch.rand(args.batch, 3, res, res)
  emb = torch.randn(args.batch, tokens, 64)
  mask = torch.ones(args.batch, tokens, dtype=torch.bool)
  with torch.no_grad(), FlopCounterMode(display=False) as counter:
    unet(images[:1] * 2 - 1, torch.rand(1), text_embeds=emb[:1], text_mask=mask[:1])
  forward_flops = counter.get_total_flops()

  def train_step():
    loss = imagen(images, text_embeds=emb, text_masks=mask, unet_number=1)
    opt.zero_grad()
    loss.backward()
    opt.step()

  for _ in range(2):
    train_step()
  t0 = time.perf_counter()
  for _ in range(args.iters):
    train_step()
  step = (time.perf_counter() - t0) / args.iters

  n = args.sample_batch
  with torch.no_grad():
    t0 = time.perf_counter()
    imagen.sample(
      text_embeds=emb[:n],
      text_masks=mask[:n],
      cond_scale=3.0,
      return_pil_images=False,
      use_tqdm=False,
    )
    sample = time.perf_counter() - t0
  return {
    "params": params,
    "forward_gflops_per_image": round(forward_flops / 1e9, 3),
    "train_step_seconds": round(step, 4),
    "train_images_per_s": round(args.batch / step, 2),
    "sample_seconds_per_image": round(sample / n, 4),
  }


def _imagen_jax(verb: str, *args: str) -> dict:
  """`imagen-jax VERB ...`'s JSON: ours runs as a user runs it (on a CPU, training on one JAX
  device per core, sampling on one device)."""
  command = ["imagen-jax", verb, "--config", "configs/demo.py:base", *args]
  proc = subprocess.run(command, capture_output=True, text=True)
  if proc.returncode:
    sys.exit(f"{' '.join(command)} failed:\n{proc.stderr}")
  return json.loads(proc.stdout)


def bench_ours(args, size: dict) -> dict:
  batch, iters = str(args.batch), str(args.iters)
  overrides = size["ours"]
  train = _imagen_jax(
    "bench", "--what", "train", "--batch-size", batch, "--iters", iters, *overrides
  )
  sample = _imagen_jax(
    "bench", "--what", "sample", "--batch-size", str(args.sample_batch), "--steps",
    str(args.steps), "--sampler", "ddpm", "--guidance", "3", "--iters", "2", *overrides,
  )  # fmt: skip
  inspect = _imagen_jax("inspect", *overrides)
  return {
    "params": inspect["params"],
    "forward_gflops_per_image": round(inspect["flops_per_image"]["unet_forward"] / 1e9, 3),
    "train_devices": train["devices"],
    "train_step_seconds": train["step_seconds"],
    "train_images_per_s": round(args.batch / train["step_seconds"], 2),
    "sample_devices": sample["devices"],
    "sample_seconds_per_image": sample["cascade_seconds_per_image"],
    "compile_seconds": {
      "train": train["compile_seconds"],
      "sample": sample["stages"][0]["compile_seconds"],
    },
  }


def _best(runs: list[dict], batch: int) -> dict:
  """The first run's figures with each time replaced by its best over the runs."""
  best = dict(runs[0])
  for key in ("train_step_seconds", "sample_seconds_per_image"):
    best[key] = min(run[key] for run in runs)
  best["train_images_per_s"] = round(batch / best["train_step_seconds"], 2)
  return best


def _compare(args, size: dict) -> dict:
  runs = {"imagen_jax": [], "imagen_pytorch_2.1.0": []}
  for _ in range(args.repeats):
    runs["imagen_jax"].append(bench_ours(args, size))
    runs["imagen_pytorch_2.1.0"].append(bench_peer(args, size))
  ours, peer = (_best(runs[name], args.batch) for name in runs)
  # Per FLOP: each side's rate times the forward FLOPs its U-Net spends per image.
  flops = ours["forward_gflops_per_image"] / peer["forward_gflops_per_image"]
  train = ours["train_images_per_s"] / peer["train_images_per_s"]
  sample = peer["sample_seconds_per_image"] / ours["sample_seconds_per_image"]
  return {
    "image_size": size["image"],
    "imagen_jax": ours,
    "imagen_pytorch_2.1.0": peer,
    "flops_ratio": round(flops, 3),
    "train_speedup": round(train, 2),
    "sample_speedup": round(sample, 2),
    "train_speedup_per_flop": round(train * flops, 2),
    "sample_speedup_per_flop": round(sample * flops, 2),
    "runs": runs,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
  parser.add_argument("--batch", type=int, default=32, help="training batch")
  parser.add_argument("--sample-batch", type=int, default=8, help="images sampled at once")
  parser.add_argument("--steps", type=int, default=64, help="sampling steps")
  parser.add_argument("--iters", type=int, default=10, help="timed train steps")
  parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each side")
  parser.add_argument("--out", type=pathlib.Path, help="also write the JSON here")
  args = parser.parse_args()
  result = {
    "machine": f"{os.cpu_count()} CPU cores",
    "batch": args.batch,
    "sample_batch": args.sample_batch,
    "sample_steps": args.steps,
    "sizes": {name: _compare(args, SIZES[name]) for name in args.sizes},
  }
  text = json.dumps(result, indent=1)
  print(text)
  if args.out:
    args.out.write_text(text + "\n")


if __name__ == "__main__":
  main()
