"""Diffusion math as pure functions over log-SNR: schedules, forward process, predictions, losses,
guidance, thresholding, noise-conditioning augmentation and samplers."""

from imagen_jax.diffusion import rng
from imagen_jax.diffusion.augmentation import noise_augment
from imagen_jax.diffusion.editing import Edit
from imagen_jax.diffusion.guidance import combine_guidance, guided_model
from imagen_jax.diffusion.losses import diffusion_loss
from imagen_jax.diffusion.predictions import (
  OBJECTIVES,
  predict_eps_from_v,
  predict_eps_from_x,
  predict_v_from_x_and_eps,
  predict_x_from_eps,
  predict_x_from_v,
  q_sample,
  x_and_eps_from_prediction,
)
from imagen_jax.diffusion.samplers import SAMPLERS, sample, time_grid
from imagen_jax.diffusion.schedules import (
  CosineSchedule,
  LinearSchedule,
  Schedule,
  ShiftedSchedule,
  alpha_sigma_from_logsnr,
  get_schedule,
)
from imagen_jax.diffusion.thresholding import (
  THRESHOLDS,
  dynamic_threshold,
  static_threshold,
  threshold,
)

__all__ = [
  "OBJECTIVES",
  "SAMPLERS",
  "THRESHOLDS",
  "CosineSchedule",
  "Edit",
  "LinearSchedule",
  "Schedule",
  "ShiftedSchedule",
  "alpha_sigma_from_logsnr",
  "combine_guidance",
  "diffusion_loss",
  "dynamic_threshold",
  "get_schedule",
  "guided_model",
  "noise_augment",
  "predict_eps_from_v",
  "predict_eps_from_x",
  "predict_v_from_x_and_eps",
  "predict_x_from_eps",
  "predict_x_from_v",
  "q_sample",
  "rng",
  "sample",
  "static_threshold",
  "threshold",
  "time_grid",
  "x_and_eps_from_prediction",
]
