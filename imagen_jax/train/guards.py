"""What stops a run: a stop request (SIGTERM, Ctrl-C, TPU preemption), and divergence (too many
non-finite updates in a row), with the checkpoints of diverged states set aside."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

import jax

from imagen_jax.errors import UserError

log = logging.getLogger(__name__)


class TrainingError(UserError, RuntimeError):
  """A run that cannot go on (non-finite updates, a step that cannot fit in memory)."""


class StopRequests:
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


class Diverged(TrainingError):
  """`bad` non-finite updates in a row up to `step`."""

  def __init__(self, step: int, bad: int):
    super().__init__(f"{bad} non-finite updates in a row up to step {step}")
    self.step, self.bad = step, bad


def divergence_message(e: Diverged, checkpointer) -> str:
  """Sets aside the checkpoints of diverged states and says where to resume from.

  The first non-finite update of the run started from the state of step `e.step - e.bad`;
  skipped updates leave the parameters as they were, so every state from that one on gave
  non-finite losses, and a checkpoint of one of them would diverge again on resume."""
  first_bad = e.step - e.bad
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


def check_finite(metrics, max_bad: int, step: int) -> None:
  """Raises Diverged after `max_bad` non-finite updates in a row."""
  bad = int(metrics["bad_steps"])
  if bad >= max_bad:
    raise Diverged(step, bad)
