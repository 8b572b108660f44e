"""orbax checkpoints of a training run, and the one owner of their format:

  WORKDIR/checkpoints/STEP/state    the TrainState (params, EMA params, optimizer state, ...)
  WORKDIR/checkpoints/STEP/data     the data iterator state of every process (grain)
  WORKDIR/checkpoints/STEP/config   the config, as JSON

Saves are asynchronous and atomic (a save interrupted by a crash or a kill leaves no checkpoint
behind); a restore that fails falls back to the previous checkpoint, and a run whose checkpoints
all fail to restore stops with an error instead of starting over. `checkpoint_dirs`,
`read_config` and `restore_ema` read a checkpoint for sampling, without the trainer.
"""

from __future__ import annotations

import json
import logging
import time

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from imagen_jax import parallel, paths
from imagen_jax.configuration import stage_defaults
from imagen_jax.errors import CheckpointError, ConfigError, InputError, MissingPath, short_error
from imagen_jax.models import unet_factory
from imagen_jax.train.state import unsound_reason

log = logging.getLogger(__name__)

# Config fields that may change when a run resumes: how long it runs, how often it logs, saves and
# samples, how it is spread over devices, its learning-rate schedule, and where it finds data it
# already uses. Any other difference changes what the model or its data mean (architecture, noise
# schedule, objective, text encoder, dataset, seed, batch size, optimizer), so a checkpoint made
# under it cannot continue, and a resume refuses it. Dotted prefixes cover whole sections.
RESUMABLE_CHANGES = (
  "train.steps",
  "train.checkpoint_every",
  "train.keep_checkpoints",
  "train.log_every",
  "train.sample_every",
  "train.max_bad_steps",
  "train.compile_memory_check",
  "train.learning_rate",
  "train.warmup_steps",
  "train.decay_steps",
  "train.grad_accum",
  "train.compute_dtype",
  # How the U-Net computes, not what: recomputation, attention chunks and kernels.
  "unet.remat",
  "unet.attn_chunk_size",
  "unet.attn_impl",
  "data.data_dir",
  "text.store",
  "sample",
  "mesh",
  "distributed",
)


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _resumable(key: str) -> bool:
  return any(key == p or key.startswith(p + ".") for p in RESUMABLE_CHANGES)


def config_differences(saved: dict, current: dict) -> tuple[list[str], list[str]]:
  """(differences that refuse a resume, differences allowed on resume), as
  'key: checkpoint -> now' lines. A field that a checkpoint of an older version lacks counts as
  its default."""
  defaults = _flatten(json.loads(stage_defaults().to_json()))
  kind = saved.get("unet", {}).get("type")
  if kind in unet_factory.UNET_TYPES:  # the U-Net's fields default to its module's
    defaults.update(_flatten({"unet": json.loads(json.dumps(unet_factory.unet_defaults(kind)))}))
  saved, current = _flatten(saved), _flatten(current)
  refused, allowed = [], []
  for key in sorted(set(saved) | set(current)):
    a = saved.get(key, defaults.get(key, "(unset)"))
    b = current.get(key, "(unset)")
    if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
      (allowed if _resumable(key) else refused).append(f"{key}: {a!r} -> {b!r}")
  return refused, allowed


class ConfigChangeError(ConfigError):
  """A resume under a config that changes what the model or its data mean."""


def _refuse_changes(saved: dict, current: dict, directory) -> list[str]:
  """Raises ConfigChangeError for refused differences; returns the allowed ones."""
  what = lambda c: f"stage {c.get('stage')!r} at {c.get('image_size')} px"
  if what(saved) != what(current):  # another stage altogether: its differences say little more
    raise ConfigChangeError(
      f"The checkpoints in {directory} are of {what(saved)}; this config trains {what(current)}: "
      "give each stage its own --workdir."
    )
  refused, allowed = config_differences(saved, current)
  if refused:
    shown = "; ".join(refused[:_SHOWN])
    more = f"; and {len(refused) - _SHOWN} more" if len(refused) > _SHOWN else ""
    raise ConfigChangeError(
      f"The checkpoints in {directory} were made with another config; resume with the original "
      f"values or start a new --workdir. Differences (checkpoint -> now): {shown}{more}"
    )
  return allowed


_SHOWN = 12  # differences named in a refusal


def checkpoint_dirs(path) -> list[epath.Path]:
  """The checkpoint step directories of a workdir (newest first), or [path] for one checkpoint."""
  path = epath.Path(paths.absolute(path))
  if not path.exists():
    raise MissingPath(f"Stage directory {path} does not exist.")
  if not path.is_dir():
    raise InputError(
      f"{path} is a file; a stage is a training --workdir or one of its checkpoints/N folders."
    )
  if (path / "state").exists() and (path / "config").exists():
    return [path]
  root = path / "checkpoints" if (path / "checkpoints").exists() else path
  steps = sorted((int(p.name) for p in root.iterdir() if p.name.isdigit()), reverse=True)
  if not steps:
    raise MissingPath(
      f"No checkpoints in {path}: pass a training --workdir (or one of its checkpoints/N "
      "directories) of a run that saved at least one checkpoint."
    )
  return [root / str(step) for step in steps]


def read_config(step_dir) -> dict:
  """The config a checkpoint was saved with, as a dict."""
  step_dir = epath.Path(step_dir)
  if not (step_dir / "config").exists():
    raise MissingPath(f"{step_dir} has no saved config; it is not an imagen_jax checkpoint.")
  return ocp.JsonCheckpointHandler().restore(step_dir / "config", args=ocp.args.JsonRestore())


def restore_ema(step_dir, abstract_params):
  """The EMA parameters of a checkpoint, shaped and sharded like `abstract_params` (a tree of
  ShapeDtypeStructs with shardings); nothing else of the state is read."""
  item = {"ema_params": abstract_params}
  restored = ocp.PyTreeCheckpointer().restore(
    epath.Path(step_dir) / "state",
    args=ocp.args.PyTreeRestore(
      item=item,
      restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      partial_restore=True,
    ),
  )
  return restored["ema_params"]


class Checkpointer:
  """The checkpoints under WORKDIR/checkpoints; keeps the newest `keep`."""

  def __init__(self, workdir, *, keep: int, use_async: bool = True):
    self.directory = epath.Path(paths.absolute(workdir)) / "checkpoints"
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=use_async, create=True
    )
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=options,
      item_handlers={
        "state": ocp.StandardCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
        "config": ocp.JsonCheckpointHandler(),
      },
    )

  def save(self, step: int, state, data_iterator, config_dict: dict) -> bool:
    """Starts saving `state` (a TrainState) as checkpoint `step`; False, with a warning, when the
    state is unsound (train.state.unsound_reason): a checkpoint is always one to resume from."""
    reason = unsound_reason(state)
    if reason is not None:
      log.warning("not saving a checkpoint at step %d: %s", step, reason)
      return False
    return self.manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        config=ocp.args.JsonSave(config_dict),
      ),
      force=True,
    )

  def steps(self) -> list[int]:
    """The steps of the finished checkpoints (saves in flight are waited for)."""
    self.manager.wait_until_finished()
    return sorted(self.manager.all_steps())

  def _saved_config(self, step: int) -> dict:
    return read_config(self.directory / str(step))

  def check_config(self, config_dict: dict) -> None:
    """Raises ValueError when the newest readable checkpoint was made under a config that differs
    from `config_dict` in a field that may not change on resume; logs the allowed changes.
    Cheap: run it before building data or compiling."""
    for step in sorted(self.steps(), reverse=True):
      try:
        saved = self._saved_config(step)
      except Exception:  # a damaged checkpoint: restore() reports it
        continue
      allowed = _refuse_changes(saved, config_dict, self.directory)
      if allowed:
        log.info("resuming with changed settings (checkpoint -> now): %s", "; ".join(allowed))
      return

  def restore(self, abstract_state, data_iterator, config_dict: dict):
    """(state, step) from the newest checkpoint that restores, or None when there is none.

    Newer checkpoints that cannot be read are moved to WORKDIR/damaged_checkpoints. Raises
    ValueError when the checkpoint's config refuses `config_dict` (check_config), RuntimeError
    when checkpoints exist but none can be restored.
    """
    steps = sorted(self.steps(), reverse=True)
    errors = []
    for step in steps:
      try:
        _refuse_changes(self._saved_config(step), config_dict, self.directory)
        restored = self.manager.restore(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(data_iterator),
          ),
        )
      except ConfigChangeError:
        raise
      except Exception as e:  # orbax, tensorstore and grain raise many types for damaged files
        errors.append(f"step {step}: {short_error(e)}")
        log.warning("cannot read the checkpoint of %s; trying an older one", errors[-1])
        continue
      if errors:
        moved = self.set_aside([s for s in steps if s > step], "damaged_checkpoints")
        log.warning(
          "restored the checkpoint at step %d; %d damaged newer one(s) moved to %s",
          step,
          len(errors),
          moved,
        )
      return restored["state"], step
    if steps:
      raise CheckpointError(
        f"None of the checkpoints in {self.directory} can be restored, so the run will not "
        "start from scratch over them; move the directory away to start anew.\n  "
        + "\n  ".join(errors)
      )
    return None

  def set_aside(self, steps: list[int], folder: str) -> epath.Path:
    """Moves the checkpoints of `steps` to WORKDIR/`folder` (process 0; nothing is deleted), so
    the run can write those steps again and a resume does not pick them. Returns the folder."""
    target = self.directory.parent / folder
    self.manager.wait_until_finished()
    if jax.process_index() == 0 and steps:
      target.mkdir(parents=True, exist_ok=True)
      for step in steps:
        source = self.directory / str(step)
        if source.exists():
          source.rename(target / f"{step}_{int(time.time())}")
    parallel.sync("checkpoints set aside")
    self.manager.reload()
    return target

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
