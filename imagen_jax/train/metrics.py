"""Training metrics: metrics.jsonl (one JSON object per logged step, with `step` and `loss`),
TensorBoard scalars and image grids, and model-FLOPs utilisation against peak FLOP/s."""

from __future__ import annotations

import functools
import json
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from imagen_jax import paths

log = logging.getLogger(__name__)

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


def compiled_bytes_per_device(compiled) -> int | None:
  """Per-device bytes a compiled program needs (arguments + outputs - donated aliases +
  temporaries) by XLA's memory analysis, or None where the backend does not report it."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # not every backend implements it
    return None
  if m is None:
    return None
  return int(
    m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
  )


def grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
  """uint8 [N, H, W, 3] -> one uint8 image with the N images in a grid (2 px gaps)."""
  n, h, w, c = images.shape
  columns = columns or int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / columns))
  out = np.full((rows * (h + 2) + 2, columns * (w + 2) + 2, c), 255, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    out[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w] = image
  return out


class MetricsWriter:
  """Writes metrics.jsonl and TensorBoard events under the workdir (from process 0 only)."""

  def __init__(self, workdir, *, enabled: bool = True, step: int = 0):
    """Continues the records of a run resumed at `step` (0: a fresh start); TensorBoard hides
    events past it."""
    self.enabled = enabled
    workdir = epath.Path(paths.absolute(workdir))
    self.path = workdir / "metrics.jsonl"
    self._records: list[dict] = []
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter

      self.truncate_after(step)
      self._tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=step + 1)

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
    if not paths.is_url(self.path):
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")
    else:  # object stores cannot append: rewrite the file
      self._records.append(record)
      self.path.write_text("".join(json.dumps(r) + "\n" for r in self._records))
    for k, v in record.items():
      if k != "step" and isinstance(v, (int, float)):
        self._tb.add_scalar(f"train/{k}", v, step)
    self._tb.flush()

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self._tb.add_image(name, image, step, dataformats="HWC")
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _scalar(v):
  v = np.asarray(v)
  if v.dtype == bool:
    return bool(v)
  if np.issubdtype(v.dtype, np.integer):
    return int(v)
  return float(v)
