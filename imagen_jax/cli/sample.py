"""`imagen-jax sample`: text to images through trained stages."""

from __future__ import annotations

import pathlib
import time


def add_arguments(parser):
  parser.add_argument(
    "--stages",
    nargs="+",
    required=True,
    metavar="DIR",
    help="stage workdirs or checkpoint directories, base first",
  )
  parser.add_argument(
    "--prompt", action="append", required=True, help="a prompt (repeat for several)"
  )
  parser.add_argument("--out", required=True, help="grid PNG to write; images go beside it")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--guidance", type=float, nargs="+", help="w per stage (1 = no guidance)")
  parser.add_argument("--steps", type=int, nargs="+", help="sampling steps per stage")
  parser.add_argument("--sampler", nargs="+", choices=["ddpm", "ddim", "dpm++2m"])
  parser.add_argument("--aug-level", type=float, nargs="+", help="noise augmentation per stage")
  parser.add_argument("--threshold", nargs="+", choices=["none", "static", "dynamic"])
  parser.add_argument("--stop-at-stage", type=int, help="run only the first K stages")
  parser.add_argument("--start-image", help="an image to super-resolve instead of the base stage")


def _one_or_many(values):
  if values is None:
    return None
  return values[0] if len(values) == 1 else values


def run(args) -> int:
  import numpy as np
  from PIL import Image

  from imagen_jax import logs
  from imagen_jax.images import grid
  from imagen_jax.pipeline import Imagen

  logs.setup()
  out = pathlib.Path(args.out)
  if out.suffix.lower() != ".png":
    raise ValueError(f"--out must be a .png file, got {out}.")
  out.parent.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  imagen = Imagen.load(args.stages)
  load_seconds = time.perf_counter() - t0
  start = None
  if args.start_image:
    start = np.asarray(Image.open(args.start_image).convert("RGB"))
  timings = []
  per_stage = imagen.sample(
    args.prompt,
    seed=args.seed,
    guidance=_one_or_many(args.guidance),
    steps=_one_or_many(args.steps),
    sampler=_one_or_many(args.sampler),
    aug_level=_one_or_many(args.aug_level),
    threshold=_one_or_many(args.threshold),
    stop_at_stage=args.stop_at_stage,
    start_image=start,
    progress=True,
    on_stage=timings.append,
  )
  final = per_stage[-1]
  for i, image in enumerate(final):
    Image.fromarray(image).save(out.with_name(f"{out.stem}_{i}.png"))
  Image.fromarray(grid(final)).save(out)
  print(f"loaded {len(imagen.stages)} stage(s) in {load_seconds:.1f}s")
  for stage in timings:
    print(
      f"stage {stage.index + 1}: {stage.seconds:.1f}s for {len(args.prompt)} image(s) "
      f"({stage.images.shape[1]}px, first call includes compilation)"
    )
  print(f"wrote {out} and {len(final)} image(s) {out.stem}_N.png beside it")
  return 0
