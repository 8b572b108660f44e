"""The options of each stage of a cascade call, resolved once from Imagen.sample's arguments
(one value for every stage, or one per stage) over each stage's config."""

from __future__ import annotations

from collections.abc import Sequence

from imagen_jax.errors import InputError
from imagen_jax.stages import SampleOptions

PER_STAGE = ("steps", "sampler", "guidance", "threshold", "aug_level", "sr_strength")


def per_stage(value, count: int, name: str) -> list:
  """`value` for each of `count` stages: a list or tuple of one per stage, or one for all."""
  if isinstance(value, (list, tuple)):
    if len(value) != count:
      raise InputError(f"{name} has {len(value)} values for {count} stages: give one per stage.")
    return list(value)
  return [value] * count


def cascade_options(
  stages: Sequence, *, strength: float = 1.0, resample: int = 1, **given
) -> list[SampleOptions]:
  """The SampleOptions of each of `stages` (pipeline.LoadedStage, base first).

  Args:
    stages: every stage of the cascade, base first (a per-stage tuple names each one, also
      those a stop_at_stage leaves out).
    strength: the base stage's (image-to-image); a super-resolution stage's is its
      sr_strength (given, or its config's sample.sr_strength, default 1).
    resample: RePaint's jumps per step, every stage.
    **given: steps, sampler, guidance, threshold, aug_level and sr_strength, each None (the
      stage's config), one value for all stages, or one per stage.

  Returns:
    One validated SampleOptions per stage, at the stage's output size.
  """
  unknown = set(given) - set(PER_STAGE)
  if unknown:
    raise InputError(f"Unknown per-stage options {sorted(unknown)}; choose from {PER_STAGE}.")
  values = {name: per_stage(given.get(name), len(stages), name) for name in PER_STAGE}
  options = []
  for i, loaded in enumerate(stages):
    config = loaded.config.sample
    mine = {name: values[name][i] for name in PER_STAGE}
    sr_strength = mine.pop("sr_strength")
    if i > 0 and sr_strength is None:
      sr_strength = config.get("sr_strength", 1.0)
    try:
      stage_options = SampleOptions.from_config(
        config,
        **mine,
        strength=strength if i == 0 else sr_strength,
        resample=resample,
        size=loaded.stage.output_size,
      )
      loaded.stage.check_options(stage_options)
    except InputError as e:
      role = "the base" if i == 0 else "super-resolution, its strength is sr_strength"
      raise InputError(f"stage {i + 1} ({role}): {e}") from None
    options.append(stage_options)
  return options
