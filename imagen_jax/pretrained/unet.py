"""`load_unet`: a diffusers UNet2DConditionModel of DeepFloyd IF's kind as a JAX function.

unet = load_unet("IF-I-XL-v1.0/unet")            # config.json + safetensors weights
out = unet(sample, timesteps, text)              # NHWC in, NHWC out (eps and variance)
"""

from __future__ import annotations

import dataclasses
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.errors import InputError, MissingPath
from imagen_jax.models.adm_unet import UNet
from imagen_jax.models.unet_factory import count_params
from imagen_jax.models.weight_loading import load_mapped
from imagen_jax.pretrained import unet_config, unet_weights


def abstract_inputs(module: UNet, *, in_channels: int, text_dim: int, size: int, text_len: int):
  """ShapeDtypeStructs of one call on one image: (sample, timesteps, text, None, None, class
  label or None), the U-Net's positional arguments."""
  label = jax.ShapeDtypeStruct((1,), jnp.int32) if module.if_conditioning.class_label else None
  return (
    jax.ShapeDtypeStruct((1, size, size, in_channels), jnp.float32),
    jax.ShapeDtypeStruct((1,), jnp.int32),
    jax.ShapeDtypeStruct((1, text_len, text_dim), jnp.float32),
    None,
    None,
    label,
  )


def abstract_params(module: UNet, in_channels: int, text_dim: int, param_dtype=jnp.float32):
  """Boxed ShapeDtypeStructs of the U-Net's parameters in `param_dtype` (nothing allocated)."""
  args = abstract_inputs(
    module, in_channels=in_channels, text_dim=text_dim, size=module.total_stride, text_len=4
  )
  boxed = jax.eval_shape(lambda *a: module.init(jax.random.key(0), *a), *args)["params"]
  return jax.tree.map(
    lambda b: b.replace_boxed(jax.ShapeDtypeStruct(b.unbox().shape, param_dtype)),
    boxed,
    is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned),
  )


def text_dim(config: dict) -> int:
  return int(config.get("encoder_hid_dim") or config.get("cross_attention_dim"))


@dataclasses.dataclass
class PretrainedUNet:
  """An imported U-Net. Calling it runs the U-Net, jitted once per input shape.

  Made by load_unet.

  Attributes:
    module: the Flax U-Net (models.adm_unet.UNet) that computes what diffusers' does.
    params: its parameters.
    config: the diffusers config.json, as a dict.
    in_channels: the channels of `sample` (3 for IF stage I, 6 for stage II: noise and
      upsampled input).
    out_channels: the channels of the output (IF: 6, eps then the variance values).
    num_params: the parameter count.
  """

  module: UNet
  params: dict
  config: dict

  def __post_init__(self):
    self._apply = jax.jit(self.apply)

  @property
  def in_channels(self) -> int:
    return int(self.config["in_channels"])

  @property
  def out_channels(self) -> int:
    return int(self.config["out_channels"])

  @property
  def num_params(self) -> int:
    return count_params(self.params)

  def apply(self, params, sample, timesteps, encoder_hidden_states, class_labels=None):
    """The pure function behind __call__ (for a caller's own jit): same arguments, with params."""
    batch = sample.shape[0]
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (batch,))
    if class_labels is not None:
      class_labels = jnp.broadcast_to(jnp.asarray(class_labels), (batch,))
    return self.module.apply(
      {"params": params}, sample, timesteps, encoder_hidden_states, None, None, class_labels
    )

  def __call__(self, sample, timesteps, encoder_hidden_states, class_labels=None):
    """Runs the U-Net on one batch, as diffusers' UNet2DConditionModel does, in NHWC.

    Args:
      sample: the noisy images [B, H, W, in_channels], float.
      timesteps: int [B] (or a scalar) in [0, 1000).
      encoder_hidden_states: [B, T, D], the raw T5 states (no mask, as IF calls it).
      class_labels: int [B] or a scalar, the noise level of stage II (needed there, unused by
        stage I).

    Returns:
      [B, H, W, out_channels] float32 (IF: eps, then the learned-range variance values).

    Raises:
      InputError: `sample` not [B, H, W, in_channels], encoder_hidden_states not [B, T, D] of
        the config's text width, or no class_labels for a U-Net that needs them.
    """
    if sample.ndim != 4 or sample.shape[-1] != self.in_channels:
      raise InputError(
        f"sample must be NHWC with {self.in_channels} channels, got shape {sample.shape}."
      )
    if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[-1] != text_dim(self.config):
      raise InputError(
        f"encoder_hidden_states must be [B, T, {text_dim(self.config)}], "
        f"got {encoder_hidden_states.shape}."
      )
    if self.module.if_conditioning.class_label and class_labels is None:
      raise InputError("This U-Net (IF stage II) needs class_labels: the noise level, e.g. 250.")
    return self._apply(self.params, sample, timesteps, encoder_hidden_states, class_labels)


def unet_directory(path) -> pathlib.Path:
  """A U-Net folder, or the `unet/` folder of a saved pipeline."""
  path = pathlib.Path(path).expanduser()
  if not (path / "config.json").exists() and (path / "unet" / "config.json").exists():
    return path / "unet"
  if not path.is_dir():
    raise MissingPath(f"{path} is not a folder (a diffusers U-Net or pipeline folder).")
  return path


def load_unet(
  path, *, dtype=jnp.float32, param_dtype=None, mesh=None, variant: str | None = None
) -> PretrainedUNet:
  """Loads a diffusers UNet2DConditionModel of DeepFloyd IF's kind from a local folder.

  Args:
    path: a U-Net folder (config.json and safetensors weights: single, sharded or the `variant`
      files), or a saved pipeline folder, whose unet/ is found.
    dtype: the compute dtype.
    param_dtype: the dtype the parameters are stored in (default: dtype).
    mesh: each tensor is placed sharded over it as it is read (parallel.LOGICAL_AXIS_RULES),
      so no host ever holds the whole model (None: on the default device).
    variant: which weight files to read, e.g. "fp16" (None: float32, else fp16, whichever is
      there).

  Returns:
    A PretrainedUNet.

  Raises:
    MissingPath: `path` is not a folder, or has no config.json or no safetensors weights.
    InputError: a config with values this importer does not compute (UnsupportedConfig).
    DataError: weights that do not fit the config (missing, unexpected or misshapen tensors).
  """
  directory = unet_directory(path)
  config = unet_config.read_config(directory)
  module = unet_config.unet_from_config(config, dtype=dtype, source=str(directory / "config.json"))
  in_channels = int(config["in_channels"])
  boxed = abstract_params(module, in_channels, text_dim(config), param_dtype or dtype)
  params = load_mapped(
    unet_weights.open_weights(directory, variant),
    boxed,
    unet_weights.name_map(boxed, len(module.levels)),
    description=f"The weights in {directory} do not fit its config.json",
    mesh=mesh,
  )
  return PretrainedUNet(module, params, config)
