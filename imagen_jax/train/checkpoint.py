"""orbax checkpoints of a training run: the train state, the data iterator state of every
process, and the config. Saves are asynchronous and atomic (a save interrupted by a crash or a
kill leaves no checkpoint behind); a restore that fails falls back to the previous checkpoint,
and a run whose checkpoints all fail to restore stops with an error instead of starting over."""

from __future__ import annotations

import json
import logging
import time

import grain
import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger(__name__)

# Config fields that fix the shapes and meaning of the state: a checkpoint made with other values
# cannot continue under this config.
STRUCTURAL_KEYS = (
  "stage",
  "image_size",
  "low_res_size",
  "unet",
  "text.dim",
  "text.max_length",
  "diffusion.schedule",
  "diffusion.objective",
  "train.optimizer",
  "train.weight_decay",
  "train.clip_norm",
)


def _lookup(d: dict, dotted: str):
  for part in dotted.split("."):
    d = d.get(part) if isinstance(d, dict) else None
  return d


def config_differences(saved: dict, current: dict) -> list[str]:
  """The structural fields whose values differ, as 'key: saved -> current' lines."""
  out = []
  for key in STRUCTURAL_KEYS:
    a, b = _lookup(saved, key), _lookup(current, key)
    if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
      out.append(f"{key}: {a!r} (checkpoint) vs {b!r} (now)")
  return out


class Checkpointer:
  """Saves every `every` steps (and on demand), keeps the newest `keep`."""

  def __init__(self, workdir, *, every: int, keep: int, use_async: bool = True):
    self.directory = epath.Path(workdir) / "checkpoints"
    self.every = every
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

  def save(self, step: int, state, data_iterator, config_dict: dict, *, force=False) -> bool:
    """Saves at multiples of `every` (or when forced); True when a save was started."""
    if not force and step % self.every:
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
    return sorted(self.manager.all_steps())

  def restore(self, abstract_state, data_iterator, config_dict: dict):
    """(state, step) from the newest checkpoint that restores, or None when there is none.

    Raises ValueError when the checkpoint's config differs structurally from `config_dict`,
    RuntimeError when checkpoints exist but none can be restored.
    """
    steps = sorted(self.steps(), reverse=True)
    errors = []
    for step in steps:
      try:
        saved = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        diff = config_differences(saved["config"], config_dict)
        if diff:
          raise ValueError(
            f"The checkpoints in {self.directory} were made with another config; "
            "continue with the original config or start in a new --workdir. Differences: "
            + "; ".join(diff)
          )
        restored = self.manager.restore(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(data_iterator),
          ),
        )
      except ValueError as e:
        if "another config" in str(e):
          raise
        errors.append(f"step {step}: {e}")
        log.warning(
          "checkpoint at step %d could not be restored (%s); trying an older one", step, e
        )
        continue
      except Exception as e:  # orbax, tensorstore and grain raise many types for damaged files
        errors.append(f"step {step}: {type(e).__name__}: {e}")
        log.warning(
          "checkpoint at step %d could not be restored (%s); trying an older one", step, e
        )
        continue
      if errors:
        self._set_aside([s for s in steps if s > step])
        log.warning(
          "restored the checkpoint at step %d after %d damaged newer one(s), moved to %s",
          step,
          len(errors),
          self.directory.parent / "damaged_checkpoints",
        )
      return restored["state"], step
    if steps:
      raise RuntimeError(
        f"None of the checkpoints in {self.directory} (steps {steps}) could be restored; "
        "refusing to start from scratch. Move the directory away to start a new run. "
        "Errors: " + " | ".join(errors)
      )
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged checkpoints out of the manager's way (to WORKDIR/damaged_checkpoints) so
    the run can write those steps again; nothing is deleted."""
    target = self.directory.parent / "damaged_checkpoints"
    target.mkdir(parents=True, exist_ok=True)
    for step in steps:
      source = self.directory / str(step)
      if source.exists():
        source.rename(target / f"{step}_{int(time.time())}")
    self.manager.reload()

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
