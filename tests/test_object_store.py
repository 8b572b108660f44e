"""Workdirs on object stores, offline: gs:// served by an in-memory fsspec filesystem registered
under the gs protocol, which etils.epath reaches exactly as it reaches gcsfs. (Checkpoints go
through TensorStore's own GCS driver, which this cannot stand in for.)"""

import json
import sys

import numpy as np
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

from imagen_jax.images import grid
from imagen_jax.train import workdir as workdir_lib
from imagen_jax.train.metrics import MetricsWriter


class InMemoryGCS(MemoryFileSystem):
  protocol = ("gs", "gcs")
  root_marker = ""
  store = {}  # its own objects, apart from memory://
  pseudo_dirs = [""]


@pytest.fixture
def gcs(monkeypatch):
  # fsspec keeps imported filesystem classes in this dict; monkeypatch restores it afterwards.
  registry = sys.modules["fsspec.registry"]._registry
  for name in ("gs", "gcs"):
    monkeypatch.setitem(registry, name, InMemoryGCS)
  InMemoryGCS.store.clear()
  InMemoryGCS.clear_instance_cache()
  yield epath.Path("gs://bucket/runs/base")
  InMemoryGCS.clear_instance_cache()


def _steps(workdir):
  return [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_metrics_on_an_object_store_survive_resume_as_on_disk(gcs):
  writer = MetricsWriter(gcs, step=0)
  for step in range(1, 5):
    writer.write(step, {"loss": 1.0 / step})
  writer.close()
  # A run killed after its checkpoint of step 2 resumes there: steps 3-4 are written again.
  writer = MetricsWriter(gcs, step=2)
  for step in range(3, 7):
    writer.write(step, {"loss": 1.0 / step})
  writer.close()
  assert _steps(gcs) == [1, 2, 3, 4, 5, 6]


def test_tensorboard_events_and_sample_grids_reach_the_object_store(gcs):
  for start in (0, 3):  # two runs: each keeps its own events file
    writer = MetricsWriter(gcs, step=start)
    writer.write(start + 1, {"loss": 0.5})
    writer.write_image(start + 1, "samples", grid(np.zeros((4, 8, 8, 3), np.uint8)))
    writer.close()
  events = sorted((gcs / "tensorboard").iterdir())
  assert len(events) == 2 and all(e.name.startswith("events.out.tfevents") for e in events)
  assert all(len(e.read_bytes()) > 100 for e in events)


def test_a_workdir_on_an_object_store_is_prepared_and_leased(gcs):
  workdir = workdir_lib.prepare(gcs)
  busy = pytest.raises(workdir_lib.WorkdirBusyError)
  with workdir_lib.hold(workdir), busy, workdir_lib.hold(workdir):  # a second run is refused
    pass
  with workdir_lib.hold(workdir):  # released: the next run takes it
    pass
