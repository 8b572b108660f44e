"""TFDS builders, written to ArrayRecord without TensorFlow:

- `imagen_shapes`: the procedural shapes set (data/shapes.py), any size and resolution, seeded.
- `image_text_folder`: a user's folder of images with captions (a sidecar .txt per image, or
  captions.jsonl / captions.csv); unreadable files and images under `min_size` are skipped and
  counted; grayscale, RGBA, CMYK, palette and 16-bit images become 8-bit RGB.

Images are stored PNG-encoded by PIL (`PILImage`), so building needs no TensorFlow; reading goes
through tfds data sources, which decode with PIL too.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from imagen_jax.data import shapes

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class PILImage(tfds.features.Image):
  """tfds.features.Image whose encoding uses PIL instead of TensorFlow.

  Accepts uint8 arrays [H, W, 3] (stored as PNG) or already encoded PNG / JPEG bytes (stored as
  they are).
  """

  def encode_example(self, image):
    if isinstance(image, bytes):
      return image
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _features(size: int | None):
  shape = (size, size, 3) if size else (None, None, 3)
  return tfds.features.FeaturesDict(
    {"image": PILImage(shape=shape), "caption": tfds.features.Text()}
  )


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  size: int = 64
  num_examples: int = 20_000
  seed: int = 0


class ImagenShapes(tfds.core.GeneratorBasedBuilder):
  """Procedural shapes with captions; one config per (size, examples, seed)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "Larger shapes (extent 0.30 / 0.38 / 0.46 of the side)."}
  BUILDER_CONFIG_CLASS = ShapesConfig

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      description="Coloured shapes at named positions, with captions that describe them.",
      features=_features(self.builder_config.size),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    c = self.builder_config
    for i in range(c.num_examples):
      yield i, shapes.example(c.seed, i, c.size)


def shapes_builder(*, size: int, num_examples: int, seed: int, data_dir: str | None):
  config = ShapesConfig(
    name=f"{size}px_{num_examples}_seed{seed}", size=size, num_examples=num_examples, seed=seed
  )
  return ImagenShapes(config=config, data_dir=data_dir or None, file_format="array_record")


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  path: str = ""
  min_size: int = 0
  max_size: int = 0  # downscale so the shortest side is at most this (0: keep)


def to_rgb(image: Image.Image) -> Image.Image:
  """8-bit RGB from grayscale (L, LA, 1), 16/32-bit (I;16, I, F), palette (P), CMYK and RGBA;
  transparency is composited onto white."""
  if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    array = np.asarray(image, np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
    image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
  if image.mode == "P":
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  if image.mode in ("RGBA", "LA", "PA"):
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    image = Image.alpha_composite(background, rgba)
  return image.convert("RGB")


def read_captions(folder: pathlib.Path) -> dict[str, str]:
  """file name (relative to the folder) -> caption, from captions.jsonl, captions.csv, or one
  .txt beside each image (in that order of precedence)."""
  captions: dict[str, str] = {}
  jsonl = folder / "captions.jsonl"
  if jsonl.exists():
    for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
      if line.strip():
        try:
          row = json.loads(line)
          captions[row["file"]] = str(row["caption"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
          raise ValueError(
            f"{jsonl}:{n}: each line must be a JSON object with 'file' and 'caption' ({e})."
          ) from None
    return captions
  table = folder / "captions.csv"
  if table.exists():
    with open(table, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
        raise ValueError(f"{table} needs a header with the columns 'file' and 'caption'.")
      for row in reader:
        captions[row["file"]] = row["caption"]
    return captions
  for image_path in sorted(folder.rglob("*")):
    if image_path.suffix.lower() in IMAGE_SUFFIXES:
      sidecar = image_path.with_suffix(".txt")
      if sidecar.exists():
        captions[str(image_path.relative_to(folder))] = sidecar.read_text(encoding="utf-8").strip()
  return captions


class ImageTextFolder(tfds.core.GeneratorBasedBuilder):
  """A folder of images with captions, converted to RGB and stored PNG-encoded."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIG_CLASS = FolderConfig

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self, description="Images with captions from a folder.", features=_features(None)
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    c = self.builder_config
    folder = pathlib.Path(c.path)
    captions = read_captions(folder)
    if not captions:
      raise ValueError(
        f"No captioned images in {folder}: put a .txt beside each image, or a captions.jsonl "
        "({'file': ..., 'caption': ...} per line) or captions.csv (file,caption)."
      )
    skipped = {"unreadable": 0, "too small": 0, "missing": 0}
    kept = 0
    for name, caption in sorted(captions.items()):
      path = folder / name
      if not path.exists():
        skipped["missing"] += 1
        continue
      try:
        with Image.open(path) as image:
          image.load()
          image = to_rgb(image)
      except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        log.warning("skipping unreadable image %s: %s", path, e)
        skipped["unreadable"] += 1
        continue
      if min(image.size) < c.min_size:
        skipped["too small"] += 1
        continue
      if c.max_size and min(image.size) > c.max_size:
        scale = c.max_size / min(image.size)
        image = image.resize(
          (round(image.width * scale), round(image.height * scale)), Image.BICUBIC
        )
      kept += 1
      yield name, {"image": np.asarray(image), "caption": caption}
    log.warning(
      "image_text_folder %s: kept %d images; skipped %s",
      folder,
      kept,
      ", ".join(f"{v} {k}" for k, v in skipped.items()),
    )
    self.skipped = skipped


def folder_builder(*, path: str, min_size: int, max_size: int, data_dir: str | None):
  folder = pathlib.Path(path).expanduser().resolve()
  if not folder.is_dir():
    raise FileNotFoundError(f"--config.data.path {path} is not a folder of images.")
  digest = hashlib.sha1(f"{folder}|{min_size}|{max_size}".encode()).hexdigest()[:10]
  config = FolderConfig(
    name=f"{folder.name}_{digest}", path=str(folder), min_size=min_size, max_size=max_size
  )
  return ImageTextFolder(config=config, data_dir=data_dir or None, file_format="array_record")
