"""The text conditioning of a cascade call: per-row text [N, L, D] and mask [N, L] from prompts
(encoded once for all stages) or given embeddings, and the null text of guidance."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.errors import InputError
from imagen_jax.text import check_texts


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
    raise InputError(f"{name} has {len(value)} texts for {count} prompts: give one, or one each.")
  return value


def _embeds(embeds, mask, name: str):
  embeds = jnp.asarray(embeds, jnp.float32)
  if embeds.ndim != 3:
    raise InputError(f"{name} must be [B, L, D] text embeddings, got shape {embeds.shape}.")
  mask = jnp.ones(embeds.shape[:2], bool) if mask is None else jnp.asarray(mask, bool)
  if mask.shape != embeds.shape[:2]:
    raise InputError(f"The mask of {name} must be {embeds.shape[:2]}, got {mask.shape}.")
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
    raise InputError(f"num_images_per_prompt must be a positive integer, got {images_per_prompt}.")
  if (prompts is None) == (prompt_embeds is None):
    raise InputError("Give prompts or prompt_embeds (exactly one of them).")
  if prompt_embeds is not None:
    text, mask = _embeds(prompt_embeds, prompt_mask, "prompt_embeds")
    names, texts = [f"<embedding {i}>" for i in range(text.shape[0])], None
  else:
    names = texts = check_texts([prompts] if isinstance(prompts, str) else prompts)
    text, mask = encoder(names)
  count = text.shape[0]
  if negative_prompt is not None and negative_embeds is not None:
    raise InputError("Give negative_prompt or negative_embeds, not both.")
  null_text = null_mask = None
  if negative_embeds is not None:
    null_text, null_mask = _embeds(negative_embeds, negative_mask, "negative_embeds")
    if null_text.shape[0] == 1:
      null_text = jnp.repeat(null_text, count, 0)
      null_mask = jnp.repeat(null_mask, count, 0)
    if null_text.shape != text.shape:
      raise InputError(
        f"negative_embeds has shape {null_text.shape}; the prompts' is {text.shape}."
      )
  elif negative_prompt is not None or null_is_encoded:
    null_text, null_mask = encoder(
      _as_list("" if negative_prompt is None else negative_prompt, count, "negative_prompt")
    )
  rep = lambda a: None if a is None else jnp.repeat(jnp.asarray(a), images_per_prompt, axis=0)
  return Conditioning(
    text=rep(text).astype(jnp.float32),
    mask=rep(mask),
    null_text=None if null_text is None else rep(null_text).astype(jnp.float32),
    null_mask=rep(null_mask),
    prompts=[n for n in names for _ in range(images_per_prompt)],
    texts=texts,
  )
