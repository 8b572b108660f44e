"""What a cascade call asks to edit: a picture redrawn from a strength (image-to-image) and/or
inpainted where a mask says, checked once where the call enters.

Every stage keeps the kept region at its own resolution; the base stage starts from the picture
at `strength`, the super-resolution stages super-resolve as usual and inpaint with the mask.
"""

from __future__ import annotations

import dataclasses
import logging

import jax.numpy as jnp
import numpy as np

from imagen_jax.diffusion.editing import check_resample, check_strength
from imagen_jax.errors import InputError
from imagen_jax.images import antialiased_resize, to_float

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EditRequest:
  """A checked edit, one picture per prompt.

  Attributes:
    image: uint8 [P, H, W, 3], the picture of each of the P prompts.
    keep: bool [P, H, W], True where the picture is kept (None: image-to-image only).
    strength: in (0, 1]: the fraction of the base stage's schedule it starts from.
    resample: RePaint's jumps per step (1: none).
  """

  image: np.ndarray
  keep: np.ndarray | None
  strength: float
  resample: int

  @classmethod
  def make(cls, init_image, mask, strength, resample, *, prompts: int) -> EditRequest | None:
    """The request of Imagen.sample's editing arguments (None when nothing is edited): the
    picture `init_image` uint8 [H, W, 3] (all prompts) or [P, H, W, 3], `mask` bool or uint8
    [H, W] or [P, H, W], nonzero where new content is drawn."""
    strength, resample = check_strength(strength), check_resample(resample)
    if init_image is None:
      if mask is not None or strength != 1.0:
        raise InputError("strength < 1 and mask edit a picture: give it as init_image.")
      return None
    image = _per_prompt(np.asarray(init_image), 3, prompts, "init_image")
    if image.shape[-1] != 3 or image.dtype != np.uint8:
      raise InputError(
        f"init_image must be uint8 [H, W, 3] or [B, H, W, 3] (RGB), got {image.dtype} "
        f"{image.shape}."
      )
    keep = None
    if mask is not None:
      mask = _per_prompt(np.asarray(mask), 2, prompts, "mask")
      if mask.shape[1:] != image.shape[1:3]:
        raise InputError(
          f"mask must be [H, W] or [B, H, W] with the init_image's size {image.shape[1:3]}, "
          f"got {mask.shape[1:]}."
        )
      keep = mask == 0
      if strength == 1.0 and keep.all():
        log.warning("the mask draws nothing: the pictures are the init_image")
    elif strength == 1.0:
      raise InputError("init_image at strength 1 without a mask changes nothing: lower strength.")
    return cls(image, keep, strength, resample)

  def at_size(self, rows, size: int):
    """(source float [N, size, size, 3] in [-1, 1], keep float [N, size, size, 1] or None) of
    the rows `rows` (prompt indices [N]) at a stage's resolution: antialiased for the picture,
    nearest for the mask."""
    prompts, row_of = np.unique(rows, return_inverse=True)  # each picture resized once
    image = self.image[prompts]
    if image.shape[1:3] != (size, size):
      image = np.stack([antialiased_resize(im, size) for im in image])
    source = to_float(jnp.asarray(image[row_of]))
    if self.keep is None:
      return source, None
    keep = self.keep[rows]
    ys = np.arange(size) * keep.shape[1] // size
    xs = np.arange(size) * keep.shape[2] // size
    return source, jnp.asarray(keep[:, ys][:, :, xs][..., None], jnp.float32)


def _per_prompt(array: np.ndarray, ndim: int, prompts: int, name: str) -> np.ndarray:
  """`array` with `ndim` axes per picture, as one per prompt [prompts, ...]."""
  if array.ndim == ndim:
    array = array[None]
  if array.ndim != ndim + 1:
    shapes = "[H, W, 3] or [B, H, W, 3]" if ndim == 3 else "[H, W] or [B, H, W]"
    raise InputError(f"{name} must be {shapes}, got shape {array.shape}.")
  if array.shape[0] not in (1, prompts):
    raise InputError(f"{name} has {array.shape[0]} pictures for {prompts} prompts.")
  return np.broadcast_to(array, (prompts, *array.shape[1:]))
