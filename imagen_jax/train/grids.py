"""Sample grids during training: the EMA model sampled on fixed prompts (a base stage, from
config.sample.prompts) or a fixed batch of the data, as one image for TensorBoard with its
captions. For SR stages each row shows the upsampled low-res input, the sample and the target."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.images import bicubic_resize, grid, to_float, to_uint8
from imagen_jax.stages import SampleOptions, StageInputs, compiled
from imagen_jax.train.step import text_condition

EXAMPLES = 8


class GridSampler:
  """Samples `batch` (a local batch of EXAMPLES examples) with the EMA parameters; its sampler is
  compiled on the first grid and reused for the run."""

  def __init__(self, stage, config, batch: dict, text_encoder=None, text_params=None, captions=()):
    self.stage = stage
    self.options = SampleOptions.from_config(config.sample, size=stage.image_size)
    self.captions = list(captions)
    batch = {k: jnp.asarray(v) for k, v in batch.items() if k != "index"}
    self.target = np.asarray(batch["image"]) if stage.super_res else None  # an SR grid's row
    # The batch is fixed, so its text encoding and low-res input are computed once, in one
    # program (run op by op, the encoder alone compiled some eighty small ones).
    self.text, self.mask, self.low_res, self.upsampled = jax.jit(
      functools.partial(_fixed_inputs, stage=stage, text_encoder=text_encoder)
    )(batch, text_params)
    self._to_uint8 = jax.jit(to_uint8)

  def caption_text(self) -> str:
    """The grid's captions, one line per picture (per row for SR stages), in grid order."""
    return "\n\n".join(f"{i}. {c}" for i, c in enumerate(self.captions, 1))

  def __call__(self, ema_params, key) -> np.ndarray:
    """uint8 [H, W, 3]: the grid of samples for the fixed batch."""
    inputs = StageInputs(self.text, self.mask, low_res=self.low_res)
    images = compiled.sample(self.stage, ema_params, key, inputs, options=self.options)
    rows = [np.asarray(self._to_uint8(images))]
    if self.stage.super_res:
      rows = [np.asarray(self.upsampled), rows[0], self.target]
    stacked = np.stack(rows, axis=1).reshape(-1, *rows[0].shape[1:])
    return grid(stacked, columns=len(rows) if self.stage.super_res else None)


def _fixed_inputs(batch, text_params, *, stage, text_encoder):
  """(text [B, L, D], mask [B, L], low-res input [B, h, w, 3] in [-1, 1] or None, the low-res
  input upsampled to the stage's size as uint8 or None) of a grid's batch."""
  text, mask = text_condition(batch, text_encoder, text_params)
  if not stage.super_res:
    return text, mask, None, None
  low = to_float(batch["low_res"])
  return text, mask, low, to_uint8(bicubic_resize(low, stage.image_size))
