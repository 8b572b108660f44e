"""Training one stage: config -> data -> sharded state -> compiled step -> loop with metrics,
sample grids and checkpoints. The same code runs on one CPU and on a TPU pod.

    from imagen_jax.configuration import load_config
    from imagen_jax.train.trainer import train_and_evaluate
    train_and_evaluate(load_config("configs/demo.py:base"), "runs/base")
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from imagen_jax import parallel, paths, sampling, xla_cpu
from imagen_jax.data import pipeline
from imagen_jax.data.store import EmbeddingStore
from imagen_jax.stage import Stage, to_float, to_uint8, upsample
from imagen_jax.text import TextEncoder
from imagen_jax.train import metrics as metrics_lib
from imagen_jax.train import workdir as workdir_lib
from imagen_jax.train.checkpoint import Checkpointer
from imagen_jax.train.optim import make_optimizer
from imagen_jax.train.state import create_state, state_shardings
from imagen_jax.train.step import make_train_step

log = logging.getLogger(__name__)
GRID_EXAMPLES = 8


class TrainingError(RuntimeError):
  """A run that cannot go on (non-finite updates, a step that cannot fit in memory)."""


# --------------------------------------------------------------------------- setup helpers


def _check_batch(config, mesh) -> None:
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  micro = config.train.batch_size // config.train.grad_accum
  if micro % shards:
    raise ValueError(
      f"The micro-batch (train.batch_size / train.grad_accum = {micro}) must divide evenly "
      f"over the {shards} batch shards of the mesh (data x fsdp)."
    )


def _text_setup(config, mesh, dtype):
  """(text encoder module or None, its params or None, tokenizer or None, store or None)."""
  if config.text.store:
    return None, None, None, EmbeddingStore(config.text.store)
  encoder = TextEncoder.from_pretrained(
    config.text.encoder, max_length=config.text.max_length, mesh=mesh, dtype=dtype
  )
  if encoder.dim != config.text.dim:
    raise ValueError(
      f"config.text.dim is {config.text.dim} but {config.text.encoder} gives {encoder.dim}."
    )
  return encoder.model, encoder.params, encoder.tokenizer, None


def _open_data(config, tokenizer, store):
  if jax.process_index() == 0:
    source = pipeline.open_source(config)  # builds offline datasets on first use
  parallel.sync("dataset built")
  if jax.process_index() != 0:
    source = pipeline.open_source(config, build=False)
  if store is not None:
    store.check_matches(
      encoder=config.text.encoder,
      max_length=config.text.max_length,
      dim=config.text.dim,
      num_examples=len(source),
    )
  transform = pipeline.ExampleTransform(config, tokenizer=tokenizer, store=store)
  return source, transform


def _memory_check(compiled, enabled: bool) -> dict:
  """Per-device bytes of the compiled step; raises TrainingError when it exceeds the device."""
  need = metrics_lib.compiled_bytes_per_device(compiled)
  if need is None:
    return {}
  stats = jax.local_devices()[0].memory_stats() or {}
  limit = stats.get("bytes_limit")
  if enabled and limit and need > limit:
    raise TrainingError(
      f"The train step needs {need / 2**30:.1f} GiB per device but the device has "
      f"{limit / 2**30:.1f} GiB. Lower train.batch_size, raise train.grad_accum, set "
      "unet.remat='full', or shard the parameters over more devices (mesh.fsdp)."
    )
  return {"step_bytes_per_device": int(need), "device_bytes": int(limit or 0)}


class _StopRequests:
  """SIGTERM (and TPU preemption notices) and a first Ctrl-C ask the loop to save a checkpoint
  and stop; a second Ctrl-C exits at once, without saving (in a notebook: KeyboardInterrupt)."""

  def __init__(self):
    self.reason = None  # "SIGTERM", "Ctrl-C" or "preemption" once a stop is requested
    self._previous = {}

  def __enter__(self):
    for signum, handler in ((signal.SIGTERM, self._term), (signal.SIGINT, self._interrupt)):
      with contextlib.suppress(ValueError):  # not the main thread: leave the signals alone
        self._previous[signum] = signal.signal(signum, handler)
    return self

  def _term(self, signum, frame):
    log.warning("SIGTERM received: saving a checkpoint and stopping")
    self.reason = self.reason or "SIGTERM"

  def _interrupt(self, signum, frame):
    if self.reason is not None:
      if _interactive():  # a notebook or a REPL: interrupt the call, keep the session
        raise KeyboardInterrupt
      # A program exits here and now: an exception raised from a signal handler can land in a
      # callback that swallows it (JAX's garbage-collection hook), or wait for a save in flight.
      # Checkpoints are published only once complete, so none is left half-written.
      print("\nCtrl-C again: interrupted, exiting without saving", file=sys.stderr, flush=True)
      sys.stdout.flush()
      os._exit(130)
    self.reason = "Ctrl-C"
    print(
      "\nCtrl-C: saving a checkpoint and stopping (press Ctrl-C again to exit at once)",
      file=sys.stderr,
      flush=True,
    )

  def check(self, step: int) -> bool:
    if self.reason is not None:
      return True
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.reason = "preemption"
      except RuntimeError:  # no preemption service in this cluster
        return False
    return self.reason is not None

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


def _interactive() -> bool:
  """True in a Python REPL, IPython or a Jupyter kernel."""
  return hasattr(sys, "ps1") or "IPython" in sys.modules or "ipykernel" in sys.modules


def _sample_grid(stage, ema_params, grid_batch, text_fn, config, key) -> np.ndarray:
  """A grid of samples from the EMA parameters for a fixed batch of the data: for SR stages each
  row shows the upsampled low-res input, the sample and the target."""
  text, mask = text_fn(grid_batch)
  low = to_float(jnp.asarray(grid_batch["low_res"])) if stage.super_res else None
  images = sampling.sample_stage(
    stage,
    ema_params,
    text,
    mask,
    key,
    steps=config.sample.steps,
    sampler=config.sample.sampler,
    guidance=config.sample.guidance,
    threshold=config.sample.threshold,
    low_res=low,
    aug_level=config.sample.aug_level,
    size=stage.image_size,
  )
  rows = [to_uint8(images)]
  if stage.super_res:
    rows = [to_uint8(upsample(low, stage.image_size)), rows[0], jnp.asarray(grid_batch["image"])]
  stacked = np.stack([np.asarray(r) for r in rows], axis=1).reshape(-1, *rows[0].shape[1:])
  return metrics_lib.grid(stacked, columns=len(rows) if stage.super_res else None)


# --------------------------------------------------------------------------- the loop


def train_and_evaluate(config, workdir, *, progress: bool = True, max_steps: int | None = None):
  """Trains the stage of `config` in `workdir`, resuming from its checkpoints if any.

  Returns a summary dict (final step, last loss, compile time, FLOPs per step, ...; `stopped_by`
  names a signal that stopped it early). `max_steps` stops early after that many steps of this
  call (for tests and smoke runs); train.steps still defines the schedule. The workdir is locked
  for the run: a second trainer on it raises workdir.WorkdirBusyError.
  """
  parallel.initialize_distributed(config)
  if jax.process_index() == 0:
    workdir = workdir_lib.prepare(workdir)
  else:
    workdir = epath.Path(paths.absolute(workdir))
  with workdir_lib.hold(workdir):
    checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints)
    try:
      summary = _train(config, workdir, checkpointer, progress=progress, max_steps=max_steps)
    except KeyboardInterrupt:
      raise  # a second Ctrl-C: at once, not after a save in flight (it finishes or is dropped)
    except BaseException:
      checkpointer.close()
      raise
    checkpointer.close()
    return summary


def _train(config, workdir, checkpointer, *, progress: bool, max_steps: int | None) -> dict:
  config_dict = json.loads(config.to_json())
  checkpointer.check_config(config_dict)  # before data and compilation: a refusal comes at once
  mesh = parallel.make_mesh(dict(config.mesh))
  _check_batch(config, mesh)
  stage = Stage.from_config(config)
  dtype = stage.model.dtype
  log.info(
    "mesh %s, compute dtype %s, process %d of %d",
    dict(mesh.shape),
    jnp.dtype(dtype).name,
    jax.process_index(),
    jax.process_count(),
  )

  text_module, text_params, tokenizer, store = _text_setup(config, mesh, dtype)
  source, transform = _open_data(config, tokenizer, store)
  dataset_args = dict(
    seed=config.seed,
    global_batch=config.train.batch_size,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    shuffle=config.data.shuffle,
  )
  data_iter = iter(
    pipeline.make_dataset(source, transform, workers=config.data.workers, **dataset_args)
  )

  # ---- state: restored from the newest good checkpoint, or created sharded
  optimizer = make_optimizer(config.train)
  abstract, shardings = state_shardings(stage, optimizer, mesh)
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )
  init_key, key = jax.random.split(jax.random.key(config.seed))
  restored = checkpointer.restore(abstract, data_iter, config_dict)
  if restored is not None:
    state, start = restored
    log.info("resumed from the checkpoint at step %d", start)
  else:
    state, start = create_state(stage, optimizer, init_key, shardings), 0
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(json.dumps(config_dict, indent=1))
  if start >= config.train.steps:
    log.info("the run in %s is complete (step %d of %d)", workdir, start, config.train.steps)
    return {"step": start, "start_step": start, "complete": True}

  # ---- the step, compiled ahead of time
  step_fn = make_train_step(stage, config, optimizer, text_encoder=text_module)
  replicated = NamedSharding(mesh, PartitionSpec())
  first = next(data_iter)
  batch_spec = {
    k: jax.ShapeDtypeStruct(
      (config.train.batch_size, *v.shape[1:]),
      v.dtype,
      sharding=parallel.batch_sharding(mesh, v.ndim),
    )
    for k, v in first.items()
    if k != "index"
  }
  jitted = jax.jit(
    step_fn,
    out_shardings=(shardings, replicated),
    donate_argnums=0,
    compiler_options=xla_cpu.compiler_options("train"),
  )
  t0 = time.perf_counter()
  compiled = jitted.lower(abstract, batch_spec, key, text_params).compile()
  compile_seconds = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops_per_step = float((cost or {}).get("flops", float("nan")))  # per device
  memory = _memory_check(compiled, config.train.compile_memory_check)
  peak = metrics_lib.peak_flops(dtype_name=jnp.dtype(dtype).name)
  log.info(
    "compiled the train step in %.1fs; %.3g FLOPs per step per device",
    compile_seconds,
    flops_per_step,
  )

  grid_batch = None
  if config.train.sample_every:
    grid_iter = iter(
      pipeline.make_dataset(
        source,
        transform,
        **{
          **dataset_args,
          "seed": config.seed + 1,
          "global_batch": GRID_EXAMPLES,
          "process_index": 0,
          "process_count": 1,
        },
      )
    )
    grid_batch = next(grid_iter)

  def grid_text(batch):
    if "text_emb" in batch:
      return jnp.asarray(batch["text_emb"], jnp.float32), jnp.asarray(batch["text_mask"])
    emb = text_module.apply({"params": text_params}, batch["input_ids"], batch["text_mask"])
    return jnp.where(batch["text_mask"][..., None], emb, 0).astype(jnp.float32), jnp.asarray(
      batch["text_mask"]
    )

  # ---- the loop
  writer = metrics_lib.MetricsWriter(workdir, enabled=jax.process_index() == 0, step=start)
  total = config.train.steps
  stop = total if max_steps is None else min(total, start + max_steps)
  bar = tqdm(
    total=total,
    initial=start,
    unit="step",
    disable=not progress or jax.process_index(),
    desc=f"train {config.stage}",
    dynamic_ncols=True,
  )
  summary = {
    "compile_seconds": compile_seconds,
    "flops_per_step_per_device": flops_per_step,
    "start_step": start,
    **memory,
  }
  pending = None  # the previous step's metrics: read one step late to keep the device busy
  window_start, window_steps = time.perf_counter(), 0
  step = last_saved = start
  save_due = False  # a save waits for a sound state (train.state.unsound_reason)
  local = first
  try:
    with _StopRequests() as stop_requests:
      while step < stop:
        batch = parallel.global_batch({k: v for k, v in local.items() if k != "index"}, mesh)
        state, step_metrics = compiled(state, batch, key, text_params)
        step += 1
        window_steps += 1
        if pending is not None:
          _check_finite(pending, config.train.max_bad_steps, step - 1)
        pending = step_metrics
        if step % config.train.log_every == 0 or step == stop:
          values = jax.device_get(step_metrics)
          _check_finite(values, config.train.max_bad_steps, step)
          elapsed = time.perf_counter() - window_start
          steps_per_s = window_steps / elapsed
          record = {
            "loss": values["loss"],
            "grad_norm": values["grad_norm"],
            "learning_rate": values["learning_rate"],
            "steps_per_s": steps_per_s,
            "images_per_s": steps_per_s * config.train.batch_size,
            "mfu": flops_per_step * steps_per_s / peak,
            "skipped": values["skipped"],
          }
          writer.write(step, record)
          bar.set_postfix(loss=f"{float(values['loss']):.4f}", refresh=False)
          summary["loss"] = float(values["loss"])
          window_start, window_steps = time.perf_counter(), 0
        if config.train.sample_every and step % config.train.sample_every == 0:
          image = _sample_grid(
            stage, state.ema_params, grid_batch, grid_text, config, jax.random.fold_in(key, step)
          )
          writer.write_image(step, "samples", image)
        save_due = save_due or step % config.train.checkpoint_every == 0
        if save_due and checkpointer.save(step, state, data_iter, config_dict):
          save_due, last_saved = False, step
        bar.update(1)
        if stop_requests.check(step):
          summary["stopped_by"] = stop_requests.reason
          break
        if step < stop:
          local = next(data_iter)
      if last_saved != step and checkpointer.save(step, state, data_iter, config_dict):
        last_saved = step
      checkpointer.wait()
  except Diverged as e:
    raise TrainingError(_divergence_message(e, checkpointer)) from None
  finally:
    bar.close()
    writer.close()
  summary["step"], summary["saved_step"] = step, last_saved
  return summary


class Diverged(TrainingError):
  """`bad` non-finite updates in a row up to `step`."""

  def __init__(self, step: int, bad: int):
    super().__init__(f"{bad} non-finite updates in a row up to step {step}")
    self.step, self.bad = step, bad


def _divergence_message(e: Diverged, checkpointer: Checkpointer) -> str:
  """Sets aside the checkpoints of diverged states and says where to resume from.

  The first non-finite update of the run started from the state of step `e.step - e.bad`;
  skipped updates leave the parameters as they were, so every state from that one on gave
  non-finite losses, and a checkpoint of one of them would diverge again on resume."""
  first_bad = e.step - e.bad
  checkpointer.wait()
  diverged = [s for s in checkpointer.steps() if s >= first_bad]
  text = f"{e}: the run diverged from the state of step {first_bad}."
  if diverged:
    folder = checkpointer.set_aside(diverged, "diverged_checkpoints")
    text += f" Checkpoint(s) {diverged} moved to {folder}."
  good = checkpointer.steps()
  advice = (
    "Lower train.learning_rate (--config.train.learning_rate=...), keep train.clip_norm on, or "
    "use float32 compute"
  )
  if good:
    return f"{text} The last good checkpoint is step {good[-1]}. {advice}, and run again to resume."
  return f"{text} No good checkpoint is left. {advice}, and run again to start anew."


def _check_finite(metrics, max_bad: int, step: int) -> None:
  """Raises Diverged after `max_bad` non-finite updates in a row."""
  bad = int(metrics["bad_steps"])
  if bad >= max_bad:
    raise Diverged(step, bad)
