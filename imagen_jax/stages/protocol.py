"""What a stage of the cascade is, for everything that samples one: the `Stage` protocol.

Every kind of stage implements it: this package's own (stages.ImagenStage), DeepFloyd IF's
(pretrained.IFStage), and those that fine-tuning and distillation make. The cascade, the
training grids and the benchmarks see only this.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax

from imagen_jax.stages.inputs import StageInputs
from imagen_jax.stages.options import SampleOptions


@runtime_checkable
class Stage(Protocol):
  """A diffusion model of one resolution, with its schedule and sampler.

  Attributes:
    output_size: the resolution it produces in a cascade.
    factor: output / input resolution (1 for a base stage).
    text_len: the text length L its conditioning reads.
    text_dim: the text width D its conditioning reads.
    super_res: whether it super-resolves a low-res input (else it draws from text alone).
  """

  output_size: int
  factor: int
  text_len: int
  text_dim: int

  @property
  def super_res(self) -> bool: ...

  def check_options(self, options: SampleOptions) -> None:
    """Raises InputError for options this kind of stage cannot use (an augmentation level out
    of its range, ...)."""
    ...

  def sample(
    self, params, key: jax.Array, inputs: StageInputs, *, options: SampleOptions, progress=None
  ) -> jax.Array:
    """Images [B, S, S, 3] in [-1, 1], as a pure function (a lax.scan, no jit of its own).

    Args:
      params: the model's parameters.
      key: one PRNG key or keys [B] (one per example: an image then depends on its own key
        alone), typed or legacy.
      inputs: the text and, as the call needs, the low-res input, the null text and the
        editing source (StageInputs).
      options: how to sample; a pytree argument, so that inside jax.jit its static fields are
        compile-time constants and guidance and aug_level are traced.
      progress: told of every finished step (a host function of the step, or a
        diffusion.progress.Listener).

    Returns:
      float32 images [B, S, S, 3] in [-1, 1], S = options.size or the stage's size.
    """
    ...
