"""What one `Imagen.sample` call asks for, made explicit: the rows to draw (prompt, image index),
their text conditioning and null text, one PRNG key per row, and the form of the result.

A row's key comes from the call's key, the prompt's text (and how many times the same text came
before it in the list, so repeated prompts differ) and the image index; each stage folds in its
own index. So a picture depends on its prompt, its index and the key, never on its batch or its
position in it: a prompt alone gives the picture it gave in a grid. Rows given as embeddings are
keyed by their position instead.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.images import antialiased_resize, to_float, to_uint8
from imagen_jax.text import check_texts

log = logging.getLogger(__name__)

OUTPUT_TYPES = ("np", "pil", "jax")


def base_key(key=None, seed=None):
  """The call's PRNG key: `key` (a typed key or a raw uint32[2] PRNGKey) or jax.random.key(seed)
  (seed 0 when neither is given)."""
  if key is not None and seed is not None:
    raise ValueError("Give key or seed, not both.")
  if key is None:
    if seed is not None and not isinstance(seed, (int, np.integer)):
      raise TypeError(f"seed must be an integer (pass PRNG keys as key=), got {type(seed)}.")
    return jax.random.key(0 if seed is None else int(seed))
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(f"key must be one PRNG key, got shape {key.shape}.")
    return key
  if key.dtype == jnp.uint32 and key.shape == (2,):
    return jax.random.wrap_key_data(key)
  raise TypeError(f"key must be a jax PRNG key (jax.random.key(0)), got {key.dtype} {key.shape}.")


def row_keys(key, prompts: list[str] | None, count: int, images_per_prompt: int):
  """keys [count * images_per_prompt], row (p, j) at p * images_per_prompt + j (see the module
  docstring); `prompts` None: rows given as embeddings, keyed by position."""
  if prompts is None:
    ids, repeats = np.arange(count), np.zeros(count)
  else:
    seen: dict[str, int] = {}
    ids, repeats = [], []
    for text in prompts:
      ids.append(zlib.crc32(text.encode()) & 0x7FFFFFFF)
      repeats.append(seen.get(text, 0))
      seen[text] = repeats[-1] + 1
  ids = jnp.asarray(np.repeat(np.asarray(ids, np.int64), images_per_prompt), jnp.uint32)
  repeats = jnp.asarray(np.repeat(np.asarray(repeats, np.int64), images_per_prompt), jnp.uint32)
  j = jnp.asarray(np.tile(np.arange(images_per_prompt), count), jnp.uint32)
  fold = jax.random.fold_in
  return jax.vmap(lambda a, r, b: fold(fold(fold(key, a), r), b))(ids, repeats, j)


@dataclasses.dataclass
class Conditioning:
  """Per-row text [N, L, D], mask [N, L], and the null text of guidance (None: each stage's own
  default), already repeated num_images_per_prompt times."""

  text: jax.Array
  mask: jax.Array
  null_text: jax.Array | None
  null_mask: jax.Array | None
  prompts: list[str]  # one per row
  texts: list[str] | None  # the distinct prompts given (None for embeddings)


def _as_list(value, count: int, name: str) -> list[str]:
  if isinstance(value, str):
    return [value] * count
  value = check_texts(value)
  if len(value) != count:
    raise ValueError(f"{name} has {len(value)} texts for {count} prompts: give one, or one each.")
  return value


def _embeds(embeds, mask, name: str):
  embeds = jnp.asarray(embeds, jnp.float32)
  if embeds.ndim != 3:
    raise ValueError(f"{name} must be [B, L, D] text embeddings, got shape {embeds.shape}.")
  mask = jnp.ones(embeds.shape[:2], bool) if mask is None else jnp.asarray(mask, bool)
  if mask.shape != embeds.shape[:2]:
    raise ValueError(f"The mask of {name} must be {embeds.shape[:2]}, got {mask.shape}.")
  return embeds, mask


def conditioning(
  encoder,
  prompts,
  *,
  prompt_embeds=None,
  prompt_mask=None,
  negative_prompt=None,
  negative_embeds=None,
  negative_mask=None,
  images_per_prompt: int = 1,
  null_is_encoded: bool = False,
) -> Conditioning:
  """The text conditioning of a call, from prompts (encoded with `encoder`) or embeddings.
  `null_is_encoded`: the stages' default null text is the encoding of "" (DeepFloyd IF)."""
  if not isinstance(images_per_prompt, (int, np.integer)) or images_per_prompt < 1:
    raise ValueError(f"num_images_per_prompt must be a positive integer, got {images_per_prompt}.")
  if (prompts is None) == (prompt_embeds is None):
    raise ValueError("Give prompts or prompt_embeds (exactly one of them).")
  if prompt_embeds is not None:
    text, mask = _embeds(prompt_embeds, prompt_mask, "prompt_embeds")
    names, texts = [f"<embedding {i}>" for i in range(text.shape[0])], None
  else:
    names = texts = check_texts([prompts] if isinstance(prompts, str) else prompts)
    text, mask = encoder(names)
  count = text.shape[0]
  if negative_prompt is not None and negative_embeds is not None:
    raise ValueError("Give negative_prompt or negative_embeds, not both.")
  null_text = null_mask = None
  if negative_embeds is not None:
    null_text, null_mask = _embeds(negative_embeds, negative_mask, "negative_embeds")
    if null_text.shape[0] == 1:
      null_text = jnp.repeat(null_text, count, 0)
      null_mask = jnp.repeat(null_mask, count, 0)
    if null_text.shape != text.shape:
      raise ValueError(
        f"negative_embeds has shape {null_text.shape}; the prompts' is {text.shape}."
      )
  elif negative_prompt is not None or null_is_encoded:
    null_text, null_mask = encoder(
      _as_list("" if negative_prompt is None else negative_prompt, count, "negative_prompt")
    )
  rep = lambda a: None if a is None else jnp.repeat(jnp.asarray(a), images_per_prompt, axis=0)
  return Conditioning(
    rep(text).astype(jnp.float32),
    rep(mask),
    None if null_text is None else rep(null_text).astype(jnp.float32),
    rep(null_mask),
    [n for n in names for _ in range(images_per_prompt)],
    texts,
  )


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


def edit_inputs(init_image, mask, strength, *, prompts: int, images_per_prompt: int):
  """(source uint8 [N, H, W, 3], keep bool [N, H, W] or None) for editing, one row per picture;
  None when nothing is edited. `mask` is nonzero where new content is drawn."""
  if init_image is None:
    if mask is not None or strength != 1.0:
      raise ValueError("strength < 1 and mask edit a picture: give it as init_image.")
    return None
  if not 0.0 < float(strength) <= 1.0:
    raise ValueError(f"strength must be in (0, 1] (1 starts from pure noise), got {strength}.")
  image = np.asarray(init_image)
  if image.ndim == 3:
    image = image[None]
  if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(
      f"init_image must be uint8 [H, W, 3] or [B, H, W, 3] (RGB), got {image.dtype} {image.shape}."
    )
  if image.shape[0] not in (1, prompts):
    raise ValueError(f"init_image has {image.shape[0]} pictures for {prompts} prompts.")
  image = np.broadcast_to(image, (prompts, *image.shape[1:]))
  keep = None
  if mask is not None:
    mask = np.asarray(mask)
    if mask.ndim == 2:
      mask = mask[None]
    if mask.ndim != 3 or mask.shape[1:] != image.shape[1:3]:
      raise ValueError(
        f"mask must be [H, W] or [B, H, W] with the init_image's size {image.shape[1:3]}, "
        f"got {mask.shape}."
      )
    if mask.shape[0] not in (1, prompts):
      raise ValueError(f"mask has {mask.shape[0]} masks for {prompts} prompts.")
    keep = np.broadcast_to(mask == 0, (prompts, *mask.shape[1:]))
    if strength == 1.0 and keep.all():
      log.warning("the mask draws nothing: the pictures are the init_image")
  elif strength == 1.0:
    raise ValueError("init_image at strength 1 without a mask changes nothing: lower strength.")
  rep = lambda a: np.repeat(a, images_per_prompt, axis=0)
  return rep(image), None if keep is None else rep(keep)


def edit_at(edit: tuple | None, size: int):
  """(source float [N, size, size, 3] in [-1, 1], keep float [N, size, size, 1] or None) of
  edit_inputs' arrays at a stage's resolution (antialiased for the picture, nearest for the
  mask)."""
  if edit is None:
    return None
  image, keep = edit
  if image.shape[1:3] != (size, size):
    image = np.stack([antialiased_resize(im, size) for im in image])
  source = to_float(jnp.asarray(image))
  if keep is None:
    return source, None
  rows = np.arange(size) * keep.shape[1] // size
  cols = np.arange(size) * keep.shape[2] // size
  return source, jnp.asarray(keep[:, rows][:, :, cols][..., None], jnp.float32)
