"""One stage of the cascade as training and sampling both see it: the U-Net, the noise schedule,
how the low-res conditioning image is made, and its sampler as a pure function.

Images inside are float in [-1, 1]; imagen_jax.images converts at the edges.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax import diffusion, hardware
from imagen_jax.images import bicubic_resize
from imagen_jax.models.unets import abstract_unet_params, build_unet, unet_inputs


def compute_dtype(name: str):
  if name == "auto":
    return hardware.default_compute_dtype()
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stage built from its config: `model`, `schedule`, `super_res`, sizes and options."""

  model: nn.Module
  schedule: diffusion.Schedule
  super_res: bool
  image_size: int  # training resolution
  low_res_size: int  # SR: training resolution of the input (0 for the base)
  output_size: int  # resolution produced in the cascade
  factor: int  # output / input resolution (1 for the base)
  text_len: int
  text_dim: int
  objective: str

  @classmethod
  def from_config(cls, config, *, dtype=None) -> Stage:
    if dtype is None:
      dtype = compute_dtype(config.train.compute_dtype)
    sr = config.stage == "sr"
    return cls(
      model=build_unet(config.unet, super_res=sr, dtype=dtype),
      schedule=diffusion.get_schedule(
        config.diffusion.schedule, shift=config.diffusion.get("logsnr_shift", 0.0)
      ),
      super_res=sr,
      image_size=config.image_size,
      low_res_size=config.low_res_size if sr else 0,
      output_size=config.sample_size or config.image_size,
      factor=config.image_size // config.low_res_size if sr else 1,
      text_len=config.text.max_length,
      text_dim=config.text.dim,
      objective=config.diffusion.objective,
    )

  def abstract_params(self):
    """Boxed ShapeDtypeStructs of the parameters (for shardings; nothing allocated)."""
    return abstract_unet_params(
      self.model, self.image_size, self.text_len, self.text_dim, self.super_res
    )

  def init_params(self, key):
    """Boxed parameters (nn.LogicallyPartitioned leaves)."""
    args = unet_inputs(1, self.image_size, self.text_len, self.text_dim, self.super_res)
    zeros = [None if a is None else jnp.zeros(a.shape, a.dtype) for a in args]
    return self.model.init(key, *zeros)["params"]

  def cond_image(self, low_res, *, size: int, aug_level, key):
    """The SR conditioning: low_res [B, h, w, 3] in [-1, 1], upsampled to size x size and
    noise-augmented at aug_level (scalar or [B]); returns (image, aug_level [B])."""
    return diffusion.noise_augment(
      bicubic_resize(low_res, size), aug_level=aug_level, key=key, schedule=self.schedule
    )

  def apply(
    self, params, z, t, text, text_mask, cond_image=None, aug_level=None, *, train=False, rngs=None
  ):
    """The model's prediction (of `objective`) [B, H, W, 3], float32."""
    return self.model.apply(
      {"params": params}, z, t, text, text_mask, cond_image, aug_level, train=train, rngs=rngs
    )

  def sample(
    self,
    params,
    key,
    text,
    mask,
    *,
    steps: int,
    sampler: str = "ddpm",
    guided: bool = False,
    guidance=1.0,
    threshold: str = "dynamic",
    low_res=None,
    aug_level=0.0,
    size: int | None = None,
    progress=None,
    null_text=None,
    null_mask=None,
    edit=None,
  ):
    """Images [B, size, size, 3] in [-1, 1]: the stage's sampler as a pure function, to call
    inside your own `jax.jit` (or shard_map) with the keyword options static except guidance,
    aug_level, low_res and the null text (models.StageSampler does so for the package).

    `key` is one PRNG key or keys [B], one per example (then an example's image depends on its
    own key alone, whatever else is in the batch). text [B, L, D] and mask [B, L] condition it;
    `edit` (diffusion.Edit, at this stage's size) edits a source picture (image-to-image,
    inpainting); the unconditional half of guidance reads
    null_text and null_mask (default: zeros with an empty mask, the null text of training);
    SR stages take low_res [B, h, w, 3] in [-1, 1], upsampled to `size` (default: the stage's
    output size, or low-res size x factor) and noise-augmented at aug_level.
    `guided` runs classifier-free guidance at scale `guidance` with the conditional and
    unconditional halves in one call on a doubled batch; unguided is one plain call per step.
    """
    if self.super_res:
      if low_res is None:
        raise ValueError("A super-resolution stage needs low_res images to upsample.")
      size = size or low_res.shape[1] * self.factor
    else:
      size = size or self.output_size
    key_aug, key_sample = diffusion.rng.split(key)
    cond = {"text": text, "mask": mask}
    if self.super_res:
      cond["cond_image"], cond["aug"] = self.cond_image(
        low_res, size=size, aug_level=aug_level, key=key_aug
      )

    def call(z, t, c):
      return self.apply(params, z, t, c["text"], c["mask"], c.get("cond_image"), c.get("aug"))

    if guided:
      null = {
        **cond,
        "text": jnp.zeros_like(text) if null_text is None else null_text,
        "mask": jnp.zeros_like(mask) if null_mask is None else null_mask,
      }
      guided_call = diffusion.guided_model(call, guidance)
      model_fn = lambda z, t: guided_call(z, t, (cond, null))
    else:
      model_fn = lambda z, t: call(z, t, cond)
    return diffusion.sample(
      model_fn,
      (text.shape[0], size, size, 3),
      key_sample,
      schedule=self.schedule,
      steps=steps,
      sampler=sampler,
      threshold=threshold,
      objective=self.objective,
      edit=edit,
      progress=progress,
    )
