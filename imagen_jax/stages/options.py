"""How one stage samples, as one frozen, validated value: `SampleOptions`.

It is made (and checked) once where a call enters, then passed down whole; nothing below
re-checks or renames an option. It is a pytree whose leaves are the two options worth changing
without recompiling (the guidance scale and the augmentation level); the rest is its static
structure, so `jax.jit` compiles once per distinct (steps, sampler, ...) and reuses the program
for any guidance or level.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping

import jax

from imagen_jax import diffusion
from imagen_jax.errors import InputError

# The fields of a config's `sample` section that are options of every stage.
CONFIG_FIELDS = ("steps", "sampler", "guidance", "threshold", "aug_level")


@dataclasses.dataclass(frozen=True)
class SampleOptions:
  """One stage's sampling options.

  Attributes:
    steps: sampling steps on the full schedule (a positive whole number).
    sampler: "ddpm", "ddim" or "dpm++2m".
    guidance: the classifier-free guidance scale w >= 0 (1: none, one U-Net call per step;
      otherwise one call on a doubled batch).
    threshold: "none", "static" or "dynamic" thresholding of the predicted image.
    aug_level: the noise level of a super-resolution stage's low-res input (a stage's own scale:
      [0, 1] for this package's stages, a training step for DeepFloyd IF's).
    strength: in (0, 1]: the fraction of the schedule to start from, round(steps x strength)
      steps (1: from pure noise). Below 1 a stage starts from its editing source or, for a
      super-resolution stage without one, its upsampled input.
    resample: RePaint's jumps per step when inpainting (1: none).
    size: the output resolution (None: the stage's own, or the low-res input's x factor).
  """

  steps: int
  sampler: str = "ddpm"
  guidance: float = 1.0
  threshold: str = "dynamic"
  aug_level: float = 0.0
  strength: float = 1.0
  resample: int = 1
  size: int | None = None

  def __post_init__(self):
    if not _whole(self.steps) or self.steps < 1:
      raise InputError(f"steps must be a positive whole number, got {self.steps!r}.")
    if self.sampler not in diffusion.SAMPLERS:
      raise InputError(f"Unknown sampler {self.sampler!r}; choose one of {diffusion.SAMPLERS}.")
    if not _real(self.guidance) or self.guidance < 0:
      raise InputError(
        f"guidance must be 0 or more (1 is no guidance, 0 the unconditional model), "
        f"got {self.guidance!r}."
      )
    if self.threshold not in diffusion.THRESHOLDS:
      raise InputError(
        f"Unknown thresholding {self.threshold!r}; choose one of {diffusion.THRESHOLDS}."
      )
    if not _real(self.aug_level) or self.aug_level < 0:
      raise InputError(f"aug_level must be 0 or more, got {self.aug_level!r}.")
    diffusion.editing.check_strength(self.strength)
    diffusion.editing.check_resample(self.resample)
    if self.size is not None and (not _whole(self.size) or self.size < 1):
      raise InputError(f"size must be a positive whole number, got {self.size!r}.")
    # Python numbers from here on, whatever kind was given: one compiled program for 5, 5.0
    # and np.float32(5) (a numpy leaf traces as a strongly typed array, a Python float as a
    # weakly typed one, and would compile again).
    kinds = {
      "steps": int,
      "guidance": float,
      "aug_level": float,
      "strength": float,
      "resample": int,
    }
    for name, kind in kinds.items():
      object.__setattr__(self, name, kind(getattr(self, name)))
    object.__setattr__(self, "_guided", self.guidance != 1.0)

  @classmethod
  def from_config(cls, sample_config: Mapping, **given) -> SampleOptions:
    """The options of a config's `sample` section (steps, sampler, guidance, threshold,
    aug_level), with the `given` ones (not None) in their place."""
    values = {name: sample_config[name] for name in CONFIG_FIELDS if name in sample_config}
    values.update({name: value for name, value in given.items() if value is not None})
    return cls(**values)

  @property
  def guided(self) -> bool:
    """Whether sampling runs classifier-free guidance (a static property: it is known from the
    structure, also inside a trace)."""
    return self._guided

  @property
  def steps_run(self) -> int:
    """The U-Net steps actually run (fewer than `steps` when strength < 1)."""
    if self.strength == 1.0:
      return self.steps
    return diffusion.editing.start_steps(self.steps, self.strength)

  def edit(self, source=None, keep=None, *, upsampled=None) -> diffusion.Edit | None:
    """The diffusion.Edit a stage samples with (None: it samples from noise).

    Args:
      source: the picture to edit [B, S, S, 3] in [-1, 1], or None.
      keep: [B, S, S, 1], 1 where the source is kept (inpainting), or None.
      upsampled: a super-resolution stage's upsampled input [B, S, S, 3]: below strength 1
        the stage starts from it where nothing is kept (a source without a mask wins).
    """
    if upsampled is not None and self.strength < 1.0:
      if source is None:
        source = upsampled
      elif keep is not None:  # kept pixels from the source, new ones start from the input
        source = keep * source + (1.0 - keep) * upsampled
    if source is None:
      return None
    return diffusion.Edit(source, self.strength, keep, self.resample)

  def replace(self, **changes) -> SampleOptions:
    """A copy with `changes`, validated again."""
    return dataclasses.replace(self, **changes)


_STATIC = ("steps", "sampler", "threshold", "strength", "resample", "size")
_TRACED = ("guidance", "aug_level")


def _flatten(options: SampleOptions):
  static = (*(getattr(options, name) for name in _STATIC), options.guided)
  return tuple(getattr(options, name) for name in _TRACED), static


def _unflatten(static, traced) -> SampleOptions:
  # Inside a trace the leaves are tracers: the checks of __post_init__ ran where the options
  # were made, so the fields are set as they are.
  options = object.__new__(SampleOptions)
  for name, value in zip(_STATIC, static[:-1]):
    object.__setattr__(options, name, value)
  for name, value in zip(_TRACED, traced):
    object.__setattr__(options, name, value)
  object.__setattr__(options, "_guided", static[-1])
  return options


jax.tree_util.register_pytree_node(SampleOptions, _flatten, _unflatten)


def _whole(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value) -> bool:
  """A concrete real number: Python's, numpy's or a 0-d array (not a tracer: options are made
  outside the compiled function and passed into it)."""
  if isinstance(value, (bool, str, bytes)):
    return False
  try:
    float(value)
  except (TypeError, ValueError):
    return False
  return True
