"""`imagen-jax bench`: steady-state speed of a stage's train step or sampler, as JSON.

Parameters are randomly initialised (speed does not depend on their values). Compilation is
timed apart from the steady state; a few untimed calls warm up, then `iters` calls are timed and
the median is reported. FLOPs come from XLA's cost analysis of the compiled program (per device),
MFU from them and the peak table in imagen_jax.hardware, memory from XLA's memory analysis (and the
device's peak allocation where the backend reports it).

When the compiled train step would not fit in this machine's memory (e.g. the 2B base model on a
small CPU host), the step is compiled but not run, and the report says so.
"""

from __future__ import annotations

import math
import os
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax import hardware, parallel
from imagen_jax.configuration import load_config, resolve_config_path
from imagen_jax.stages import ImagenStage, SampleOptions, StageInputs, compiled
from imagen_jax.train import aot
from imagen_jax.train.optim import make_optimizer
from imagen_jax.train.state import create_state, state_shardings
from imagen_jax.train.step import make_train_step


def _device_info() -> dict:
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "devices": jax.device_count()}


def _available_bytes() -> int:
  limit = aot.device_bytes_limit()
  if limit:
    return int(limit)
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _sharded_bytes(tree) -> int:
  """Bytes per device of a tree of ShapeDtypeStructs carrying shardings."""
  return sum(
    math.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(tree)
  )


def time_calls(fn, *, warmup: int, iters: int) -> list[float]:
  """Seconds of each of `iters` calls of `fn` (its result waited for), after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return times


def _analysis(compiled: aot.Compiled) -> dict:
  out = {"flops_per_call_per_device": compiled.flops}
  if compiled.bytes_per_device is not None:
    out["compiled_bytes_per_device"] = compiled.bytes_per_device
  return out


def _peak_memory() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _random_batch(config, super_res: bool, batch: int) -> dict:
  """A host batch of random pictures and stored text embeddings, as the input pipeline gives."""
  rng = np.random.default_rng(0)
  size, text = config.image_size, (config.text.max_length, config.text.dim)
  host = {
    "image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
    "text_emb": rng.normal(size=(batch, *text)).astype(jnp.bfloat16),
    "text_mask": np.ones((batch, text[0]), bool),
  }
  if super_res:
    low = config.low_res_size
    host["low_res"] = rng.integers(0, 256, (batch, low, low, 3), dtype=np.uint8)
  return host


def bench_train(config, *, batch: int | None = None, iters: int = 5, warmup: int = 2) -> dict:
  """Train-step speed at `batch` global images (default: the config's batch on accelerators, one
  image per device on CPU)."""
  cpu = jax.default_backend() == "cpu"
  batch = batch or (jax.device_count() if cpu else config.train.batch_size)
  config = config.copy_and_resolve_references()
  config.train.batch_size = batch
  config.train.grad_accum = 1
  mesh = parallel.make_mesh(dict(config.mesh))
  stage = ImagenStage.from_config(config)
  dtype_name = jnp.dtype(stage.model.dtype).name
  optimizer = make_optimizer(config.train)
  abstract, shardings = state_shardings(stage, optimizer, mesh)
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )
  batch_arrays = parallel.global_batch(_random_batch(config, stage.super_res, batch), mesh)
  step = jax.jit(
    make_train_step(stage, config, optimizer),
    out_shardings=(shardings, parallel.replicated(mesh)),
    donate_argnums=0,
    compiler_options=hardware.compiler_options("train"),
  )
  key = jax.random.key(0)
  compiled = aot.compile_ahead(step, abstract, batch_arrays, key, None)
  report = {
    "what": "train",
    **_device_info(),
    "batch": batch,
    "compute_dtype": dtype_name,
    "compile_seconds": round(compiled.seconds, 2),
    **_analysis(compiled),
  }
  # XLA's own figure for the compiled step (state, batch and temporaries); where the backend
  # gives none, the train state alone, as laid out over the mesh.
  need = compiled.bytes_per_device or _sharded_bytes(abstract)
  if need * 1.2 > _available_bytes():
    report["skipped"] = (
      f"the train step needs {need / 2**30:.1f} GiB per device; this machine has "
      f"{_available_bytes() / 2**30:.1f} GiB free"
    )
    return report
  state = create_state(stage, optimizer, jax.random.key(1), shardings)
  holder = {"state": state}

  def call():
    holder["state"], m = compiled.call(holder["state"], batch_arrays, key, None)
    return m["loss"]

  times = time_calls(call, warmup=warmup, iters=iters)
  step_seconds = statistics.median(times)
  flops = report["flops_per_call_per_device"]
  peak = hardware.peak_flops(dtype_name=dtype_name)
  report.update(
    {
      "step_seconds": round(step_seconds, 5),
      "images_per_s": round(batch / step_seconds, 3),
      "images_per_s_per_device": round(batch / step_seconds / jax.device_count(), 3),
      "mfu": round(flops / step_seconds / peak, 4),
      "peak_flops_per_device": peak,
      "peak_bytes_in_use": _peak_memory(),
    }
  )
  return report


def bench_sample(
  configs,
  *,
  batch: int = 1,
  steps=None,
  sampler: str | None = None,
  guidance: float | None = None,
  iters: int = 3,
  warmup: int = 1,
) -> dict:
  """Sampling speed of one stage or a cascade (configs in order, base first), per stage and in
  total, at `steps` per stage (default: each config's sample.steps). An SR stage with
  sample.sr_strength < 1 runs as the cascade runs it, that fraction of the steps from its input
  (`steps_run`)."""
  mesh = parallel.make_mesh({"data": -1})
  n = len(configs)
  steps = list(steps) if steps else [c.sample.steps for c in configs]
  if len(steps) == 1 and n > 1:
    steps = steps * n
  report = {"what": "sample", **_device_info(), "batch": batch, "stages": []}
  images = None
  rng = np.random.default_rng(0)
  total = 0.0
  for i, config in enumerate(configs):
    stage = ImagenStage.from_config(config)
    params = jax.jit(
      lambda k, stage=stage: nn.unbox(stage.init_params(k)), out_shardings=parallel.replicated(mesh)
    )(jax.random.key(i))
    padded = batch + (-batch % parallel.batch_shards(mesh.shape))
    text = jnp.asarray(
      rng.normal(size=(padded, config.text.max_length, config.text.dim)), jnp.float32
    )
    mask = jnp.ones((padded, config.text.max_length), bool)
    if stage.super_res and images is None:
      low = config.sample_size // stage.factor if config.sample_size else config.low_res_size
      images = jnp.asarray(rng.uniform(-1, 1, (padded, low, low, 3)), jnp.float32)
    # As the cascade samples it: an SR stage with sr_strength < 1 from its upsampled input.
    options = SampleOptions.from_config(
      config.sample, steps=int(steps[i]), sampler=sampler, guidance=guidance,
      strength=config.sample.get("sr_strength", 1.0) if stage.super_res else 1.0,
      size=stage.output_size,
    )  # fmt: skip
    inputs = StageInputs(text, mask, low_res=images if stage.super_res else None)
    run = lambda stage=stage, params=params, inputs=inputs, o=options: compiled.sample(
      stage, params, jax.random.key(0), inputs, options=o
    )
    t0 = time.perf_counter()
    out = jax.block_until_ready(run())  # the first call compiles
    first = time.perf_counter() - t0
    seconds = statistics.median(time_calls(run, warmup=warmup - 1 if warmup else 0, iters=iters))
    images = out
    total += seconds
    report["stages"].append(
      {
        "stage": i + 1,
        "output_size": stage.output_size,
        "steps": options.steps,
        "sampler": options.sampler,
        "guidance": options.guidance,
        "compile_seconds": round(max(first - seconds, 0.0), 2),
        "seconds": round(seconds, 4),
        "seconds_per_image": round(seconds / batch, 5),
        "steps_run": options.steps_run,
        "seconds_per_step": round(seconds / options.steps_run, 5),
      }
    )
  report["cascade_seconds_per_image"] = round(total / batch, 5)
  report["peak_bytes_in_use"] = _peak_memory()
  return report


def _steps(stage: dict) -> str:
  run = stage.get("steps_run", stage["steps"])
  return str(run) if run == stage["steps"] else f"{run} of {stage['steps']}"


def summary_line(report: dict) -> str:
  if report["what"] == "train":
    if "skipped" in report:
      return (
        f"train: compiled in {report['compile_seconds']}s, "
        f"{report['flops_per_call_per_device']:.3g} FLOPs/step/device; not run: "
        f"{report['skipped']}"
      )
    return (
      f"train on {report['devices']} x {report['device_kind']}: "
      f"{report['images_per_s_per_device']} images/s/device, "
      f"step {report['step_seconds'] * 1e3:.1f} ms at batch {report['batch']}, "
      f"MFU {report['mfu']:.1%}, compile {report['compile_seconds']}s"
    )
  stages = ", ".join(
    f"stage {s['stage']} {s['seconds_per_image']:.3f}s/image ({_steps(s)} {s['sampler']} steps)"
    for s in report["stages"]
  )
  return (
    f"sample on {report['devices']} x {report['device_kind']} at batch {report['batch']}: "
    f"{stages}; cascade {report['cascade_seconds_per_image']:.3f}s/image"
  )


def load_configs(spec: str, overrides) -> list:
  """One config, or the three demo stages for the demo's config without an argument (`demo`,
  `configs/demo.py`)."""
  if ":" not in spec and resolve_config_path(spec).name == "demo.py":
    return [load_config(f"{spec}:{s}", overrides) for s in ("base", "sr1", "sr2")]
  return [load_config(spec, overrides)]
