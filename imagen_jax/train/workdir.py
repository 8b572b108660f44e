"""A training workdir: made ready for writing, and locked for one run at a time.

Two trainers on one workdir would interleave their metrics and overwrite each other's
checkpoints, so a run holds `WORKDIR/train.lock` from start to end (process 0 of a multi-host
run holds it for all). On a local or network filesystem that is an advisory `flock`, which the
kernel drops when the process dies however it dies, so a killed run never blocks the next one.
Object stores (gs://, s3://) have no locks: there the file is a lease that the holder renews
every minute, and one not renewed for `LEASE_SECONDS` (or left by a dead process of this host)
is taken over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time

from etils import epath

from imagen_jax import paths
from imagen_jax.errors import InputError, UserError

log = logging.getLogger(__name__)
LOCK_NAME = "train.lock"
LEASE_SECONDS = 300.0
RENEW_SECONDS = 60.0


class WorkdirBusyError(UserError, RuntimeError):
  """Another live run holds the workdir's lock."""


def prepare(workdir) -> epath.Path:
  """The workdir as an absolute path, created if needed; a clear error when it is a file or
  cannot be written."""
  workdir = epath.Path(paths.absolute(workdir))
  if workdir.exists() and not workdir.is_dir():
    raise InputError(f"The workdir {workdir} is a file; give a directory for --workdir.")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise InputError(f"Cannot create the workdir {workdir} ({e.strerror or e}).") from None
  if not paths.is_url(workdir):
    probe = workdir / f".write_test_{os.getpid()}"
    try:  # a real write: permissions, read-only mounts and full disks all show here
      probe.write_text("")
      probe.unlink()
    except OSError as e:
      raise InputError(
        f"The workdir {workdir} is not writable ({e.strerror or e}); choose another --workdir "
        "or fix its permissions."
      ) from None
  return workdir


def _holder() -> dict:
  return {
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    "renewed": time.time(),
  }


def _describe(holder: dict) -> str:
  return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, someone else's
    return True
  return True


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds the workdir for one run; raises WorkdirBusyError when a
  live run holds it. `lease=True` forces the object-store lease (for tests on local paths)."""

  def __init__(self, workdir, *, lease: bool | None = None):
    self.path = epath.Path(paths.absolute(workdir)) / LOCK_NAME
    self.lease = paths.is_url(self.path) if lease is None else lease
    self._file = None
    self._stop = threading.Event()
    self._renewer = None

  def _busy(self, holder: dict) -> WorkdirBusyError:
    return WorkdirBusyError(
      f"Another training run ({_describe(holder)}) is using {self.path.parent}; wait for it to "
      "finish, stop it, or give another --workdir."
    )

  def acquire(self) -> None:
    if self.lease:
      self._acquire_lease()
    else:
      self._acquire_flock()

  def _acquire_flock(self) -> None:
    import fcntl

    f = open(self.path, "a+")  # noqa: SIM115 (held open for the run)
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      try:
        holder = json.loads(f.read() or "{}")
      except json.JSONDecodeError:
        holder = {}
      f.close()
      raise self._busy(holder) from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps(_holder()))
    f.flush()
    self._file = f

  def _acquire_lease(self) -> None:
    if self.path.exists():
      try:
        holder = json.loads(self.path.read_text())
      except (json.JSONDecodeError, OSError):
        holder = {}
      fresh = time.time() - float(holder.get("renewed", 0)) < LEASE_SECONDS
      dead_here = holder.get("host") == socket.gethostname() and not _pid_alive(
        int(holder.get("pid", -1))
      )
      if fresh and not dead_here:
        raise self._busy(holder)
      log.warning("taking over the stale lock %s (%s)", self.path, _describe(holder))
    self._me = _holder()
    self.path.write_text(json.dumps(self._me))
    self._renewer = threading.Thread(target=self._renew, daemon=True, name="workdir-lease")
    self._renewer.start()

  def _renew(self) -> None:
    while not self._stop.wait(RENEW_SECONDS):
      self._me["renewed"] = time.time()
      try:
        self.path.write_text(json.dumps(self._me))
      except OSError as e:  # a transient store error: the next renewal tries again
        log.warning("could not renew %s: %s", self.path, e)

  def release(self) -> None:
    if self._file is not None:
      self._file.close()  # closing drops the flock; the file stays, harmlessly
      self._file = None
    if self._renewer is not None:
      self._stop.set()
      self._renewer.join()
      self._renewer = None
      with contextlib.suppress(OSError):
        self.path.unlink()

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()


@contextlib.contextmanager
def hold(workdir):
  """Holds the workdir's lock for the run: process 0 takes it for all processes, and every
  process raises WorkdirBusyError when it is taken."""
  import jax

  lock, error = None, None
  if jax.process_index() == 0:
    lock = WorkdirLock(workdir)
    try:
      lock.acquire()
    except WorkdirBusyError as e:
      lock, error = None, e
  if jax.process_count() > 1:
    import numpy as np
    from jax.experimental import multihost_utils

    busy = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if busy and error is None:
      error = WorkdirBusyError(
        f"Another training run is using {workdir} (process 0 names it); give another --workdir."
      )
  if error is not None:
    raise error
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
