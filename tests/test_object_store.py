"""Workdirs and data on object stores, offline: gs:// served by an in-memory fsspec filesystem
registered under the gs protocol, which etils.epath reaches exactly as it reaches gcsfs.
(Checkpoints go through TensorStore's own GCS driver, which this cannot stand in for.)"""

import io
import json
import logging
import re
import sys

import numpy as np
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem
from helpers import spiece_model
from PIL import Image

from imagen_jax.data import builders, remote
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
  writer = MetricsWriter(gcs, step=0, upload_seconds=3600)
  for step in range(1, 5):
    writer.write(step, {"loss": 1.0 / step})
  assert not (gcs / "metrics.jsonl").exists()  # uploads are throttled, not one per record
  writer.sync()  # as the trainer does when it saves a checkpoint
  assert _steps(gcs) == [1, 2, 3, 4]
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


def test_a_folder_on_the_object_store_is_built_once_into_a_data_dir_there(gcs, tmp_path, caplog):
  """`imagen-jax prepare-data` for a pod: images and captions on gs://, the dataset built once
  and uploaded to a gs:// data_dir, from which every host reads its shard."""
  images = epath.Path("gs://bucket/images")
  images.mkdir(parents=True)
  captions = {f"shape_{i}.png": f"a {c} circle" for i, c in enumerate(["red", "blue", "green"])}
  for name, caption in captions.items():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (40 * len(caption), 0, 0)).save(buffer, format="PNG")
    (images / name).write_bytes(buffer.getvalue())
    (images / name).with_suffix(".txt").write_text(caption)
  data_dir = "gs://bucket/tfds"
  args = dict(path=str(images), min_size=0, max_size=0, data_dir=data_dir)
  builder = builders.prepare_folder(**args)
  assert builder.is_prepared() and "gs://bucket/tfds" in str(builder.data_dir)
  uploaded = [p.name for p in remote.files(data_dir)]
  assert "dataset_info.json" in uploaded and builders.SOURCE_STAMP in uploaded
  assert any(".array_record" in name for name in uploaded)
  # What a host reads (here through a local copy: ArrayRecord's reader is native code that
  # this in-memory store cannot serve) is the whole dataset.
  remote.copy_tree(data_dir, tmp_path / "host")
  local = builders.folder_builder(**{**args, "data_dir": str(tmp_path / "host")})
  source = local.as_data_source(split="train")
  assert sorted(source[i]["caption"].decode() for i in range(len(source))) == sorted(
    captions.values()
  )
  caplog.set_level(logging.INFO)
  caplog.clear()
  builders.prepare_folder(**args)  # unchanged: not built again
  assert "building" not in caplog.text
  (images / "shape_0.txt").write_text("a yellow circle")
  builders.prepare_folder(**args)
  assert re.search(r"gs://bucket/images.*changed", caplog.text)


def test_a_t5x_checkpoint_without_a_vocabulary_takes_t5s_from_the_object_store(
  gcs, tmp_path, monkeypatch
):
  """T5X checkpoints carry no tokenizer: T5's SentencePiece vocabulary is fetched from GCS once
  and cached (here from the in-memory gs://, with HOME in a temporary folder)."""
  import sentencepiece

  from imagen_jax.text import tokenize, tokenizers

  model = spiece_model(["a red circle on a white background"], 20)
  vocabulary = epath.Path("gs://t5-data/vocabs/cc_all.32000/sentencepiece.model")
  vocabulary.parent.mkdir(parents=True)
  vocabulary.write_bytes(model)
  monkeypatch.setattr(tokenizers, "T5_VOCABULARY", str(vocabulary))
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  checkpoint = tmp_path / "checkpoint_1000000"
  checkpoint.mkdir()
  (checkpoint / "checkpoint").write_bytes(b"\x80")  # T5X's state file (an empty msgpack map)
  tokenizer = tokenizers.load_tokenizer(str(checkpoint))
  ids, mask = tokenize(tokenizer, ["a red circle"], max_length=32)
  reference = sentencepiece.SentencePieceProcessor(model_proto=model)
  assert ids[0][mask[0]].tolist() == [*reference.encode("a red circle"), 1]
  assert list((tmp_path / "home" / ".cache" / "imagen_jax" / "vocabularies").iterdir())
