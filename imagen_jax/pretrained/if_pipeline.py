"""DeepFloyd IF's pipelines as diffusers saves them, read into IF stages and IF's text encoder.

A pipeline folder holds `model_index.json`, `unet/`, `scheduler/`, and for stage I
`text_encoder/` and `tokenizer/` (T5 v1.1 XXL), for stage II `image_noising_scheduler/`.
A hub id ("DeepFloyd/IF-I-XL-v1.0") is downloaded on request, only the parts the cascade reads,
in the fp16 variant by default (half the download; compute runs in the chosen dtype).
"""

from __future__ import annotations

import json
import os
import pathlib

import jax.numpy as jnp
import numpy as np

from imagen_jax import hub
from imagen_jax.diffusion import discrete
from imagen_jax.errors import InputError, MissingPath
from imagen_jax.models import t5_weights
from imagen_jax.pretrained.if_stage import IFStage
from imagen_jax.pretrained.unet import load_unet
from imagen_jax.text import TextEncoder
from imagen_jax.text.tokenizers import load_tokenizer

TEXT_LENGTH = 77  # IF's tokenizer length
SR_FACTOR = 4  # IF-II: 64 -> 256
# IF's defaults (diffusers' IFPipeline / IFSuperResolutionPipeline __call__).
STAGE_I_DEFAULTS = {"steps": 100, "guidance": 7.0, "sampler": "ddpm", "threshold": "dynamic"}
STAGE_II_DEFAULTS = {"steps": 50, "guidance": 4.0, "sampler": "ddpm", "threshold": "dynamic"}
NOISE_LEVEL = 250


def _read_json(path: pathlib.Path) -> dict:
  if not path.exists():
    raise MissingPath(f"{path} is missing: not a diffusers DeepFloyd IF pipeline folder.")
  return json.loads(path.read_text())


def scheduler_alpha_bar(config: dict, where: str) -> np.ndarray:
  """alpha_bar [T] of a saved DDPMScheduler config; refuses what IF's schedules do not use."""
  if config.get("_class_name", "DDPMScheduler") != "DDPMScheduler":
    raise InputError(f"{where}: {config['_class_name']} is not supported (IF uses DDPMScheduler).")
  if config.get("trained_betas") is not None or config.get("rescale_betas_zero_snr"):
    raise InputError(f"{where}: trained_betas and rescale_betas_zero_snr are not supported.")
  beta = discrete.betas(
    int(config.get("num_train_timesteps", 1000)),
    config.get("beta_schedule", "linear"),
    start=float(config.get("beta_start", 1e-4)),
    end=float(config.get("beta_end", 0.02)),
  )
  return discrete.alphas_cumprod(beta)


def _sampling_options(config: dict, where: str) -> dict:
  wrong = {
    k: config.get(k)
    for k, ok in (("prediction_type", "epsilon"), ("variance_type", "learned_range"))
    if config.get(k, ok) != ok
  }
  if wrong:
    raise InputError(f"{where}: {wrong} not supported (IF predicts eps with a learned range).")
  return {
    "max_value": float(config.get("sample_max_value", 1.0)) if config.get("thresholding") else 1.0,
    "percentile": 100.0 * float(config.get("dynamic_thresholding_ratio", 0.995)),
    "spacing": config.get("timestep_spacing", "leading"),
    "steps_offset": int(config.get("steps_offset", 0)),
  }


def load_if_stage(directory, *, dtype=jnp.float32, param_dtype=None, mesh=None, variant=None):
  """(IFStage, U-Net parameters, sampling defaults) of a saved IF pipeline folder."""
  directory = pathlib.Path(directory)
  index = _read_json(directory / "model_index.json")
  unet = load_unet(
    directory / "unet", dtype=dtype, param_dtype=param_dtype, mesh=mesh, variant=variant
  )
  where = str(directory / "scheduler")
  scheduler = _read_json(directory / "scheduler" / "scheduler_config.json")
  super_res = "image_noising_scheduler" in index or unet.in_channels == 6
  noise_alpha_bar = None
  if super_res:
    noising = directory / "image_noising_scheduler" / "scheduler_config.json"
    noise_alpha_bar = scheduler_alpha_bar(_read_json(noising), str(noising))
  size = int(unet.config.get("sample_size") or (256 if super_res else 64))
  stage = IFStage(
    model=unet.module,
    alpha_bar=scheduler_alpha_bar(scheduler, where),
    noise_alpha_bar=noise_alpha_bar,
    output_size=size,
    factor=SR_FACTOR if super_res else 1,
    text_len=TEXT_LENGTH,
    text_dim=int(unet.config.get("encoder_hid_dim") or unet.config["cross_attention_dim"]),
    **_sampling_options(scheduler, where),
  )
  defaults = dict(STAGE_II_DEFAULTS if super_res else STAGE_I_DEFAULTS)
  defaults["aug_level"] = float(NOISE_LEVEL if super_res else 0)
  return stage, unet.params, defaults


def load_if_text_encoder(directory, *, dtype=None, param_dtype=jnp.float32, mesh=None):
  """IF's T5 encoder and tokenizer from a stage I pipeline folder, encoding as IF does."""
  directory = pathlib.Path(directory)
  folder = directory / "text_encoder"
  if not folder.is_dir():
    raise MissingPath(
      f"{directory} has no text_encoder/: the first stage of an IF cascade must be an IF-I "
      "pipeline (it brings the T5 encoder that all stages share)."
    )
  config = t5_weights.read_config(folder)
  params = t5_weights.load_params(folder, config, param_dtype=param_dtype, mesh=mesh)
  tokenizer = load_tokenizer(str(directory / "tokenizer"))
  return TextEncoder(
    config,
    params,
    tokenizer,
    max_length=TEXT_LENGTH,
    dtype=dtype,
    name=str(folder),
    mesh=mesh,
    if_style=True,
  )


def hub_patterns(variant: str | None, *, text_encoder: bool) -> list[str]:
  """The files of an IF pipeline repository that the cascade reads."""
  suffix = f".{variant}" if variant else ""
  patterns = [
    "model_index.json",
    "unet/*.json",
    f"unet/diffusion_pytorch_model{suffix}.safetensors",
    f"unet/diffusion_pytorch_model{suffix}-*.safetensors",
    "scheduler/*.json",
    "image_noising_scheduler/*.json",
  ]
  if text_encoder:
    patterns += [
      "tokenizer/*",
      "text_encoder/*.json",
      f"text_encoder/model{suffix}.safetensors",
      f"text_encoder/model{suffix}-*.safetensors",
    ]
  return patterns


def pipeline_directory(
  name: str, *, variant: str | None = "fp16", text_encoder: bool
) -> pathlib.Path:
  """A local pipeline folder, or the hub snapshot of `name` (downloaded on request)."""
  path = pathlib.Path(os.path.expanduser(name))
  if path.is_dir():
    if not (path / "model_index.json").exists():
      raise MissingPath(
        f"{path} has no model_index.json: pass a diffusers DeepFloyd IF pipeline folder "
        "(model_index.json, unet/, scheduler/, ...) or a hub id such as DeepFloyd/IF-I-XL-v1.0."
      )
    return path
  if not hub.is_repo_id(name):
    raise MissingPath(f"{name} is neither a pipeline folder nor a hub id (owner/name).")
  return hub.snapshot(name, hub_patterns(variant, text_encoder=text_encoder))
