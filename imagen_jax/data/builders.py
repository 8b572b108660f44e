"""TFDS builders, written to ArrayRecord without TensorFlow:

- `imagen_shapes`: the procedural shapes set (data/shapes.py), any size and resolution, seeded.
- `image_text_folder`: a user's folder of images with captions (a sidecar .txt per image, or
  captions.jsonl / captions.csv); unreadable files and images under `min_size` are skipped and
  counted; grayscale, RGBA, CMYK, palette and 16-bit images become 8-bit RGB.

Images are encoded by PIL (`PILImage`: PNG, or a folder's JPEG pictures as JPEG), so building
needs no TensorFlow; reading goes through tfds data sources, which decode with PIL too.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image, ImageOps

from imagen_jax import logs, paths
from imagen_jax.data import remote, shapes
from imagen_jax.errors import DataError, MissingPath, short_error

log = logging.getLogger(__name__)
logs.drop_known_notices()

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ORIENTATION_TAG = 0x0112  # EXIF: how a camera picture is to be turned for viewing
JPEG_QUALITY = 95  # JPEG pictures resized for storage, as large image-text datasets keep them
BUILD_THREADS = min(32, os.cpu_count() or 1)  # pictures read at once while building a folder
BUILD_CHUNK = 256  # pictures in flight: a chunk's results are held until written, in order
TOO_SMALL = "too small"  # why _read_picture passed over a picture under min_size


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
      raise DataError(f"expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
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


class _Built:
  """TFDS prints "Downloading and preparing dataset ..." to stdout before a build and "...
  downloaded and prepared" after it; these datasets download nothing (the demo is offline),
  so the end of a build is logged instead."""

  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    log.info("built the %s dataset in %s", self.name, self.data_dir)


class ImagenShapes(_Built, tfds.core.GeneratorBasedBuilder):
  """Procedural shapes with captions; one config per (size, examples, seed)."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {
    "1.1.0": "Larger shapes (extent 0.30 / 0.38 / 0.46 of the side).",
    "1.2.0": "Larger shapes again (0.40 / 0.46 / 0.52; two shapes 0.40), positions at 0.27 / "
    "0.5 / 0.73 of the side with +-0.02 jitter.",
  }
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


def _orientation(image: Image.Image) -> int:
  """The EXIF orientation tag (1: upright, as stored)."""
  return image.getexif().get(ORIENTATION_TAG, 1)


def _stored(image: Image.Image, path: pathlib.Path, *, jpeg: bool, unchanged: bool) -> bytes:
  """What the dataset stores of an RGB picture read from `path`: a JPEG file's own bytes when
  its pixels are kept as they are, a JPEG (quality JPEG_QUALITY, 4:4:4) when one was resized or
  turned upright, else a PNG (lossless). Photos stay lossy: as PNG they are several times larger
  and slower to decode (figures: docs/performance.md, "The input pipeline")."""
  if unchanged:
    return path.read_bytes()
  buffer = io.BytesIO()
  if jpeg:
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)  # colour at full size
  else:
    image.save(buffer, format="PNG")
  return buffer.getvalue()


def _read_picture(path: pathlib.Path, *, min_size: int, max_size: int):
  """(stored bytes, short side as stored, None) for a picture to keep, or (None, 0, why not):
  TOO_SMALL, or the error that made it unreadable. Converted to RGB, turned upright, its short
  side brought down to `max_size` (0: kept)."""
  try:
    with Image.open(path) as image:
      image.load()
      jpeg = image.format in ("JPEG", "MPO")  # MPO: phones' JPEG with extra frames
      unchanged = image.format == "JPEG" and image.mode == "RGB" and _orientation(image) == 1
      image = to_rgb(ImageOps.exif_transpose(image))  # upright, as viewers show it
  except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
    return None, 0, short_error(e)  # never empty: it names the error's type
  if min(image.size) < min_size:
    return None, 0, TOO_SMALL
  if max_size and min(image.size) > max_size:
    scale = max_size / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    unchanged = False
  return _stored(image, path, jpeg=jpeg, unchanged=unchanged), min(image.size), None


def read_captions(folder: pathlib.Path) -> tuple[dict[str, str], list[str]]:
  """(file name relative to the folder -> caption, captions that are not UTF-8 text), from
  captions.jsonl, captions.csv, or one .txt beside each image (in that order of precedence).
  A caption that cannot be decoded skips its image and is named in the second list (a file,
  or FILE:LINE); a line of captions.jsonl that is not {"file", "caption"} is an error. A byte
  order mark (as spreadsheet programs and Windows editors write) is ignored."""
  captions: dict[str, str] = {}
  undecodable: list[str] = []
  jsonl = folder / "captions.jsonl"
  if jsonl.exists():
    for n, raw in enumerate(jsonl.read_bytes().splitlines(), 1):
      try:
        line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
      except UnicodeDecodeError:
        undecodable.append(f"{jsonl}:{n}")
        continue
      if line.strip():
        try:
          row = json.loads(line)
          captions[row["file"]] = str(row["caption"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
          raise DataError(
            f"{jsonl}:{n}: each line must be a JSON object with 'file' and 'caption' ({e})."
          ) from None
    return captions, undecodable
  table = folder / "captions.csv"
  if table.exists():
    # surrogateescape keeps undecodable bytes as lone surrogates, found per row below.
    with open(table, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
      reader = csv.DictReader(f)
      if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
        raise DataError(f"{table} needs a header with the columns 'file' and 'caption'.")
      for row in reader:
        try:
          (row["file"] + row["caption"]).encode("utf-8")
        except UnicodeEncodeError:
          undecodable.append(f"{table}:{reader.line_num}")
          continue
        captions[row["file"]] = row["caption"]
    return captions, undecodable
  for image_path in sorted(folder.rglob("*")):
    if image_path.suffix.lower() in IMAGE_SUFFIXES:
      sidecar = image_path.with_suffix(".txt")
      if sidecar.exists():
        try:
          caption = sidecar.read_bytes().decode("utf-8-sig").strip()
        except UnicodeDecodeError:
          undecodable.append(str(sidecar))
          continue
        captions[str(image_path.relative_to(folder))] = caption
  return captions, undecodable


def _inside(folder: pathlib.Path, name: str) -> pathlib.Path | None:
  """folder / name when it stays inside the folder (no absolute names, no '..' out of it)."""
  path = (folder / name).resolve()
  return path if path.is_relative_to(folder.resolve()) else None


def folder_fingerprint(folder, *, exclude: pathlib.Path | None = None) -> str:
  """A digest of the name, size and modification time of every file under `folder`, local or on
  an object store (but those under a local `exclude`, where the dataset itself may be written):
  it changes when images or captions are added, removed or edited."""
  digest = hashlib.sha1()
  url = paths.is_url(folder)
  exclude = exclude.resolve() if exclude else None
  for path in remote.files(folder):
    if url:
      st = path.stat()
      size, mtime = st.length, st.mtime
    else:
      if exclude is not None and pathlib.Path(path).resolve().is_relative_to(exclude):
        continue
      st = os.stat(path)
      size, mtime = st.st_size, st.st_mtime_ns
    digest.update(f"{path.relative_to(folder)}\0{size}\0{mtime}\n".encode())
  return digest.hexdigest()


class ImageTextFolder(_Built, tfds.core.GeneratorBasedBuilder):
  """A folder of images with captions, converted to RGB, turned upright and stored: JPEG
  pictures as JPEG (their own bytes when unchanged), others PNG-encoded."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.1.0": "JPEG pictures stored as JPEG (their own bytes when unchanged); EXIF orientation "
    "applied."
  }
  BUILDER_CONFIG_CLASS = FolderConfig

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self, description="Images with captions from a folder.", features=_features(None)
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    with remote.local_copy(self.builder_config.path) as folder:
      yield from self._examples(folder)

  def _examples(self, folder: pathlib.Path):
    c = self.builder_config
    captions, undecodable = read_captions(folder)
    for where in undecodable:
      log.warning("skipping a caption that is not UTF-8 text: %s", where)
    if not captions:
      raise DataError(
        f"No captioned images in {folder}: put a .txt beside each image, or a captions.jsonl "
        "({'file': ..., 'caption': ...} per line) or captions.csv (file,caption)."
      )
    # Images no caption names (no .txt beside them, or left out of captions.jsonl / .csv).
    bad_sidecars = set(undecodable)
    uncaptioned = sorted(
      name
      for p in folder.rglob("*")
      if p.suffix.lower() in IMAGE_SUFFIXES
      and (name := str(p.relative_to(folder))) not in captions
      and str(p.with_suffix(".txt")) not in bad_sidecars
    )
    if uncaptioned:
      log.warning(
        "skipping %d image(s) without a caption, e.g. %s", len(uncaptioned), uncaptioned[:3]
      )
    skipped = {
      "unreadable": 0,
      "too small": 0,
      "missing": 0,
      "caption not UTF-8": len(undecodable),
      "outside the folder": 0,
      "without a caption": len(uncaptioned),
    }
    self.short_sides: dict[int, int] = {}  # kept images by their short side, as stored
    items = []  # (name, caption, path) of the pictures to read
    for name, caption in sorted(captions.items()):
      path = _inside(folder, name)
      if path is None:
        log.warning("skipping %r: captions may only name files inside %s", name, folder)
        skipped["outside the folder"] += 1
      elif not path.exists():
        skipped["missing"] += 1
      else:
        items.append((name, caption, path))
    kept = 0
    read = functools.partial(_read_picture, min_size=c.min_size, max_size=c.max_size)
    # PIL decodes, resizes and encodes without holding the GIL: threads read pictures in
    # parallel, in chunks, so that memory holds a chunk of them and the order stays the folder's.
    with concurrent.futures.ThreadPoolExecutor(BUILD_THREADS) as pool:
      for start in range(0, len(items), BUILD_CHUNK):
        chunk = items[start : start + BUILD_CHUNK]
        for (name, caption, path), (stored, side, problem) in zip(
          chunk, pool.map(read, [path for _, _, path in chunk])
        ):
          if problem == TOO_SMALL:
            skipped["too small"] += 1
            continue
          if problem:
            log.warning("skipping unreadable image %s: %s", path, problem)
            skipped["unreadable"] += 1
            continue
          self.short_sides[side] = self.short_sides.get(side, 0) + 1
          kept += 1
          yield name, {"image": stored, "caption": caption}
    counts = ", ".join(f"{v} {k}" for k, v in skipped.items())
    if not kept:
      raise DataError(f"No usable image in {folder}: skipped {counts} (the log names them).")
    log.warning("image_text_folder %s: kept %d images; skipped %s", folder, kept, counts)


# Written beside a built image_text_folder dataset: the fingerprint of the folder it was built
# from, and how many of its images have each short side.
SOURCE_STAMP = "source_fingerprint.json"


def images_under(builder: ImageTextFolder, size: int) -> tuple[int, int] | None:
  """(images whose short side is under `size` px, all images) of a built folder dataset, or
  None when its stamp does not count them."""
  stamp = epath.Path(builder.data_path) / SOURCE_STAMP
  sides = json.loads(stamp.read_text()).get("short_sides") if stamp.exists() else None
  if sides is None:
    return None
  return sum(n for s, n in sides.items() if int(s) < size), sum(sides.values())


def folder_builder(*, path: str, min_size: int, max_size: int, data_dir: str | None):
  """The builder of a folder of captioned images, local or on an object store (gs://)."""
  url = paths.is_url(path)
  folder = epath.Path(path) if url else pathlib.Path(path).expanduser().resolve()
  if not folder.is_dir():
    raise MissingPath(f"--config.data.path {path} is not a folder of images.")
  digest = hashlib.sha1(f"{folder}|{min_size}|{max_size}".encode()).hexdigest()[:10]
  config = FolderConfig(
    name=f"{folder.name}_{digest}", path=str(folder), min_size=min_size, max_size=max_size
  )
  return ImageTextFolder(config=config, data_dir=data_dir or None, file_format="array_record")


def prepare_folder(**kwargs) -> ImageTextFolder:
  """The folder_builder(**kwargs) with its dataset built: on first use, and again whenever the
  folder changed (images or captions added, removed or edited) since it was built."""
  builder = folder_builder(**kwargs)
  source = builder.builder_config.path
  stamp = epath.Path(builder.data_path) / SOURCE_STAMP
  local_root = None if paths.is_url(builder.data_dir_root) else builder.data_dir_root
  fingerprint = folder_fingerprint(source, exclude=local_root and pathlib.Path(local_root))
  if builder.is_prepared():
    built_from = json.loads(stamp.read_text())["fingerprint"] if stamp.exists() else None
    if built_from == fingerprint:
      return builder
    log.warning("%s changed since its dataset was built: building it again", source)
    epath.Path(builder.data_path).rmtree()
  log.info("building the image_text_folder dataset of %s", source)

  def prepare(local):
    local.download_and_prepare()
    stamp = {"folder": source, "fingerprint": fingerprint, "short_sides": local.short_sides}
    (epath.Path(local.data_path) / SOURCE_STAMP).write_text(json.dumps(stamp))

  return remote.build(
    lambda data_dir: folder_builder(**{**kwargs, "data_dir": data_dir}), kwargs["data_dir"], prepare
  )
