"""Compile options for XLA's CPU backend, for the jitted train step and sampler.

By default XLA:CPU (jaxlib 0.10) hands dots, convolutions and reductions to the YNNPACK library.
Its convolutions run on one thread, and their gradients at a third to a half of the rate of
XLA's own (Eigen) convolutions, at every U-Net layer width we measured (32 to 512 channels). On
the project's 2-core CPU host (AMD EPYC, AVX2), 3x3 convolutions on 2 threads, GFLOP/s forward /
forward and gradient:

  layer                      YNNPACK (default)   Eigen
  16x16, 64 -> 64, batch 16       76 / 49       145 / 146
  16x16, 128 -> 128, batch 16    118 / 80       170 / 164
  32x32, 256 -> 256, batch 4     116 / 65       174 / 155

So convolutions stay with XLA. Reductions (the norms' statistics, bias gradients) are faster in
XLA in a forward pass and in YNNPACK in a backward pass: the sampler keeps only the dots there,
the train step dots and reductions (GroupNorm's own reduces are variadic, which YNNPACK does not
take: see models/layers.group_norm). Demo U-Nets: sampling the cascade 1.63 -> 1.04 s/image
(batch 8), the base forward 47 -> 28 ms (batch 16), training 1-7% faster (base 255 -> 238 ms a
step).
"""

from __future__ import annotations

import functools
import logging

import jax

log = logging.getLogger(__name__)

_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_FUSIONS = {
  "sample": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
  "train": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


@functools.cache
def _supported() -> bool:
  """Whether this XLA knows the option (older ones have no YNNPACK and reject it)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={_OPTION: _FUSIONS["sample"]}).lower(1.0).compile()
  except jax.errors.JaxRuntimeError as e:
    log.info("XLA:CPU has no %s option (%s); using its default fusions", _OPTION, e)
    return False
  return True


def compiler_options(purpose: str) -> dict[str, str]:
  """`jax.jit` compiler_options for a "train" step or a "sample"r: the YNNPACK fusions above
  when the default backend is a CPU whose XLA has them, else none."""
  if purpose not in _FUSIONS:
    raise ValueError(f"Unknown purpose {purpose!r}; use one of {sorted(_FUSIONS)}.")
  if jax.default_backend() != "cpu" or not _supported():
    return {}
  return {_OPTION: _FUSIONS[purpose]}
