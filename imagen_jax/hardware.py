"""What the hardware is and how to compile for it: default compute dtype, XLA:CPU compile options
for the jitted train step and sampler, and the peak FLOP/s that MFU is measured against."""

from __future__ import annotations

import functools
import logging
import time

import jax
import jax.numpy as jnp

log = logging.getLogger(__name__)

# XLA:CPU hands dots, convolutions and reductions to the YNNPACK library by default. Its
# convolutions are single-threaded and their gradients run at a third to a half of XLA's own
# rate at the U-Nets' widths, so convolutions stay with XLA. Reductions are faster in XLA
# forward and in YNNPACK backward: the sampler keeps only dots there, the train step dots and
# reductions. Measurements: docs/performance.md.
_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_FUSIONS = {
  "sample": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
  "train": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}

# Dense bfloat16 peak FLOP/s per chip (vendor figures); CPUs are measured instead.
PEAK_FLOPS = (
  ("TPU v6", 918e12),  # Trillium (v6e)
  ("TPU v5p", 459e12),
  ("TPU v5 lite", 197e12),  # v5e
  ("TPU v5e", 197e12),
  ("TPU v5", 459e12),
  ("TPU v4", 275e12),
  ("H200", 989e12),
  ("H100", 989e12),  # SXM
  ("A100", 312e12),
)


def default_compute_dtype():
  """bfloat16 on TPUs and GPUs, float32 on CPUs (where XLA runs bfloat16 no faster, even on
  cores with AVX512-BF16: docs/performance.md)."""
  return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16


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


@functools.lru_cache(maxsize=4)
def measured_cpu_flops(dtype_name: str = "float32") -> float:
  """Achieved FLOP/s of a 1024^3 matmul on this host (the CPU's practical peak)."""
  n = 1024
  a = jnp.ones((n, n), dtype_name)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(5):
    start = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def peak_flops(device=None, dtype_name: str = "bfloat16") -> float:
  """Peak FLOP/s of one device: the table for TPUs and GPUs, a measurement for CPUs (the host's
  matmul rate, shared by its CPU devices when it is split into several)."""
  device = device or jax.devices()[0]
  if device.platform == "cpu":
    host = measured_cpu_flops("float32" if dtype_name == "float32" else dtype_name)
    return host / len(jax.devices("cpu"))
  kind = device.device_kind
  for name, flops in PEAK_FLOPS:
    if name.lower() in kind.lower():
      return flops / (2 if dtype_name == "float32" and "TPU" not in kind else 1)
  return float("nan")
