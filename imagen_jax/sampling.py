"""Sampling one stage: the stage's U-Net behind `diffusion.sample`, with classifier-free guidance
in one batched call per step.

Everything that changes between calls (parameters, text, low-res image, guidance scale) is an
argument of the compiled sampler, so a stage is compiled once per (batch, steps, sampler, ...)
and reused across prompts, seeds and checkpoints.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from imagen_jax import diffusion
from imagen_jax.stage import Stage

_MODEL_FNS: dict = {}


def _model_fn(stage: Stage, guided: bool):
  """model_fn(z, t, cond) for diffusion.sample; one function object per (stage, guided), so the
  jitted sampler's cache is hit on every later call."""
  key = (id(stage), guided)
  if key in _MODEL_FNS and _MODEL_FNS[key][0] is stage:
    return _MODEL_FNS[key][1]

  def plain(z, t, cond):
    return stage.apply(
      cond["params"], z, t, cond["text"], cond["mask"], cond.get("cond_image"), cond.get("aug")
    )

  def with_guidance(z, t, cond):
    # The conditional and unconditional halves in one call on a doubled batch.
    def call(z2, t2, c):
      return stage.apply(
        cond["params"], z2, t2, c["text"], c["mask"], c.get("cond_image"), c.get("aug")
      )

    halves = {k: cond[k] for k in ("text", "mask", "cond_image", "aug") if k in cond}
    null = {**halves, "text": jnp.zeros_like(cond["text"]), "mask": jnp.zeros_like(cond["mask"])}
    return diffusion.guided_model(call, cond["guidance"])(z, t, (halves, null))

  fn = with_guidance if guided else plain
  _MODEL_FNS[key] = (stage, fn)
  return fn


def sample_stage(
  stage: Stage,
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
  progress=None,
):
  """Images [B, size, size, 3] in [-1, 1] from one stage.

  text [B, L, D] and mask [B, L] condition it (the null text is zeros with an empty mask);
  SR stages take low_res [B, h, w, 3] in [-1, 1], upsampled to `size` (default: the stage's
  output size, or low-res size x factor) and noise-augmented at aug_level.
  guidance w = 1 is the plain conditional model (one U-Net call per step); other values make one
  call on a doubled batch.
  """
  batch = text.shape[0]
  if stage.super_res:
    if low_res is None:
      raise ValueError("A super-resolution stage needs low_res images to upsample.")
    size = size or low_res.shape[1] * stage.factor
  else:
    size = size or stage.output_size
  key_aug, key_sample = jax.random.split(key)
  cond = {"params": params, "text": text, "mask": mask}
  if stage.super_res:
    cond["cond_image"], cond["aug"] = stage.cond_image(
      low_res, size=size, aug_level=aug_level, key=key_aug
    )
  guided = float(guidance) != 1.0
  if guided:
    cond["guidance"] = jnp.float32(guidance)
  return diffusion.sample(
    _model_fn(stage, guided),
    (batch, size, size, 3),
    key_sample,
    schedule=stage.schedule,
    steps=steps,
    sampler=sampler,
    cond=cond,
    threshold=threshold,
    objective=stage.objective,
    progress=progress,
  )
