"""This package's own kind of stage, as training and sampling both see it: the U-Net, the noise
schedule (continuous time, log-SNR), how the low-res conditioning image is made, and its sampler
as a pure function. It implements stages.Stage.

Images inside are float in [-1, 1]; imagen_jax.images converts at the edges.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax import diffusion, hardware
from imagen_jax.diffusion import rng
from imagen_jax.errors import ConfigError, InputError
from imagen_jax.images import bicubic_resize
from imagen_jax.models.unet_factory import abstract_unet_params, build_unet, unet_inputs
from imagen_jax.stages.inputs import StageInputs
from imagen_jax.stages.options import SampleOptions

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """The dtype of a config's `train.compute_dtype` ("auto": the hardware's default)."""
  if name == "auto":
    return hardware.default_compute_dtype()
  if name not in COMPUTE_DTYPES:
    raise ConfigError(
      f"Unknown compute_dtype {name!r}; choose auto or one of {list(COMPUTE_DTYPES)}."
    )
  return COMPUTE_DTYPES[name]


@dataclasses.dataclass(frozen=True, eq=False)  # compiled per instance: hashed by identity
class ImagenStage:
  """A stage built from its config: `model`, `schedule`, `super_res`, sizes and objective."""

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
  def from_config(cls, config, *, dtype=None) -> ImagenStage:
    """The stage of a stage config (configuration.load_config); `dtype` overrides the compute
    dtype of config.train.compute_dtype."""
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

  def abstract_inputs(self, batch: int = 1):
    """ShapeDtypeStructs of a U-Net call on `batch` examples at the training resolution:
    (z, t, text, text_mask, cond_image or None, aug_level or None)."""
    return unet_inputs(
      batch, size=self.image_size, text_len=self.text_len, text_dim=self.text_dim,
      super_res=self.super_res,
    )  # fmt: skip

  def abstract_params(self):
    """Boxed ShapeDtypeStructs of the parameters (for shardings; nothing allocated)."""
    return abstract_unet_params(
      self.model,
      size=self.image_size,
      text_len=self.text_len,
      text_dim=self.text_dim,
      super_res=self.super_res,
    )

  def init_params(self, key):
    """Boxed parameters (nn.LogicallyPartitioned leaves)."""
    zeros = [None if a is None else jnp.zeros(a.shape, a.dtype) for a in self.abstract_inputs()]
    return self.model.init(key, *zeros)["params"]

  def apply(
    self, params, z, t, text, text_mask, cond_image=None, aug_level=None, *, train=False, rngs=None
  ):
    """The model's prediction (of `objective`) [B, H, W, 3], float32."""
    return self.model.apply(
      {"params": params}, z, t, text, text_mask, cond_image, aug_level, train=train, rngs=rngs
    )

  def check_options(self, options: SampleOptions) -> None:
    """The augmentation level is a time of the schedule, in [0, 1]."""
    if options.aug_level > 1.0:
      raise InputError(f"aug_level must be in [0, 1] for this stage, got {options.aug_level}.")

  def sample(self, params, key, inputs: StageInputs, *, options: SampleOptions, progress=None):
    """Images [B, S, S, 3] in [-1, 1]: stages.Stage.sample. The null text defaults to zeros
    with an empty mask (training's); an SR stage upsamples low_res bicubically to S (default:
    the stage's output size, or the input's size x factor) and noise-augments it."""
    size = self._size(options, inputs.low_res)
    key_aug, key_sample = rng.split(key)
    text, mask = inputs.text, inputs.mask
    cond = {"text": text, "mask": mask}
    upsampled = None
    if self.super_res:
      upsampled = bicubic_resize(inputs.low_res, size)
      cond["cond_image"], cond["aug"] = diffusion.noise_augment(
        upsampled, aug_level=options.aug_level, key=key_aug, schedule=self.schedule
      )

    def call(z, t, c):
      return self.apply(params, z, t, c["text"], c["mask"], c.get("cond_image"), c.get("aug"))

    if options.guided:
      null = {
        **cond,
        "text": jnp.zeros_like(text) if inputs.null_text is None else inputs.null_text,
        "mask": jnp.zeros_like(mask) if inputs.null_mask is None else inputs.null_mask,
      }
      guided_call = diffusion.guided_model(call, options.guidance)
      model_fn = lambda z, t: guided_call(z, t, (cond, null))
    else:
      model_fn = lambda z, t: call(z, t, cond)
    return diffusion.sample(
      model_fn,
      (text.shape[0], size, size, 3),
      key_sample,
      schedule=self.schedule,
      steps=options.steps,
      sampler=options.sampler,
      threshold=options.threshold,
      objective=self.objective,
      edit=options.edit(inputs.source, inputs.keep, upsampled=upsampled),
      progress=progress,
    )

  def _size(self, options: SampleOptions, low_res) -> int:
    if not self.super_res:
      return options.size or self.output_size
    if low_res is None:
      raise InputError("A super-resolution stage needs low_res images to upsample.")
    return options.size or low_res.shape[1] * self.factor
