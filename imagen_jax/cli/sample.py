"""`imagen-jax sample`: text to images through trained stages or DeepFloyd IF's."""

from __future__ import annotations

import os
import pathlib
import time

# --pretrained NAME -> IF's stages (IF's model cards pair IF-I-XL and -L with IF-II-L).
PRETRAINED = {
  "if-xl": ["DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0"],
  "if-l": ["DeepFloyd/IF-I-L-v1.0", "DeepFloyd/IF-II-L-v1.0"],
  "if-m": ["DeepFloyd/IF-I-M-v1.0", "DeepFloyd/IF-II-M-v1.0"],
}


def add_arguments(parser):
  what = parser.add_mutually_exclusive_group(required=True)
  what.add_argument(
    "--stages",
    nargs="+",
    metavar="STAGE",
    help="base first: training workdirs or checkpoint directories, or DeepFloyd IF stages "
    "(hub ids such as DeepFloyd/IF-I-XL-v1.0 DeepFloyd/IF-II-L-v1.0, or saved pipeline folders)",
  )
  what.add_argument(
    "--pretrained",
    choices=sorted(PRETRAINED),
    help="DeepFloyd IF's two stages, e.g. if-xl = IF-I-XL + IF-II-L (gated on the hub: accept "
    "the license and log in first)",
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
  parser.add_argument(
    "--variant",
    default="fp16",
    help="IF hub downloads: the weight files to fetch ('fp16' halves the download; 'none' for "
    "float32); default: %(default)s",
  )


def _is_if_stage(stage: str) -> bool:
  """A DeepFloyd IF pipeline folder, or a hub id that is not a local folder."""
  path = pathlib.Path(os.path.expanduser(stage))
  if path.is_dir():
    return (path / "model_index.json").exists()
  return stage.count("/") == 1 and not stage.startswith((".", "/", "~")) and not path.exists()


def _load(args):
  from imagen_jax.pipeline import Imagen

  stages = PRETRAINED[args.pretrained] if args.pretrained else args.stages
  kinds = {_is_if_stage(s) for s in stages}
  if kinds == {True}:
    variant = None if args.variant.lower() == "none" else args.variant
    return Imagen.from_pretrained(stages, variant=variant)
  if kinds == {False}:
    return Imagen.load(stages)
  raise ValueError(
    "--stages mixes DeepFloyd IF stages with self-trained ones; a cascade is one or the other "
    "(they read different text encodings)."
  )


def _one_or_many(values):
  if values is None:
    return None
  return values[0] if len(values) == 1 else values


def run(args) -> int:
  import numpy as np
  from PIL import Image

  from imagen_jax import logs
  from imagen_jax.images import grid

  logs.setup()
  out = pathlib.Path(args.out)
  if out.suffix.lower() != ".png":
    raise ValueError(f"--out must be a .png file, got {out}.")
  out.parent.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  imagen = _load(args)
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
