"""Image conversions at the edges of the models: uint8 <-> float in [-1, 1], resizing, grids.

Inside the models images are float [B, H, W, 3] in [-1, 1]; on the host they are uint8 NHWC.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


def to_float(images):
  """uint8 [..., 3] -> float32 in [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images):
  """float in [-1, 1] -> uint8 (rounded, clipped)."""
  return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def bicubic_resize(images, size: int):
  """float [B, h, w, C] -> [B, size, size, C] by bicubic interpolation, in JAX (the SR stages'
  conditioning image)."""
  b, _, _, c = images.shape
  return jax.image.resize(images, (b, size, size, c), "bicubic")


def _align_corners_weights(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] linear interpolation weights with the corner pixels' centres aligned."""
  pos = np.arange(n_out) * ((n_in - 1) / max(n_out - 1, 1))
  lo = np.minimum(np.floor(pos).astype(int), n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  w = np.zeros((n_out, n_in), np.float32)
  np.add.at(w, (np.arange(n_out), lo), 1 - (pos - lo))
  np.add.at(w, (np.arange(n_out), hi), pos - lo)
  return w


def bilinear_resize_align_corners(images, size: int):
  """[B, h, w, C] -> [B, size, size, C], bilinear with aligned corners (torch's
  interpolate(mode="bilinear", align_corners=True), which DeepFloyd IF's stage II uses)."""
  wy = jnp.asarray(_align_corners_weights(images.shape[1], size))
  wx = jnp.asarray(_align_corners_weights(images.shape[2], size))
  hi = jax.lax.Precision.HIGHEST
  return jnp.einsum("yh,xw,bhwc->byxc", wy, wx, images.astype(jnp.float32), precision=hi)


def antialiased_resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
  """uint8 [H, W, 3] -> [size, size, 3] (or (width, height)) by PIL's antialiased bicubic
  filter, on the host (data preparation and user images)."""
  size = (size, size) if isinstance(size, int) else size
  return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
  """uint8 [N, H, W, 3] -> one uint8 image with the N images in a grid (2 px gaps)."""
  n, h, w, c = images.shape
  columns = columns or int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / columns))
  out = np.full((rows * (h + 2) + 2, columns * (w + 2) + 2, c), 255, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    out[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w] = image
  return out
