"""Training metrics: metrics.jsonl (one JSON object per logged step, with `step` and `loss`),
TensorBoard scalars, image grids with their captions, and the run's config as text and hparams.

Forwarding records to another logger (Weights & Biases, MLflow, ...): pass
`on_metrics=fn` to train.train_and_evaluate; fn(step, record) receives every record written to
metrics.jsonl, on process 0, as it is written."""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import tempfile
import time
import uuid

import numpy as np
from etils import epath

from imagen_jax import paths

log = logging.getLogger(__name__)


class MetricsWriter:
  """Writes metrics.jsonl and TensorBoard events under the workdir (from process 0 only).

  On an object store (gs://, or any URL epath reaches through fsspec) objects cannot be appended
  to: records are kept in memory and metrics.jsonl is rewritten whole, and TensorBoard's events
  are written to a local folder and copied to WORKDIR/tensorboard, at most every
  `upload_seconds`, at every `sync()` (the trainer calls it when a checkpoint is saved, so what
  a resume keeps is uploaded) and on close. They need nothing beyond the filesystem the
  checkpoints use (gcsfs for gs://)."""

  def __init__(
    self,
    workdir,
    *,
    enabled: bool = True,
    step: int = 0,
    upload_seconds: float = 60.0,
    on_metrics=None,
  ):
    """Continues the records of a run resumed at `step` (0: a fresh start); TensorBoard hides
    events past it. `on_metrics(step, record)` also receives every record."""
    self.enabled = enabled
    self.on_metrics = on_metrics
    workdir = epath.Path(paths.absolute(workdir))
    self.path = workdir / "metrics.jsonl"
    self.tensorboard = workdir / "tensorboard"
    self._records: list[dict] = []
    self._tb = None
    self._local_events = None  # the local folder of the events on an object store
    self._upload_seconds, self._uploaded = upload_seconds, time.monotonic()
    if enabled:
      from tensorboardX import SummaryWriter

      self.truncate_after(step)
      events = str(self.tensorboard)
      suffix = ""
      if paths.is_url(workdir):
        self._local_events = pathlib.Path(tempfile.mkdtemp(prefix="imagen-jax-events-"))
        events = str(self._local_events)
        suffix = f".{uuid.uuid4().hex[:8]}"  # two runs in one second must not share a file name
      self._tb = SummaryWriter(events, purge_step=step + 1, filename_suffix=suffix)

  def truncate_after(self, step: int) -> None:
    """Keeps exactly the records up to `step`, the step the run resumes from (0 for a fresh
    start): records past it were written by a run killed after its last checkpoint and are
    written again. A line cut short by a kill mid-write is dropped."""
    if not self.enabled or not self.path.exists():
      return
    kept = []
    for n, line in enumerate(self.path.read_text().splitlines(), 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        record_step = int(record["step"])
      except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("%s:%d: dropping an unreadable line (cut short by a kill?)", self.path, n)
        continue
      if record_step <= step:
        kept.append(record)
    self._records = kept
    self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
    if self._local_events is None:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")
    else:
      self._records.append(record)
    for k, v in record.items():
      if k not in ("step", "time") and isinstance(v, (int, float)):
        self._tb.add_scalar(f"train/{k}", v, step)
    self._flush()
    if self.on_metrics is not None:
      self.on_metrics(int(step), record)

  def write_config(self, step: int, config: dict) -> None:
    """The run's config: as text (the JSON) and as TensorBoard hparams (its scalar leaves)."""
    if not self.enabled:
      return
    from tensorboardX.summary import hparams

    self._tb.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```", step)
    flat = {}

    def walk(prefix, node):
      for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
          walk(name + ".", value)
        elif isinstance(value, (bool, int, float, str)):
          flat[name] = value

    walk("", config)
    writer = self._tb._get_file_writer()
    for summary in hparams(flat, {"train/loss": float("nan")}):
      writer.add_summary(summary)
    self._flush()

  def write_text(self, step: int, name: str, text: str) -> None:
    if self.enabled:
      self._tb.add_text(name, text, step)
      self._flush()

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self._tb.add_image(name, image, step, dataformats="HWC")
      self._flush()

  def _flush(self) -> None:
    self._tb.flush()
    if self._local_events is not None and (
      time.monotonic() - self._uploaded >= self._upload_seconds
    ):
      self.sync()

  def sync(self) -> None:
    """Uploads the records and events to an object-store workdir (nothing to do on a disk)."""
    if not self.enabled or self._local_events is None:
      return
    self._tb.flush()
    self.path.write_text("".join(json.dumps(r) + "\n" for r in self._records))
    self.tensorboard.mkdir(parents=True, exist_ok=True)
    for file in self._local_events.iterdir():
      (self.tensorboard / file.name).write_bytes(file.read_bytes())
    self._uploaded = time.monotonic()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self.sync()
      if self._local_events is not None:
        shutil.rmtree(self._local_events, ignore_errors=True)
      self._tb = None


def _scalar(v):
  v = np.asarray(v)
  if v.dtype == bool:
    return bool(v)
  if np.issubdtype(v.dtype, np.integer):
    return int(v)
  return float(v)
