"""What Imagen.sample returns: each stage's pictures in the form asked for, with timings."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from imagen_jax.errors import InputError
from imagen_jax.images import to_uint8

OUTPUT_TYPES = ("np", "pil", "jax")


@dataclasses.dataclass
class StageOutput:
  """One stage's images in a cascade run: `index` (0-based), uint8 `images` [B, H, W, 3], and the
  wall-clock `seconds` it took (its first call includes compilation)."""

  index: int
  images: np.ndarray
  seconds: float


@dataclasses.dataclass
class StageTiming:
  """`stage` (0-based index) ran `steps` steps in `seconds` of wall-clock time (its first call
  with a new batch shape or options includes compilation)."""

  stage: int
  steps: int
  seconds: float


@dataclasses.dataclass
class ImagenOutput(Sequence):
  """The result of Imagen.sample: `images`, one entry per stage run (in the form output_type
  asked for; with start_image, the start image first), `timings` (StageTiming per stage run),
  and `prompts`, the prompt of each row. It indexes and iterates as `images`."""

  images: list
  timings: list[StageTiming]
  prompts: list[str]

  def __getitem__(self, index):
    return self.images[index]

  def __len__(self) -> int:
    return len(self.images)


def check_output_type(output_type: str) -> str:
  if output_type not in OUTPUT_TYPES:
    raise InputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
  return output_type


def convert(images, output_type: str):
  """Float images [N, H, W, 3] in [-1, 1] -> uint8 numpy ("np"), a list of PIL images ("pil"),
  or the float jax array itself ("jax")."""
  if output_type == "jax":
    return images
  array = np.asarray(to_uint8(images))
  if output_type == "np":
    return array
  from PIL import Image

  return [Image.fromarray(a) for a in array]
