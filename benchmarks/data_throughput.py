"""How fast the input pipeline feeds each paper stage from a folder dataset, per CPU core. Not part
of the package or of CI.

Writes a folder of photo-like pictures (smooth random colour fields with fine noise, JPEG at
quality 90, `--source-size` px square), builds it as an image_text_folder dataset (pictures stored
at most `--build-size` px on their short side; by default each config's own, the size its stage
reads), then times the pipeline that `train`
runs for each paper stage config (decode, resize, crop, SR low-res, tokens; the byte tokenizer
stands in for T5's, which needs the hub) at each `--workers` count: examples per second after a
warm-up, and per worker process. Set beside an accelerator's appetite (JAX-Toolbox's A100-80G
Imagen figures: base 27.4, SR 84 images/s per GPU), this says how many host cores a stage needs.

  python benchmarks/data_throughput.py --out /tmp/data_bench [--images 384] [--source-size 1024] \
      [--build-size N] [--workers 0 1 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import numpy as np
from PIL import Image

from imagen_jax.configuration import load_config
from imagen_jax.data import input_pipeline

STAGES = ("base64", "sr256", "sr1024")
# Images per second per A100-80G in NVIDIA JAX-Toolbox's Imagen README (base 2B, SR 600M).
ACCELERATOR_APPETITE = {"base64": 27.4, "sr256": 84.0, "sr1024": 84.0}


def photo_like(rng: np.random.Generator, size: int) -> Image.Image:
  """A smooth random colour field with fine noise: compresses about as a photo does."""
  coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
  field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.int16)
  noise = rng.normal(0, 6, field.shape).astype(np.int16)
  return Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8))


def write_folder(folder: pathlib.Path, images: int, size: int) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for i in range(images):
    if not (folder / f"{i:05d}.jpg").exists():
      photo_like(rng, size).save(folder / f"{i:05d}.jpg", quality=90)
      (folder / f"{i:05d}.txt").write_text(f"a photo of a colourful scene, number {i}")


def throughput(config, workers: int, batch: int, batches: int) -> float:
  """Examples per second of `batches` batches after two warm-up batches."""
  source = input_pipeline.open_source(config)
  transform = input_pipeline.ExampleTransform(config)
  it = iter(
    input_pipeline.make_dataset(source, transform, seed=0, global_batch=batch, workers=workers)
  )
  for _ in range(2):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batch * batches / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="folder for the pictures and the dataset")
  parser.add_argument("--images", type=int, default=384)
  parser.add_argument("--source-size", type=int, default=1024)
  parser.add_argument("--build-size", type=int, help="default: each config's data.build_size")
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--batches", type=int, default=8)
  parser.add_argument("--json", help="write the report here too")
  args = parser.parse_args()

  out = pathlib.Path(args.out).resolve()
  write_folder(out / "images", args.images, args.source_size)
  report = {
    "host_cpus": os.cpu_count(),
    "images": args.images,
    "source_size": args.source_size,
    "batch": args.batch,
    "stages": {},
  }
  for name in STAGES:
    config = load_config(
      name,
      [
        "--config.data.name=image_text_folder",
        f"--config.data.path={out / 'images'}",
        f"--config.data.data_dir={out / 'tfds'}",
        "--config.text.encoder=builtin:byt5-tiny",
        "--config.text.dim=64",
        *([f"--config.data.build_size={args.build_size}"] if args.build_size else []),
      ],
    )
    rates = {w: throughput(config, w, args.batch, args.batches) for w in args.workers}
    report["stages"][name] = {
      "image_size": config.image_size,
      "crop_from": config.data.crop_from,
      "build_size": config.data.build_size,
      "examples_per_s": {str(w): round(r, 1) for w, r in rates.items()},
      "accelerator_images_per_s": ACCELERATOR_APPETITE[name],
    }
    print(name, {w: round(r, 1) for w, r in rates.items()}, flush=True)
  text = json.dumps(report, indent=1)
  print(text)
  if args.json:
    pathlib.Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
  main()
