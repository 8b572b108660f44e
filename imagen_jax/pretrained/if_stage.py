"""A DeepFloyd IF stage sampled as IF samples it; it implements stages.Stage, as this package's
own stages do.

IF's semantics (diffusers' IFPipeline and IFSuperResolutionPipeline): a 1000-step discrete
schedule; the U-Net predicts eps and a learned-range variance value; classifier-free guidance
mixes eps only (the variance comes from the text branch); the predicted image is dynamically
thresholded (a percentile of |x0| per sample, the scale clamped to [1, sample_max_value]).
Stage II upsamples its input bilinearly (aligned corners), noises it to `noise_level` with a
separate schedule, and reads the level as its class label.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from imagen_jax import diffusion
from imagen_jax.diffusion import discrete, rng
from imagen_jax.errors import InputError
from imagen_jax.images import bilinear_resize_align_corners
from imagen_jax.models.adm_unet import UNet
from imagen_jax.stages import SampleOptions, StageInputs


@dataclasses.dataclass(frozen=True, eq=False)
class IFStage:
  """An IF U-Net with its schedule and sampling options (read from the saved pipeline)."""

  model: UNet
  alpha_bar: np.ndarray  # [T] of the sampling schedule
  noise_alpha_bar: np.ndarray | None  # [T] of stage II's image noising schedule
  output_size: int
  factor: int  # output / input resolution (1 for stage I)
  text_len: int
  text_dim: int
  max_value: float  # the dynamic threshold's largest scale (sample_max_value)
  percentile: float  # of |x0|, 100 x dynamic_thresholding_ratio
  spacing: str = "leading"
  steps_offset: int = 0

  @property
  def super_res(self) -> bool:
    return self.noise_alpha_bar is not None

  def _eps_and_variance(self, params, x, t, *, text, cond, level, null_text, guidance):
    """(eps [B, H, W, 3], variance value [B, H, W, 3]) at int steps t [B]; guided when
    null_text is given."""
    batch = x.shape[0]
    if null_text is not None:
      x, t = jnp.concatenate([x, x]), jnp.concatenate([t, t])
      text = jnp.concatenate([text, null_text])
      if cond is not None:
        cond, level = jnp.concatenate([cond, cond]), jnp.concatenate([level, level])
    inputs = x if cond is None else jnp.concatenate([x, cond], axis=-1)
    out = self.model.apply({"params": params}, inputs, t, text, None, None, level)
    eps, value = out[:batch, ..., :3], out[:batch, ..., 3:]
    if null_text is not None:
      eps = diffusion.combine_guidance(eps, out[batch:, ..., :3], guidance)
    return eps, value

  def check_options(self, options: SampleOptions) -> None:
    """Stage II's noise level (aug_level) is a step of its noising schedule, in [0, T)."""
    if self.super_res and not options.aug_level < len(self.noise_alpha_bar):
      raise InputError(
        f"IF's noise level (aug_level) must be in [0, {len(self.noise_alpha_bar)}), "
        f"got {options.aug_level}."
      )

  def sample(self, params, key, inputs: StageInputs, *, options: SampleOptions, progress=None):
    """Images [B, S, S, 3] in [-1, 1]: stages.Stage.sample, with IF's meanings. `text` [B, L, D]
    is IF's (unmasked) T5 states and `null_text` the encoding of "" (needed when guided);
    options.aug_level is stage II's noise level (an integer step; IF's default 250). "ddpm" is
    IF's own sampler (the learned variance, on the scheduler's step spacing, "leading" for
    IF); "ddim" and "dpm++2m" run with eps alone on "trailing" steps, which start from step
    999: starting from pure noise at a leading spacing's first step (900 of 1000 for 10 steps)
    leaves the deterministic samplers off (tests/test_if_scheduler.py measures it)."""
    # IF's U-Nets attend to every token: the masks are not read.
    text, null_text = inputs.text, inputs.null_text
    if options.guided and null_text is None:
      raise InputError("Guided IF sampling needs null_text: the encoding of the empty prompt.")
    key_noise, key_sample = rng.split(key)
    size, cond, level, upsampled = self._stage_two_input(options, inputs.low_res, key_noise)
    null = null_text if options.guided else None
    num_train = len(self.alpha_bar)
    if options.sampler == "ddpm":
      steps_run = discrete.inference_steps(
        num_train, options.steps, self.spacing, self.steps_offset
      )
    else:
      steps_run = discrete.inference_steps(num_train, options.steps, "trailing")
    edit = options.edit(inputs.source, inputs.keep, upsampled=upsampled)
    if edit is not None and edit.strength < 1.0:
      steps_run = discrete.edit_steps(steps_run, edit.strength)
    max_value = 1.0 if options.threshold == "static" else self.max_value  # s = 1: clip to [-1, 1]
    batch = text.shape[0]

    def eps_and_variance(x, t):
      t = jnp.broadcast_to(t, (batch,)).astype(jnp.int32)
      return self._eps_and_variance(
        params, x, t, text=text, cond=cond, level=level, null_text=null, guidance=options.guidance
      )

    shape = (batch, size, size, 3)
    if options.sampler == "ddpm":
      percentile = None if options.threshold == "none" else self.percentile
      return discrete.sample(
        eps_and_variance, shape, key_sample, alpha_bar=self.alpha_bar, steps=steps_run,
        threshold_percentile=percentile, max_value=max_value, edit=edit, progress=progress,
      )  # fmt: skip
    schedule = discrete.Discrete(self.alpha_bar)
    return diffusion.sample(
      lambda z, t: eps_and_variance(z, schedule.step(t))[0], shape, key_sample,
      schedule=schedule, steps=len(steps_run), sampler=options.sampler,
      threshold=options.threshold, percentile=self.percentile, threshold_max=max_value,
      times=discrete.step_times(steps_run, num_train), edit=edit, progress=progress,
    )  # fmt: skip

  def _stage_two_input(self, options: SampleOptions, low_res, key):
    """(size, noised upsampled input or None, its level [B] or None, the upsampled input or
    None): stage II's conditioning at options.aug_level."""
    if not self.super_res:
      return options.size or self.output_size, None, None, None
    if low_res is None:
      raise InputError("IF's stage II needs low_res images to upsample.")
    size = options.size or low_res.shape[1] * self.factor
    up = bilinear_resize_align_corners(low_res, size)
    level = jnp.full((low_res.shape[0],), jnp.round(options.aug_level), jnp.int32)
    cond = discrete.add_noise(up, rng.normal(key, up.shape), level, self.noise_alpha_bar)
    return size, cond, level, up
