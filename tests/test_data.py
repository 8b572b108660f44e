"""Datasets and the grain pipeline: offline builders, determinism, resumption, sharding,
image-mode conversion, and the precomputed text-embedding store."""

import concurrent.futures
import functools
import json
import logging
import pathlib
import re
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from imagen_jax.configuration import load_config
from imagen_jax.data import builders, input_pipeline, shapes
from imagen_jax.data.store import EmbeddingStore, StoreWriter
from imagen_jax.errors import ConfigError, DataError, PathError
from imagen_jax.text import SHAPES_ENCODER, TextEncoder, load_tokenizer, tokenize
from imagen_jax.text.precompute import encode_text


def demo_config(tmp_path, stage="base", *extra):
  return load_config(
    f"configs/demo.py:{stage}",
    [
      "--config.data.num_examples=48",
      "--config.data.build_size=32",
      f"--config.data.data_dir={tmp_path / 'tfds'}",
      "--config.text.max_length=72",
      *extra,
    ],
  )


def batches(config, n, *, process_index=0, process_count=1, workers=0, global_batch=8, state=None):
  source = input_pipeline.open_source(config)
  tokenizer = load_tokenizer(config.text.encoder)
  transform = input_pipeline.ExampleTransform(
    config, tokenize=functools.partial(tokenize, tokenizer, max_length=config.text.max_length)
  )
  ds = input_pipeline.make_dataset(
    source,
    transform,
    seed=config.seed,
    global_batch=global_batch,
    process_index=process_index,
    process_count=process_count,
    workers=workers,
  )
  it = iter(ds)
  if state is not None:
    it.set_state(state)
  return [next(it) for _ in range(n)], it


def test_shapes_captions_describe_the_picture():
  rng = np.random.default_rng(0)
  scene = shapes.sample_scene(rng, two_shape_prob=0.0)
  shape = scene.shapes[0]
  assert shape.color in scene.caption and shape.kind in scene.caption
  assert scene.caption.endswith(f"on a {scene.background} background")
  image = shapes.render(scene, 64)
  x, y = (int(v * 64) for v in shape.center)
  np.testing.assert_allclose(image[y, x], shapes.COLORS[shape.color], atol=2)
  np.testing.assert_allclose(image[1, 1], shapes.BACKGROUNDS[scene.background], atol=2)
  two = shapes.sample_scene(np.random.default_rng(1), two_shape_prob=1.0)
  assert any(r in two.caption for r in shapes.RELATIONS) and len(two.shapes) == 2


def test_shapes_builder_builds_and_reads_offline(tmp_path):
  config = demo_config(tmp_path)
  source = input_pipeline.open_source(config)
  assert len(source) == 48
  element = source[0]
  assert element["image"].shape == (32, 32, 3) and element["image"].dtype == np.uint8
  assert b"background" in element["caption"]


def test_a_data_dir_that_cannot_be_written_is_named(tmp_path):
  (tmp_path / "a_file").write_text("")
  config = demo_config(tmp_path, "base", f"--config.data.data_dir={tmp_path / 'a_file' / 'tfds'}")
  with pytest.raises(PathError, match=r"a_file/tfds.*data\.data_dir"):
    input_pipeline.open_source(config)


def test_batches_have_the_stage_shapes(tmp_path):
  (base,), _ = batches(demo_config(tmp_path), 1)
  assert base["image"].shape == (8, 16, 16, 3) and base["image"].dtype == np.uint8
  assert base["input_ids"].shape == (8, 72) and base["text_mask"].dtype == bool
  (sr,), _ = batches(demo_config(tmp_path, "sr2", "--config.data.build_size=64"), 1)
  assert sr["image"].shape == (8, 32, 32, 3) and sr["low_res"].shape == (8, 16, 16, 3)
  # The low-res image is the target downsampled.
  np.testing.assert_allclose(
    sr["low_res"].astype(float).mean(), sr["image"].astype(float).mean(), atol=2.0
  )


def test_same_seed_same_batches_and_another_seed_others(tmp_path):
  a, _ = batches(demo_config(tmp_path), 3)
  b, _ = batches(demo_config(tmp_path), 3)
  c, _ = batches(demo_config(tmp_path, "base", "--config.seed=1"), 3)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert not all(np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


@pytest.mark.parametrize("workers", [0, 1])
def test_restored_iterator_state_continues_exactly(tmp_path, workers):
  config = demo_config(tmp_path)
  (_, _), it = batches(config, 2, workers=workers)
  state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
  expected = [next(it) for _ in range(3)]
  resumed, _ = batches(config, 3, workers=workers, state=state)
  for x, y in zip(expected, resumed):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_every_epoch_is_a_new_order_of_the_source_examples(tmp_path):
  """An example's index is its place in the source in every epoch: the text store and the
  caption choice are keyed on it."""
  got, _ = batches(demo_config(tmp_path), 12)  # two epochs: 48 examples, global batch 8
  first, second = (np.concatenate([b["index"] for b in got[e * 6 : (e + 1) * 6]]) for e in (0, 1))
  assert sorted(first) == sorted(second) == list(range(48))
  assert list(first) != list(second)
  ids = {}
  for b in got:
    for i, row in zip(b["index"], b["input_ids"]):
      np.testing.assert_array_equal(ids.setdefault(int(i), row), row)


def test_two_processes_read_disjoint_shards_that_cover_the_data(tmp_path):
  config = demo_config(tmp_path)
  epoch_batches = 48 // 8  # global batch 8, 48 examples
  p0, _ = batches(config, epoch_batches, process_index=0, process_count=2)
  p1, _ = batches(config, epoch_batches, process_index=1, process_count=2)
  i0 = np.concatenate([b["index"] for b in p0])
  i1 = np.concatenate([b["index"] for b in p1])
  assert len(i0) == len(i1) == 24
  assert not set(i0) & set(i1)
  assert set(i0) | set(i1) == set(range(48))
  # The global batch is the single-process batch, row for row.
  single, _ = batches(config, epoch_batches)
  for k in range(epoch_batches):
    np.testing.assert_array_equal(
      np.concatenate([p0[k]["image"], p1[k]["image"]]), single[k]["image"]
    )


def _save(image: Image.Image, path, **kw):
  image.save(path, **kw)
  return path


def _folder_config(tmp_path, folder, *extra):
  return demo_config(
    tmp_path,
    "base",
    "--config.data.name=image_text_folder",
    f"--config.data.path={folder}",
    "--config.data.build_size=0",
    *extra,
  )


def make_folder(root):
  root.mkdir()
  rgb = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
  files = {
    "rgb.jpg": _save(Image.fromarray(rgb), root / "rgb.jpg", quality=95),
    "gray.png": _save(Image.fromarray(rgb[..., 0]), root / "gray.png"),
    "rgba.png": _save(
      Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])), root / "rgba.png"
    ),
    "cmyk.jpg": _save(Image.fromarray(rgb).convert("CMYK"), root / "cmyk.jpg"),
    "palette.gif": _save(Image.fromarray(rgb).convert("P"), root / "palette.gif"),
    "deep.png": _save(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), root / "deep.png"),
    "small.png": _save(Image.fromarray(rgb[:8, :8]), root / "small.png"),
  }
  (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  (root / "truncated.png").write_bytes((root / "rgb.jpg").read_bytes()[:200])
  for name in [*files, "corrupt.jpg", "truncated.png"]:
    (root / name).with_suffix(".txt").write_text(f"a picture called {name}")
  _save(Image.fromarray(rgb), root / "uncaptioned.png")
  return rgb


def test_image_text_folder_converts_modes_and_skips_bad_files(tmp_path, caplog):
  rgb = make_folder(tmp_path / "images")
  config = _folder_config(tmp_path, tmp_path / "images", "--config.data.min_size=16")
  with caplog.at_level(logging.WARNING):
    source = input_pipeline.open_source(config)
  assert "2 unreadable" in caplog.text and "1 too small" in caplog.text
  assert "1 without a caption" in caplog.text and "['uncaptioned.png']" in caplog.text
  by_caption = {source[i]["caption"].decode(): source[i]["image"] for i in range(len(source))}
  assert len(by_caption) == 6
  for name, image in by_caption.items():
    assert image.dtype == np.uint8 and image.shape == (40, 48, 3), name
  gray = by_caption["a picture called gray.png"]
  np.testing.assert_array_equal(gray[..., 0], rgb[..., 0])
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  np.testing.assert_array_equal(by_caption["a picture called deep.png"][..., 0], rgb[..., 0])
  rgba = by_caption["a picture called rgba.png"].astype(int)  # half transparent over white
  np.testing.assert_allclose(rgba, (rgb.astype(int) + 255) / 2, atol=1.5)
  assert np.abs(by_caption["a picture called cmyk.jpg"].astype(int) - rgb).mean() < 12
  assert np.abs(by_caption["a picture called palette.gif"].astype(int) - rgb).mean() < 40


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_image_text_folder_reads_caption_files(tmp_path, kind, caplog):
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(3):
    Image.new("RGB", (20, 20), (i * 80, 0, 0)).save(folder / f"{i}.png")
  if kind == "jsonl":
    (folder / "captions.jsonl").write_text(
      "\n".join(json.dumps({"file": f"{i}.png", "caption": f"red {i}"}) for i in range(3))
    )
  else:
    (folder / "captions.csv").write_text(
      "file,caption\n" + "".join(f"{i}.png,red {i}\n" for i in range(3))
    )
  config = _folder_config(tmp_path, folder, "--config.data.build_size=32")
  with caplog.at_level(logging.WARNING):
    source = input_pipeline.open_source(config)
  assert sorted(source[i]["caption"] for i in range(3)) == [b"red 0", b"red 1", b"red 2"]
  assert "min_size" not in caplog.text  # 20 px pictures for a 16 px stage: no advice


@pytest.mark.parametrize("build_size", [0, 64])
def test_images_a_stage_would_upscale_are_counted_at_every_run(tmp_path, caplog, build_size):
  # Also with build_size 0 (pictures stored at their own size).
  folder = tmp_path / "images"
  folder.mkdir()
  for i, side in enumerate((20, 40, 40, 90)):
    Image.new("RGB", (side + 10, side)).save(folder / f"{i}.png")
    (folder / f"{i}.txt").write_text(f"red {i}")
  size = f"--config.data.build_size={build_size}"
  input_pipeline.open_source(_folder_config(tmp_path, folder, size))  # builds it
  with caplog.at_level(logging.WARNING):
    input_pipeline.open_source(_folder_config(tmp_path, folder, size, "--config.image_size=48"))
  assert re.search(rf"3 of the 4 images of {re.escape(str(folder))}.*48 px", caplog.text)
  assert "--config.data.min_size=48" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):  # an SR stage reads its crops from crop_from px
    input_pipeline.open_source(
      _folder_config(tmp_path, folder, size, "--config.data.crop_from=32", "--config.image_size=8")
    )
  assert "1 of the 4 images" in caplog.text


@pytest.mark.parametrize("kind", ["jsonl", "csv", "txt"])
def test_caption_files_saved_with_a_byte_order_mark_read_as_without(tmp_path, kind):
  # Spreadsheet programs and Windows editors start UTF-8 files with a BOM; the csv header
  # was then '\ufefffile' ("needs a header with the columns 'file' and 'caption'").
  bom = "\ufeff"
  if kind == "jsonl":
    (tmp_path / "captions.jsonl").write_text(bom + json.dumps({"file": "0.png", "caption": "red"}))
  elif kind == "csv":
    (tmp_path / "captions.csv").write_text(bom + "file,caption\n0.png,red\n")
  else:
    Image.new("RGB", (8, 8)).save(tmp_path / "0.png")
    (tmp_path / "0.txt").write_text(bom + "red")
  assert builders.read_captions(tmp_path) == ({"0.png": "red"}, [])


def test_loader_processes_do_not_repeat_third_party_notices(tmp_path, capfd):
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(4):
    Image.new("RGB", (20, 20), (i * 60, 0, 0)).save(folder / f"{i}.png")
    (folder / f"{i}.txt").write_text(f"red {i}")
  config = _folder_config(tmp_path, folder)
  capfd.readouterr()
  (batch,), _ = batches(config, 1, workers=2, global_batch=4)
  assert sorted(batch["index"]) == [0, 1, 2, 3]
  assert "absl" not in capfd.readouterr().err  # each worker reopens the source


def test_a_folder_of_only_unreadable_images_is_a_clear_error(tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(2):
    (folder / f"{i}.png").write_bytes(b"not a picture")
    (folder / f"{i}.txt").write_text("a caption")
  with pytest.raises(DataError, match=r"No usable image.*2 unreadable"):
    input_pipeline.open_source(_folder_config(tmp_path, folder))


def test_folder_without_captions_is_a_clear_error(tmp_path):
  (tmp_path / "empty").mkdir()
  config = _folder_config(tmp_path, tmp_path / "empty")
  with pytest.raises(DataError, match="No captioned images"):
    input_pipeline.open_source(config)


def _red_folder(tmp_path):
  """Three images with sidecar captions 'red 0', 'red 1', 'red 2'."""
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(3):
    Image.new("RGB", (20, 20), (i * 80, 0, 0)).save(folder / f"{i}.png")
    (folder / f"{i}.txt").write_text(f"red {i}")
  return folder


def _captions(source):
  return sorted(source[i]["caption"].decode() for i in range(len(source)))


def test_folder_captions_that_are_not_utf8_skip_their_image_and_are_named(tmp_path, caplog):
  folder = _red_folder(tmp_path)
  (folder / "1.txt").write_bytes(b"caf\xe9 latin-1")
  with caplog.at_level(logging.WARNING):
    source = input_pipeline.open_source(_folder_config(tmp_path, folder))
  assert _captions(source) == ["red 0", "red 2"]
  assert re.search(rf"UTF-8.*{re.escape(str(folder / '1.txt'))}", caplog.text)
  assert "1 caption not UTF-8" in caplog.text


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_caption_files_skip_lines_that_are_not_utf8_and_names_outside_the_folder(
  tmp_path, kind, caplog
):
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(3):
    Image.new("RGB", (20, 20), (i * 80, 0, 0)).save(folder / f"{i}.png")
  Image.new("RGB", (20, 20)).save(tmp_path / "secret.png")
  rows = [(f"{i}.png", f"red {i}".encode()) for i in range(3)]
  rows[1] = ("1.png", b"caf\xe9")
  rows += [("../secret.png", b"outside"), (str(tmp_path / "secret.png"), b"absolute")]
  if kind == "jsonl":
    text = b"\n".join(
      b'{"file": "%s", "caption": "%s"}' % (name.encode(), caption) for name, caption in rows
    )
    (folder / "captions.jsonl").write_bytes(text)
  else:
    text = b"file,caption\n" + b"".join(b"%s,%s\n" % (n.encode(), c) for n, c in rows)
    (folder / "captions.csv").write_bytes(text)
  with caplog.at_level(logging.WARNING):
    source = input_pipeline.open_source(_folder_config(tmp_path, folder))
  assert _captions(source) == ["red 0", "red 2"]
  assert re.search(rf"UTF-8.*{re.escape(str(folder / f'captions.{kind}'))}:\d", caplog.text)
  assert "1 caption not UTF-8" in caplog.text and "2 outside the folder" in caplog.text


def test_a_folder_changed_after_its_build_is_built_again(tmp_path, caplog):
  folder = _red_folder(tmp_path)
  config = _folder_config(tmp_path, folder)
  assert len(input_pipeline.open_source(config)) == 3
  assert len(input_pipeline.open_source(config)) == 3  # unchanged: reused
  Image.new("RGB", (20, 20)).save(folder / "3.png")
  (folder / "3.txt").write_text("black")
  with caplog.at_level(logging.WARNING):
    assert _captions(input_pipeline.open_source(config)) == ["black", "red 0", "red 1", "red 2"]
  assert re.search(rf"{re.escape(str(folder))}.*changed", caplog.text)
  (folder / "0.txt").unlink()
  (folder / "2.txt").write_text("edited")
  assert _captions(input_pipeline.open_source(config)) == ["black", "edited", "red 1"]


def test_an_unknown_dataset_name_suggests_close_names_in_one_line(tmp_path):
  config = demo_config(tmp_path, "base", "--config.data.name=imagen_shape")
  with pytest.raises(ConfigError, match="Did you mean imagen_shapes") as error:
    input_pipeline.open_source(config)
  config = demo_config(tmp_path, "base", "--config.data.name=cifar100x")
  with pytest.raises(ConfigError, match="Did you mean cifar100") as error:
    input_pipeline.open_source(config)
  assert "\n" not in str(error.value) and len(str(error.value)) < 300


class TinyCaptions(tfds.core.GeneratorBasedBuilder):
  """A stand-in for coco_captions: several captions per image under captions/text."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": builders.PILImage(shape=(None, None, 3)),
          "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(8):
      image = np.full((24, 30, 3), i * 20, np.uint8)
      yield i, {"image": image, "captions": {"text": [f"image {i} caption {j}" for j in range(3)]}}


def test_any_tfds_image_caption_dataset_with_a_caption_picked_by_seed(tmp_path):
  TinyCaptions(data_dir=str(tmp_path / "tfds"), file_format="array_record").download_and_prepare()
  config = demo_config(
    tmp_path, "base", "--config.data.name=tiny_captions", "--config.data.text_key=captions/text"
  )
  source = input_pipeline.open_source(config)
  transform = input_pipeline.ExampleTransform(config)
  picks = [transform.caption({**source[i], "index": i}) for i in range(8)]
  assert picks == [transform.caption({**source[i], "index": i}) for i in range(8)]
  assert len({p.split(" caption ")[1] for p in picks}) > 1  # not always the first caption
  (batch,), _ = batches(config, 1)
  assert batch["image"].shape == (8, 16, 16, 3)


def test_unprepared_tfds_dataset_says_how_to_build_it(tmp_path):
  config = demo_config(tmp_path, "base", "--config.data.name=coco_captions")
  with pytest.raises(ConfigError, match="tfds build coco_captions"):
    input_pipeline.open_source(config)


def test_encode_text_store_matches_the_encoder_and_resumes(tmp_path):
  config = demo_config(tmp_path)
  encoder = TextEncoder.builtin(SHAPES_ENCODER, max_length=72)
  full = encode_text(config, tmp_path / "store", batch_size=16, encoder=encoder, progress=False)
  # An interrupted run: 16 rows written, then the job is started again.
  source = input_pipeline.open_source(config)
  writer = StoreWriter(
    tmp_path / "partial",
    encoder=config.text.encoder,
    max_length=72,
    dim=64,
    num_examples=48,
    dataset="imagen_shapes/32px_48_seed0/1.2.0",
  )
  rows = [full.get(i) for i in range(16)]
  writer.write(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))
  with pytest.raises(DataError, match="incomplete"):
    EmbeddingStore(tmp_path / "partial")
  resumed = encode_text(
    config, tmp_path / "partial", batch_size=16, encoder=encoder, progress=False
  )
  for i in range(48):
    np.testing.assert_array_equal(resumed.get(i)[0], full.get(i)[0])
  # The stored row equals the encoder's output for that example's caption.
  caption = source[5]["caption"].decode()
  emb, mask = encoder([caption])
  np.testing.assert_allclose(full.get(5)[0].astype(np.float32), np.asarray(emb[0]), atol=2e-2)
  np.testing.assert_array_equal(full.get(5)[1], np.asarray(mask[0]))
  with pytest.raises(DataError, match="does not fit"):
    full.check_matches(encoder="other", max_length=72, dim=64, num_examples=48)


def test_encode_text_on_a_complete_store_does_not_load_the_encoder(tmp_path, monkeypatch):
  config = demo_config(tmp_path)
  encoder = TextEncoder.builtin(SHAPES_ENCODER, max_length=72)
  encode_text(config, tmp_path / "store", batch_size=48, encoder=encoder, progress=False)

  def loading(*args, **kwargs):
    raise AssertionError("the encoder was loaded for a complete store")

  monkeypatch.setattr(TextEncoder, "from_pretrained", loading)
  again = encode_text(config, tmp_path / "store", progress=False)
  assert len(again) == 48
  # A complete store of another encoder is not taken for this one's.
  config.text.encoder = "builtin:byt5-tiny"
  with pytest.raises(AssertionError, match="was loaded"):
    encode_text(config, tmp_path / "store", progress=False)


def test_pipeline_reads_text_embeddings_from_the_store(tmp_path):
  config = demo_config(tmp_path)
  store = encode_text(
    config,
    tmp_path / "store",
    batch_size=48,
    encoder=TextEncoder.builtin(SHAPES_ENCODER, max_length=72),
    progress=False,
  )
  source = input_pipeline.open_source(config)
  transform = input_pipeline.ExampleTransform(config, store=store)
  it = iter(input_pipeline.make_dataset(source, transform, seed=0, global_batch=16))
  for _ in range(4):  # into the second epoch (48 examples)
    batch = next(it)
    assert batch["text_emb"].shape == (16, 72, 64) and "input_ids" not in batch
    for row, index in enumerate(batch["index"]):
      np.testing.assert_array_equal(batch["text_emb"][row], store.get(int(index))[0])


def test_store_is_safe_to_open_from_many_loader_threads(tmp_path, monkeypatch):
  writer = StoreWriter(
    tmp_path / "store", encoder="e", max_length=3, dim=2, num_examples=4, dataset="d"
  )
  emb = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
  writer.write(emb, np.ones((4, 3), bool))
  store = EmbeddingStore(tmp_path / "store")
  # The first thread to open the store pauses between its two memory maps while a second thread
  # reads: the interleaving that grain's prefetch threads produce.
  first_in, second_done = threading.Event(), threading.Event()
  real_load = np.load

  def slow_load(path, *args, **kwargs):
    if pathlib.Path(path).name == "mask.npy" and not first_in.is_set():
      first_in.set()
      second_done.wait(timeout=10)
    return real_load(path, *args, **kwargs)

  monkeypatch.setattr(np, "load", slow_load)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    first = pool.submit(store.get, 1)
    first_in.wait(timeout=10)
    second = pool.submit(store.get, 2)
    try:
      second_row = second.result(timeout=10)
    finally:
      second_done.set()
    first_row = first.result(timeout=10)
  np.testing.assert_array_equal(first_row[0].astype(np.float32), emb[1])
  np.testing.assert_array_equal(second_row[0].astype(np.float32), emb[2])
  assert first_row[1].all() and second_row[1].all()


def test_tfds_notices_about_this_packages_own_choices_are_dropped(caplog):
  # A notebook that trains through the Python API saw "Using custom data configuration:
  # ShapesConfig(...)" and an OpenCV advertisement at every run; other warnings still pass.
  from absl import logging as absl_logging

  with caplog.at_level(logging.WARNING):
    absl_logging.warning("Using custom data configuration: %s", "ShapesConfig()")
    absl_logging.warning("OpenCV is not installed. We recommend using OpenCV ...")
    absl_logging.warning("something else")
  assert [r.getMessage() for r in caplog.records] == ["something else"]


def test_folder_pictures_are_stored_upright_and_jpeg_as_jpeg(tmp_path):
  """A JPEG kept as it is is stored as its own bytes, a resized one as JPEG, a PNG as PNG (PNG
  made photos 5 times larger and 6 times slower to decode); a camera picture with an EXIF
  rotation is stored the way viewers show it."""
  folder = tmp_path / "images"
  folder.mkdir()
  rng = np.random.default_rng(0)
  smooth = np.asarray(
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((48, 32)), np.uint8
  )
  Image.fromarray(smooth).save(folder / "kept.jpg", quality=90)
  Image.fromarray(np.repeat(np.repeat(smooth, 2, 0), 2, 1)).save(folder / "large.jpg", quality=90)
  Image.fromarray(smooth).save(folder / "lossless.png")
  exif = Image.Exif()
  exif[builders.ORIENTATION_TAG] = 6  # shown turned 90 degrees clockwise
  Image.fromarray(smooth).save(folder / "camera.jpg", quality=90, exif=exif)
  for name in ("kept", "large", "lossless", "camera"):
    (folder / f"{name}.txt").write_text(name)
  config = _folder_config(tmp_path, folder, "--config.data.build_size=32")
  stored = input_pipeline.open_source(config, skip_images=True)
  by_caption = {stored[i]["caption"].decode(): stored[i]["image"] for i in range(4)}
  assert by_caption["kept"] == (folder / "kept.jpg").read_bytes()
  assert by_caption["large"][:2] == b"\xff\xd8"  # a JPEG of 32 px
  assert by_caption["lossless"][:4] == b"\x89PNG"
  decoded = input_pipeline.open_source(config)
  pictures = {decoded[i]["caption"].decode(): decoded[i]["image"] for i in range(4)}
  assert pictures["large"].shape == (32, 48, 3)
  assert np.abs(pictures["large"].astype(int) - smooth).mean() < 3
  np.testing.assert_array_equal(pictures["lossless"], smooth)
  upright = np.rot90(np.asarray(Image.open(folder / "camera.jpg")), k=-1)  # clockwise
  assert pictures["camera"].shape == (48, 32, 3)
  assert np.abs(pictures["camera"].astype(int) - upright).mean() < 3
