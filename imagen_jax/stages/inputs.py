"""What a stage samples from, as one pytree: `StageInputs`."""

from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class StageInputs:
  """The arrays one stage call reads (all on the same batch of B rows).

  Attributes:
    text: text embeddings [B, L, D].
    mask: [B, L] bool, True at real tokens.
    low_res: a super-resolution stage's input [B, h, w, 3] in [-1, 1].
    null_text: the unconditional half of guidance [B, L, D] (None: the stage's null text).
    null_mask: its mask [B, L].
    source: a picture to edit [B, S, S, 3] in [-1, 1] (image-to-image from the options'
      strength, or inpainting with `keep`).
    keep: [B, S, S, 1], 1 where the source is kept (inpainting).
  """

  text: jax.Array
  mask: jax.Array
  low_res: jax.Array | None = None
  null_text: jax.Array | None = None
  null_mask: jax.Array | None = None
  source: jax.Array | None = None
  keep: jax.Array | None = None

  @property
  def batch(self) -> int:
    return self.text.shape[0]


jax.tree_util.register_dataclass(
  StageInputs,
  data_fields=["text", "mask", "low_res", "null_text", "null_mask", "source", "keep"],
  meta_fields=[],
)
