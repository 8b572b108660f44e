"""`imagen-jax sample`: text to images through trained stages or DeepFloyd IF's.

Writes into the --out folder: one PNG per picture (image_000.png, ...; with --save-stages also
each earlier stage's, stageK/image_000.png), grid.png of the final pictures, and samples.json;
each PNG carries its prompt, seed, image index and settings as text chunks, so one picture of a
grid is reproduced by its prompt and seed alone.
"""

from __future__ import annotations

import json
import os
import pathlib

from imagen_jax.cli import positive_int
from imagen_jax.errors import InputError, MissingPath

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
    help="base first: training workdirs, checkpoint directories or an exported cascade, or "
    "DeepFloyd IF stages (hub ids such as DeepFloyd/IF-I-XL-v1.0 DeepFloyd/IF-II-L-v1.0, or "
    "saved pipeline folders)",
  )
  what.add_argument(
    "--pretrained",
    choices=sorted(PRETRAINED),
    help="DeepFloyd IF's two stages, e.g. if-xl = IF-I-XL + IF-II-L (gated on the hub: accept "
    "the license and log in first)",
  )
  parser.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
  parser.add_argument("--prompts-file", help="a text file with one prompt per line")
  parser.add_argument("--out", required=True, help="the folder to write the pictures into")
  parser.add_argument("--seed", type=int, default=0, help="the seed of every picture")
  parser.add_argument("--num-images", type=positive_int, default=1, help="pictures per prompt")
  parser.add_argument(
    "--negative-prompt", help="what guidance steers away from (default: the null text)"
  )
  parser.add_argument(
    "--batch-size", type=positive_int, help="pictures per device call (default: all at once)"
  )
  parser.add_argument("--guidance", type=float, nargs="+", help="w per stage (1 = no guidance)")
  parser.add_argument("--steps", type=positive_int, nargs="+", help="sampling steps per stage")
  parser.add_argument(
    "--sampler", nargs="+", choices=["ddpm", "ddim", "dpm++2m"], help="sampler per stage"
  )
  parser.add_argument("--aug-level", type=float, nargs="+", help="noise augmentation per stage")
  parser.add_argument(
    "--threshold", nargs="+", choices=["none", "static", "dynamic"], help="per stage"
  )
  parser.add_argument("--stop-at-stage", type=positive_int, help="run only the first K stages")
  parser.add_argument("--start-image", help="an image to super-resolve instead of the base stage")
  parser.add_argument(
    "--init-image", help="a picture to edit: redrawn from --strength and/or inpainted by --mask"
  )
  parser.add_argument(
    "--strength",
    type=float,
    default=1.0,
    help="with --init-image: the fraction of the noise schedule to start from (1 = from noise)",
  )
  parser.add_argument(
    "--mask", help="with --init-image: a PNG of its size, white where new content is drawn"
  )
  parser.add_argument(
    "--resample", type=positive_int, default=1, help="with --mask: RePaint's jumps per step"
  )
  parser.add_argument(
    "--save-stages", action="store_true", help="also write every earlier stage's pictures"
  )
  parser.add_argument(
    "--overwrite",
    action="store_true",
    help="replace the pictures an earlier run wrote into --out (by default it is refused)",
  )
  parser.add_argument(
    "--variant",
    default="fp16",
    help="IF hub downloads: the weight files to fetch ('fp16' halves the download; 'none' for "
    "float32)",
  )


def _is_if_stage(stage: str) -> bool:
  """A DeepFloyd IF pipeline folder, or a hub id."""
  from imagen_jax import hub

  path = pathlib.Path(os.path.expanduser(stage))
  if path.is_dir():
    return (path / "model_index.json").exists()
  return hub.is_repo_id(stage)


def _load(args):
  from imagen_jax.pipeline import Imagen

  stages = PRETRAINED[args.pretrained] if args.pretrained else args.stages
  kinds = {_is_if_stage(s) for s in stages}
  if kinds == {True}:
    variant = None if args.variant.lower() == "none" else args.variant
    return Imagen.from_pretrained(stages, variant=variant)
  if kinds == {False}:
    return Imagen.load(stages)
  raise InputError(
    "--stages mixes DeepFloyd IF stages with self-trained ones; a cascade is one or the other "
    "(they read different text encodings)."
  )


def _prompts(args) -> list[str]:
  prompts = list(args.prompt or [])
  if args.prompts_file:
    path = pathlib.Path(args.prompts_file)
    if not path.is_file():
      raise MissingPath(f"--prompts-file {path} does not exist.")
    prompts += [
      line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()
    ]
  if not prompts:
    raise InputError("No prompts: give --prompt (repeatable) or --prompts-file.")
  return prompts


def _open_picture(path: str, option: str):
  """The PIL image at `path`, or a ValueError that names the option it came from."""
  from PIL import Image, UnidentifiedImageError

  try:
    return Image.open(path)
  except FileNotFoundError:
    raise InputError(f"{option} {path}: no such file.") from None
  except UnidentifiedImageError:
    raise InputError(f"{option} {path}: not a picture (give a PNG or JPEG).") from None


def _edit_inputs(args, prompts: int):
  """(init_image uint8 [H, W, 3] or None, mask bool [H, W] or None) read from --init-image and
  --mask (white: draw), checked as Imagen.sample checks them, before any stage loads."""
  import numpy as np

  from imagen_jax.pipeline.edit_request import EditRequest

  init = mask = None
  if args.init_image is not None:
    image = _open_picture(args.init_image, "--init-image")
    if image.mode not in ("RGB", "RGBA", "L", "P"):
      raise InputError(f"--init-image {args.init_image} is {image.mode}; give an RGB picture.")
    init = np.asarray(image.convert("RGB"))
  if args.mask is not None:
    mask = np.asarray(_open_picture(args.mask, "--mask").convert("L")) >= 128
    if not mask.any():
      raise InputError(f"--mask {args.mask} has no white pixel: nothing to draw.")
  EditRequest.make(init, mask, args.strength, args.resample, prompts=prompts)
  return init, mask


def _one_or_many(values):
  if values is None:
    return None
  return values[0] if len(values) == 1 else values


def _remove_earlier_run(out: pathlib.Path) -> None:
  """Deletes what an earlier run wrote into `out` (the pictures its samples.json lists, the
  grid), so that none of its pictures stays beside the new ones."""
  listing = out / "samples.json"
  if not listing.exists():
    return
  try:
    files = [record["file"] for record in json.loads(listing.read_text())]
  except (ValueError, KeyError, TypeError):
    files = []
  for name in [*files, "grid.png", "samples.json"]:
    path = out / name
    if path.resolve().is_relative_to(out.resolve()):
      path.unlink(missing_ok=True)
  for folder in out.glob("stage*"):
    if folder.is_dir() and not any(folder.iterdir()):
      folder.rmdir()


def _png_info(record: dict):
  from PIL.PngImagePlugin import PngInfo

  info = PngInfo()
  for key, value in record.items():
    if key != "file":
      info.add_text(key, value if isinstance(value, str) else json.dumps(value))
  return info


def _check_out(args) -> pathlib.Path:
  """The --out folder, refused before anything loads when it cannot take this run's pictures."""
  out = pathlib.Path(args.out)
  if out.suffix.lower() == ".png":
    raise InputError(f"--out is the folder to write into, not a PNG file: {out}.")
  if out.exists() and not out.is_dir():
    raise InputError(f"--out {out} is a file: give a folder to write the pictures into.")
  if (out / "samples.json").exists() and not args.overwrite:
    raise InputError(
      f"{out} holds the pictures of an earlier run (samples.json): give another --out, or "
      "add --overwrite to replace them."
    )
  return out


# The options of Imagen.sample that take one value per stage, as the parser names them.
PER_STAGE = ("guidance", "steps", "sampler", "aug_level", "threshold")


def _settings(args) -> dict:
  """The settings every picture's PNG and samples.json record."""
  stages = PRETRAINED[args.pretrained] if args.pretrained else args.stages
  named = ("start_image", "init_image", "strength", "mask", "resample")
  return {"stages": stages, **{k: getattr(args, k) for k in (*PER_STAGE, *named)}}


def _write(result, args, out: pathlib.Path) -> None:
  """Each picture (the final stage's, with --save-stages every stage's) as a PNG with its
  record, the final grid and samples.json, replacing an earlier run's files."""
  from PIL import Image

  from imagen_jax.images import grid

  _remove_earlier_run(out)
  settings, records = _settings(args), []
  stages = range(len(result)) if args.save_stages else [len(result) - 1]
  for k in stages:
    folder = out if k == len(result) - 1 else out / f"stage{k + 1}"
    folder.mkdir(exist_ok=True)
    for n, image in enumerate(result[k]):
      record = {
        "file": str((folder / f"image_{n:03d}.png").relative_to(out)),
        "prompt": result.prompts[n],
        "negative_prompt": args.negative_prompt or "",
        "seed": args.seed,
        "image_index": n % args.num_images,
        "stage": k + 1,
        "settings": settings,
      }
      Image.fromarray(image).save(out / record["file"], pnginfo=_png_info(record))
      records.append(record)
  Image.fromarray(grid(result[-1])).save(out / "grid.png")
  (out / "samples.json").write_text(json.dumps(records, indent=1) + "\n")


def run(args) -> int:
  import time

  import numpy as np

  from imagen_jax import logs

  logs.setup()
  prompts = _prompts(args)
  out = _check_out(args)
  init_image, mask = _edit_inputs(args, len(prompts))
  start = None
  if args.start_image:
    start = np.asarray(_open_picture(args.start_image, "--start-image").convert("RGB"))
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  imagen = _load(args)
  load_seconds = time.perf_counter() - t0
  result = imagen.sample(
    prompts, seed=args.seed, negative_prompt=args.negative_prompt,
    num_images_per_prompt=args.num_images, batch_size=args.batch_size,
    stop_at_stage=args.stop_at_stage, start_image=start, init_image=init_image,
    strength=args.strength, mask=mask, resample=args.resample, progress=True,
    **{name: _one_or_many(getattr(args, name)) for name in PER_STAGE},
  )  # fmt: skip
  _write(result, args, out)
  print(f"loaded {len(imagen.stages)} stage(s) in {load_seconds:.1f}s")
  if start is not None:
    print("stage 1: the given --start-image")
  for t in result.timings:
    print(
      f"stage {t.stage + 1}: {t.seconds:.1f}s for {len(result.prompts)} picture(s) of "
      f"{result[t.stage].shape[1]}px, {t.steps} steps (the first call includes compilation)"
    )
  print(f"wrote {len(result.prompts)} picture(s), grid.png and samples.json into {out}")
  return 0
