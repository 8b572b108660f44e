"""A stage's sampler, compiled by whoever owns the stage (a loaded stage of the cascade, a
training run for its sample grids): one jitted `Stage.sample` per set of static options (steps,
sampler, guided or not, threshold, size, progress), kept for the owner's life.

Everything that changes between calls (parameters, text, low-res image, key, guidance scale, aug
level) is an argument of the compiled function, so a stage compiles once per batch shape and
options and is reused across prompts, seeds and checkpoints.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from imagen_jax import hardware
from imagen_jax.models.stage import Stage


class StageSampler:
  """Samples one stage: `sampler(params, text, mask, key, steps=..., ...)` -> images [B, S, S, 3]
  in [-1, 1] (the arguments of Stage.sample; an imported stage, pretrained.IFStage, has the
  same)."""

  def __init__(self, stage: Stage):
    self.stage = stage
    self._compiled: dict[tuple, object] = {}
    self._bar = None  # the progress bar of the call in flight

  def _step_done(self, step) -> None:
    if self._bar is not None:
      self._bar.update(1)

  def _function(self, steps: int, sampler: str, guided: bool, threshold: str, size, progress: bool):
    options = (steps, sampler, guided, threshold, size, progress)
    if options not in self._compiled:
      self._compiled[options] = jax.jit(
        functools.partial(
          self.stage.sample,
          steps=steps,
          sampler=sampler,
          guided=guided,
          threshold=threshold,
          size=size,
          progress=self._step_done if progress else None,
        ),
        compiler_options=hardware.compiler_options("sample"),
      )
    return self._compiled[options]

  def __call__(
    self,
    params,
    text,
    mask,
    key,
    *,
    steps: int,
    sampler: str = "ddpm",
    guidance: float = 1.0,
    threshold: str = "dynamic",
    low_res=None,
    aug_level: float = 0.0,
    size: int | None = None,
    progress_bar=None,
    null_text=None,
    null_mask=None,
  ):
    """Images [B, size, size, 3] in [-1, 1]. Guidance w = 1 is the plain conditional model (one
    U-Net call per step); other values make one call on a doubled batch, whose unconditional
    half reads null_text and null_mask (default: the stage's null text). `progress_bar` (tqdm)
    advances by one per step."""
    guided = float(guidance) != 1.0
    fn = self._function(int(steps), sampler, guided, threshold, size, progress_bar is not None)
    self._bar = progress_bar
    try:
      images = fn(
        params,
        text,
        mask,
        key,
        guidance=jnp.float32(guidance),
        low_res=low_res,
        aug_level=jnp.float32(aug_level),
        null_text=null_text,
        null_mask=null_mask,
      )
      if progress_bar is not None:
        images.block_until_ready()  # the bar's steps arrive while the computation runs
      return images
    finally:
      self._bar = None
