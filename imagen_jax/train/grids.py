"""Sample grids during training: the EMA model sampled on fixed prompts (a base stage, from
config.sample.prompts) or a fixed batch of the data, as one image for TensorBoard with its
captions. For SR stages each row shows the upsampled low-res input, the sample and the target."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from imagen_jax.images import bicubic_resize, grid, to_float, to_uint8
from imagen_jax.models.sampler import StageSampler
from imagen_jax.train.step import text_condition

EXAMPLES = 8


class GridSampler:
  """Samples `batch` (a local batch of EXAMPLES examples) with the EMA parameters; its sampler is
  compiled on the first grid and reused for the run."""

  def __init__(self, stage, config, batch: dict, text_encoder=None, text_params=None, captions=()):
    self.stage, self.options = stage, config.sample
    self.captions = list(captions)
    self.batch = {k: jnp.asarray(v) for k, v in batch.items() if k != "index"}
    self.text_encoder, self.text_params = text_encoder, text_params
    self._sampler = StageSampler(stage)

  def caption_text(self) -> str:
    """The grid's captions, one line per picture (per row for SR stages), in grid order."""
    return "\n\n".join(f"{i}. {c}" for i, c in enumerate(self.captions, 1))

  def __call__(self, ema_params, key) -> np.ndarray:
    """uint8 [H, W, 3]: the grid of samples for the fixed batch."""
    batch, s = self.batch, self.options
    text, mask = text_condition(batch, self.text_encoder, self.text_params)
    low = to_float(batch["low_res"]) if self.stage.super_res else None
    images = self._sampler(
      ema_params,
      key,
      text,
      mask,
      steps=s.steps,
      sampler=s.sampler,
      guidance=s.guidance,
      threshold=s.threshold,
      low_res=low,
      aug_level=s.aug_level,
      size=self.stage.image_size,
    )
    rows = [to_uint8(images)]
    if self.stage.super_res:
      rows = [to_uint8(bicubic_resize(low, self.stage.image_size)), rows[0], batch["image"]]
    stacked = np.stack([np.asarray(r) for r in rows], axis=1).reshape(-1, *rows[0].shape[1:])
    return grid(stacked, columns=len(rows) if self.stage.super_res else None)
