"""Ahead-of-time compilation and what XLA says about the compiled program: FLOPs from its cost
analysis, bytes per device from its memory analysis. The train loop, `imagen-jax bench` and
`imagen-jax inspect` all read them here."""

from __future__ import annotations

import dataclasses
import time

import jax


@dataclasses.dataclass
class Compiled:
  """A compiled program, how long compiling took, its FLOPs per call per device, and the bytes
  per device it needs (None where the backend does not say)."""

  call: jax.stages.Compiled
  seconds: float
  flops: float
  bytes_per_device: int | None


def compile_ahead(jitted, *args) -> Compiled:
  """Lowers and compiles `jitted` (a jax.jit function) for `args` (arrays or
  ShapeDtypeStructs with shardings) and analyses the result."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - t0
  return Compiled(compiled, seconds, flops(compiled), bytes_per_device(compiled))


def flops(program) -> float:
  """FLOPs per call per device of a lowered or compiled program (XLA's cost analysis; NaN where
  it gives none). Some jax versions return one analysis per device in a list."""
  cost = program.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float((cost or {}).get("flops", float("nan")))


def memory(compiled):
  """XLA's memory analysis of a compiled program, or None where the backend has none."""
  try:
    return compiled.memory_analysis()
  except Exception:  # not every backend implements it
    return None


def bytes_per_device(compiled) -> int | None:
  """Per-device bytes a compiled program needs: arguments + outputs - donated aliases +
  temporaries, by XLA's memory analysis; None where the backend does not report it."""
  m = memory(compiled)
  if m is None:
    return None
  return int(
    m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
  )


def device_bytes_limit() -> int | None:
  """The memory of the first local device, where the backend reports it."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("bytes_limit")
