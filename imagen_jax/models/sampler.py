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
  """Samples one stage: `sampler(params, key, text, mask, steps=..., ...)` -> images [B, S, S, 3]
  in [-1, 1] (the arguments of Stage.sample; an imported stage, pretrained.IFStage, has the
  same)."""

  def __init__(self, stage: Stage):
    self.stage = stage
    self._compiled: dict[tuple, object] = {}
    self._on_step = None  # the host callback of the call in flight

  def _step_done(self, step) -> None:
    if self._on_step is not None:
      self._on_step(int(step))

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
    key,
    text,
    mask,
    *,
    steps: int,
    sampler: str = "ddpm",
    guidance: float = 1.0,
    threshold: str = "dynamic",
    low_res=None,
    aug_level: float = 0.0,
    size: int | None = None,
    on_step=None,
    null_text=None,
    null_mask=None,
    edit=None,
  ):
    """Images [B, size, size, 3] in [-1, 1]. Guidance w = 1 is the plain conditional model (one
    U-Net call per step); other values make one call on a doubled batch, whose unconditional
    half reads null_text and null_mask (default: the stage's null text); `edit` is a
    diffusion.Edit (its strength and resample are compile-time options). `on_step(step)` is
    called on the host after each step (0-based) while the computation runs."""
    guided = float(guidance) != 1.0
    fn = self._function(int(steps), sampler, guided, threshold, size, on_step is not None)
    self._on_step = on_step
    try:
      images = fn(
        params,
        key,
        text,
        mask,
        guidance=jnp.float32(guidance),
        low_res=low_res,
        aug_level=jnp.float32(aug_level),
        null_text=null_text,
        null_mask=null_mask,
        edit=edit,
      )
      if on_step is not None:
        images.block_until_ready()  # the steps are reported while the computation runs
      return images
    finally:
      self._on_step = None
