"""Training one stage: config -> data -> sharded state -> compiled step -> loop with metrics,
sample grids and checkpoints. The same code runs on one CPU and on a TPU pod.

    from imagen_jax.configuration import load_config
    from imagen_jax.train import train_and_evaluate
    train_and_evaluate(load_config("configs/demo.py:base"), "runs/base")
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from tqdm import tqdm

from imagen_jax import hardware, parallel, paths
from imagen_jax.data import input_pipeline
from imagen_jax.data.store import EmbeddingStore
from imagen_jax.errors import ConfigError
from imagen_jax.stages import ImagenStage
from imagen_jax.text import TextEncoder, tokenize
from imagen_jax.train import aot, grids
from imagen_jax.train import workdir as workdir_lib
from imagen_jax.train.checkpoint import Checkpointer
from imagen_jax.train.guards import (
  Diverged,
  StopRequests,
  TrainingError,
  check_finite,
  divergence_message,
)
from imagen_jax.train.metrics import MetricsWriter
from imagen_jax.train.optim import make_optimizer
from imagen_jax.train.state import create_state, state_shardings
from imagen_jax.train.step import make_eval_loss, make_train_step

log = logging.getLogger(__name__)


def train_and_evaluate(
  config,
  workdir,
  *,
  progress: bool = True,
  max_steps: int | None = None,
  on_metrics: Callable[[int, dict], None] | None = None,
):
  """Trains the stage of `config` in `workdir`, resuming from its checkpoints if any.

  Args:
    config: a stage config (configuration.load_config).
    workdir: a local or gs:// folder for checkpoints, metrics.jsonl and TensorBoard events,
      created if needed. It is locked for the run.
    progress: a progress bar of the steps (on process 0).
    max_steps: stop early after that many steps of this call (for tests and smoke runs);
      train.steps still defines the schedule.
    on_metrics: on_metrics(step, record) receives every metrics.jsonl record on process 0 (to
      forward it to another logger).

  Returns:
    A summary dict: final step, last loss, compile time, FLOPs per step, ...; `stopped_by`
    names a signal that stopped it early, and `complete` is True when the workdir had already
    reached train.steps.

  Raises:
    WorkdirBusyError: a second trainer on the workdir (train/workdir.py).
    InputError: a workdir that is a file or cannot be written.
    ConfigError: a config whose text width is not its encoder's, or that differs from the
      workdir's checkpoints in what they mean (ConfigChangeError).
    CheckpointError: none of the workdir's checkpoints can be restored.
    DataError: a dataset, folder of pictures or embedding store that cannot be read as asked.
    TrainingError: a step that will not fit in device memory, or training that diverged
      (train.max_bad_steps non-finite updates in a row).
  """
  parallel.initialize_distributed(config)
  if jax.process_index() == 0:
    workdir = workdir_lib.prepare(workdir)
  else:
    workdir = epath.Path(paths.absolute(workdir))
  with workdir_lib.hold(workdir):
    checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints)
    try:
      summary = _train(
        config, workdir, checkpointer, progress=progress, max_steps=max_steps, on_metrics=on_metrics
      )
    except KeyboardInterrupt:
      raise  # a second Ctrl-C: at once, not after a save in flight (it finishes or is dropped)
    except BaseException:
      checkpointer.close()
      raise
    checkpointer.close()
    return summary


def _train(
  config, workdir, checkpointer, *, progress: bool, max_steps: int | None, on_metrics=None
) -> dict:
  config_dict = json.loads(config.to_json())
  checkpointer.check_config(config_dict)  # before data and compilation: a refusal comes at once
  mesh = parallel.make_mesh(dict(config.mesh))
  parallel.check_batch(config, mesh.shape)
  stage = ImagenStage.from_config(config)
  log.info(
    "%d %s device(s), mesh %s, compute dtype %s, process %d of %d",
    mesh.size,
    mesh.devices.flat[0].platform,
    dict(mesh.shape),
    jnp.dtype(stage.model.dtype).name,
    jax.process_index(),
    jax.process_count(),
  )
  text = _text_setup(config, mesh, stage.model.dtype)
  source, transform = _open_data(config, text)
  data_iter = iter(_dataset(config, source, transform))
  run = _Run(config, stage, mesh, text, checkpointer, config_dict)
  state, start = run.restore_or_create(data_iter)
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(json.dumps(config_dict, indent=1))
  if start >= config.train.steps:
    log.info("the run in %s is complete (step %d of %d)", workdir, start, config.train.steps)
    return {"step": start, "start_step": start, "complete": True}
  first = next(data_iter)
  step = run.compile_step(first)
  memory = _memory_check(step, config.train.compile_memory_check)
  grid_sampler = _grid_sampler(config, stage, source, transform, text)
  held_out = _HeldOut.create(config, stage, mesh, transform, text, run.key)
  writer = MetricsWriter(
    workdir, enabled=jax.process_index() == 0, step=start, on_metrics=on_metrics
  )
  writer.write_config(start, config_dict)
  try:
    summary = run.loop(
      step, state, start=start, first_batch=first, data_iter=data_iter, writer=writer,
      grid_sampler=grid_sampler, held_out=held_out, progress=progress, max_steps=max_steps,
    )  # fmt: skip
  finally:
    writer.close()
  return {
    "compile_seconds": step.seconds,
    "flops_per_step_per_device": step.flops,
    "start_step": start,
    **memory,
    **summary,
  }


# --------------------------------------------------------------------------- setup


@dataclasses.dataclass
class _Text:
  """How the step gets text: the frozen encoder module and its params (and the tokenizer for the
  input pipeline), or a store of precomputed embeddings."""

  module: object = None
  params: object = None
  tokenizer: object = None
  store: EmbeddingStore | None = None


def _text_setup(config, mesh, dtype) -> _Text:
  if config.text.store:
    return _Text(store=EmbeddingStore(config.text.store))
  encoder = TextEncoder.from_pretrained(
    config.text.encoder, max_length=config.text.max_length, mesh=mesh, dtype=dtype
  )
  if encoder.dim != config.text.dim:
    raise ConfigError(
      f"config.text.dim is {config.text.dim} but {config.text.encoder} gives {encoder.dim}."
    )
  return _Text(encoder.model, encoder.params, encoder.tokenizer)


def _open_data(config, text: _Text):
  if jax.process_index() == 0:
    source = input_pipeline.open_source(config)  # builds offline datasets on first use
  parallel.sync("dataset built")
  if jax.process_index() != 0:
    source = input_pipeline.open_source(config, build=False)
  if text.store is not None:
    text.store.check_matches(
      encoder=config.text.encoder,
      max_length=config.text.max_length,
      dim=config.text.dim,
      num_examples=len(source),
    )
  tokenize_fn = None
  if text.tokenizer is not None:
    tokenize_fn = functools.partial(tokenize, text.tokenizer, max_length=config.text.max_length)
  return source, input_pipeline.ExampleTransform(config, tokenize=tokenize_fn, store=text.store)


def _dataset(config, source, transform, *, grid: bool = False):
  """The training stream of this process, or (grid) the fixed batch of sample grids: another
  seed, read whole by every process."""
  if grid:
    return input_pipeline.make_dataset(
      source,
      transform,
      seed=config.seed + 1,
      global_batch=grids.EXAMPLES,
      process_index=0,
      process_count=1,
      shuffle=config.data.shuffle,
    )
  return input_pipeline.make_dataset(
    source,
    transform,
    workers=config.data.workers,
    seed=config.seed,
    global_batch=config.train.batch_size,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    shuffle=config.data.shuffle,
  )


def _grid_sampler(config, stage, source, transform, text: _Text):
  """The sampler of the run's sample grids (None when train.sample_every is 0): a base stage
  draws config.sample.prompts (when the text is encoded in the step); SR stages, and runs on
  stored embeddings, a fixed batch of the data. Either way the grid's captions are recorded."""
  if not config.train.sample_every:
    return None
  prompts = list(config.sample.prompts or ())
  if not stage.super_res and prompts and text.tokenizer is not None:
    ids, mask = tokenize(text.tokenizer, prompts, config.text.max_length)
    batch = {"input_ids": ids, "text_mask": mask}
    return grids.GridSampler(stage, config, batch, text.module, text.params, captions=prompts)
  batch = next(iter(_dataset(config, source, transform, grid=True)))
  captions = [
    transform.caption({**source[int(i)], "index": int(i)}) for i in np.asarray(batch["index"])
  ]
  return grids.GridSampler(stage, config, batch, text.module, text.params, captions=captions)


@dataclasses.dataclass
class _HeldOut:
  """The held-out loss: the EMA parameters' mean loss over train.eval_batches fixed global
  batches of data.eval_split, with one fixed key (the same t, noise and text dropout every
  time, so the figures compare across steps). Each host keeps its own rows of those batches."""

  batches: list
  fn: object
  key: object
  text_params: object
  mesh: object

  @classmethod
  def create(cls, config, stage, mesh, transform, text, key):
    if not config.train.eval_every:
      return None
    eval_config = config.copy_and_resolve_references()
    eval_config.data.split = config.data.eval_split
    source = input_pipeline.open_source(eval_config, build=False)
    stream = iter(
      input_pipeline.make_dataset(
        source,
        transform,
        seed=config.seed + 2,
        global_batch=config.train.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        shuffle=False,
      )
    )
    local = [next(stream) for _ in range(config.train.eval_batches)]
    batches = [
      parallel.global_batch({k: v for k, v in b.items() if k != "index"}, mesh) for b in local
    ]
    fn = jax.jit(make_eval_loss(stage, config, text_encoder=text.module))
    log.info("held-out loss: %d batches of %s", len(batches), config.data.eval_split)
    return cls(batches, fn, jax.random.fold_in(key, 2**31 - 1), text.params, mesh)

  def loss(self, params) -> float:
    losses = [self.fn(params, b, self.key, self.text_params) for b in self.batches]
    return float(sum(jax.device_get(losses)) / len(losses))


def _memory_check(step: aot.Compiled, enabled: bool) -> dict:
  """Per-device bytes of the compiled step; raises TrainingError when it exceeds the device."""
  need = step.bytes_per_device
  if need is None:
    return {}
  limit = aot.device_bytes_limit()
  if enabled and limit and need > limit:
    raise TrainingError(
      f"The train step needs {need / 2**30:.1f} GiB per device but the device has "
      f"{limit / 2**30:.1f} GiB. Lower train.batch_size, raise train.grad_accum, set "
      "unet.remat='full', or shard the parameters over more devices (mesh.fsdp)."
    )
  return {"step_bytes_per_device": int(need), "device_bytes": int(limit or 0)}


# --------------------------------------------------------------------------- the run


class _Run:
  """The sharded state, the compiled step and the loop of one run."""

  def __init__(self, config, stage, mesh, text: _Text, checkpointer, config_dict):
    self.config, self.stage, self.mesh, self.text = config, stage, mesh, text
    self.checkpointer, self.config_dict = checkpointer, config_dict
    self.optimizer = make_optimizer(config.train)
    abstract, self.shardings = state_shardings(stage, self.optimizer, mesh)
    self.abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, self.shardings
    )
    self.init_key, self.key = jax.random.split(jax.random.key(config.seed))

  def restore_or_create(self, data_iter):
    """(state, step): restored from the newest good checkpoint, or created sharded at step 0."""
    restored = self.checkpointer.restore(self.abstract, data_iter, self.config_dict)
    if restored is not None:
      log.info("resumed from the checkpoint at step %d", restored[1])
      return restored
    return create_state(self.stage, self.optimizer, self.init_key, self.shardings), 0

  def compile_step(self, example_batch) -> aot.Compiled:
    """The train step compiled ahead of time for global batches shaped like `example_batch`."""
    config, mesh = self.config, self.mesh
    step_fn = make_train_step(self.stage, config, self.optimizer, text_encoder=self.text.module)
    batch_spec = {
      k: jax.ShapeDtypeStruct(
        (config.train.batch_size, *v.shape[1:]),
        v.dtype,
        sharding=parallel.batch_sharding(mesh, v.ndim),
      )
      for k, v in example_batch.items()
      if k != "index"
    }
    jitted = jax.jit(
      step_fn,
      out_shardings=(self.shardings, parallel.replicated(mesh)),
      donate_argnums=0,
      compiler_options=hardware.compiler_options("train"),
    )
    step = aot.compile_ahead(jitted, self.abstract, batch_spec, self.key, self.text.params)
    log.info(
      "compiled the train step in %.1fs; %.3g FLOPs per step per device", step.seconds, step.flops
    )
    return step

  def loop(
    self,
    step_fn: aot.Compiled,
    state,
    *,
    start: int,
    first_batch: dict,
    data_iter,
    writer: MetricsWriter,
    grid_sampler=None,
    held_out=None,
    progress: bool = True,
    max_steps: int | None = None,
  ) -> dict:
    """Steps from `start` (with `first_batch`, the first local batch, then `data_iter`'s) to
    train.steps or `max_steps` more, logging, sampling grids and saving on the config's
    intervals; saves on the way out. Returns the run's summary (step, saved_step, loss, ...)."""
    config = self.config
    stop = config.train.steps if max_steps is None else min(config.train.steps, start + max_steps)
    bar = tqdm(
      total=config.train.steps, initial=start, unit="step", desc=f"train {config.stage}",
      disable=not progress or jax.process_index(), dynamic_ncols=True,
    )  # fmt: skip
    at, local, summary = _Position(start), first_batch, {}
    self.peak = hardware.peak_flops(dtype_name=jnp.dtype(self.stage.model.dtype).name)
    try:
      with StopRequests() as stop_requests:
        while at.step < stop:
          batch = parallel.global_batch({k: v for k, v in local.items() if k != "index"}, self.mesh)
          state, step_metrics = step_fn.call(state, batch, self.key, self.text.params)
          at.advance(step_metrics, config.train.max_bad_steps)
          self._grid_and_held_out(state, at, writer, grid_sampler, held_out)
          saved = self._save_if_due(state, at, data_iter)
          # Logged after the grid and the save, so that its record reports their time.
          if at.step % config.train.log_every == 0 or at.step == stop:
            summary["loss"] = self._log(step_metrics, at, writer, step_fn.flops)
            bar.set_postfix(loss=f"{summary['loss']:.4f}", refresh=False)
          if saved:
            writer.sync()  # on an object store: what a resume from this checkpoint keeps
          bar.update(1)
          if stop_requests.check(at.step):
            summary["stopped_by"] = stop_requests.reason
            break
          if at.step < stop:
            local = next(data_iter)
        if at.last_saved != at.step:
          self._save(state, at, data_iter)
    except Diverged as e:
      raise TrainingError(divergence_message(e, self.checkpointer)) from None
    finally:
      bar.close()
    summary["step"], summary["saved_step"] = at.step, at.last_saved
    return summary

  def _grid_and_held_out(self, state, at: _Position, writer, grid_sampler, held_out) -> None:
    train = self.config.train
    if grid_sampler is not None and at.step % train.sample_every == 0:
      with at.window.pause("grid_s"):
        image = grid_sampler(state.ema_params, jax.random.fold_in(self.key, at.step))
        writer.write_image(at.step, "samples", image)
        writer.write_text(at.step, "samples/captions", grid_sampler.caption_text())
    if held_out is not None and at.step % train.eval_every == 0:
      with at.window.pause("eval_s"):
        at.window.extra["eval_loss"] = held_out.loss(state.ema_params)

  def _save_if_due(self, state, at: _Position, data_iter) -> bool:
    """Saves when a save is due (it waits for a sound state: train.state.unsound_reason)."""
    at.save_due = at.save_due or at.step % self.config.train.checkpoint_every == 0
    with at.window.pause("checkpoint_s"):
      return at.save_due and self._save(state, at, data_iter)

  def _save(self, state, at: _Position, data_iter) -> bool:
    saved = self.checkpointer.save(at.step, state, data_iter, self.config_dict)
    if saved:
      at.save_due, at.last_saved = False, at.step
    return saved

  def _log(self, step_metrics, at: _Position, writer, flops: float) -> float:
    """Writes the record of the steps since the last one; returns its loss."""
    values = jax.device_get(step_metrics)
    check_finite(values, self.config.train.max_bad_steps, at.step)
    record = at.window.record(values, self.config, flops, self.peak)
    writer.write(at.step, record)
    at.window = _Window()
    return record["loss"]


class _Position:
  """Where the loop stands: the step, the last saved step, whether a save is due, the previous
  step's metrics (checked one step late, to keep the device busy) and the logging window."""

  def __init__(self, start: int):
    self.step = self.last_saved = start
    self.save_due = False
    self.pending = None
    self.window = _Window()

  def advance(self, step_metrics, max_bad_steps: int) -> None:
    self.step += 1
    self.window.add(step_metrics["window"])
    if self.pending is not None:
      check_finite(self.pending, max_bad_steps, self.step - 1)
    self.pending = step_metrics


class _Window:
  """The steps between two logged records: on-device sums of the loss and gradient norm (one
  add per step, read once per record), and the time spent on sample grids and checkpoints,
  which the throughput leaves out and the record reports apart."""

  def __init__(self):
    self.start = time.perf_counter()
    self.steps = 0
    self.sums = None
    self.paused = {"grid_s": 0.0, "checkpoint_s": 0.0, "eval_s": 0.0}
    self.extra = {}  # the held-out loss, when it was measured in the window

  def add(self, sums) -> None:
    self.steps += 1
    self.sums = sums if self.sums is None else self.sums + sums

  @contextlib.contextmanager
  def pause(self, name: str):
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.paused[name] += time.perf_counter() - t0

  def record(self, values, config, flops_per_step: float, peak: float) -> dict:
    """The metrics.jsonl record: window means of loss and grad_norm (over the steps not skipped),
    throughput of the steps alone, the time grids and checkpoints took, and the wall clock."""
    loss_sum, norm_sum, finite = (float(v) for v in jax.device_get(self.sums))
    seconds = time.perf_counter() - self.start - sum(self.paused.values())
    steps_per_s = self.steps / max(seconds, 1e-9)
    mean = lambda total: total / finite if finite else float("nan")
    return {
      "loss": mean(loss_sum),
      "grad_norm": mean(norm_sum),
      "learning_rate": values["learning_rate"],
      "steps_per_s": steps_per_s,
      "images_per_s": steps_per_s * config.train.batch_size,
      "mfu": flops_per_step * steps_per_s / peak,
      "skipped": values["skipped"],
      "window_steps": self.steps,
      **{k: round(v, 3) for k, v in self.paused.items()},
      **self.extra,
      "time": round(time.time(), 3),
    }
