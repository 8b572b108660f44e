"""The input pipeline: a TFDS ArrayRecord data source through grain, deterministic and resumable.

Global stream: the source, each example tagged with its record index, shuffled globally by seed
(a new permutation every epoch), repeated forever, and transformed per position with a
position-seeded RNG (decode, resize, crop, SR low-res, tokens or stored text embeddings).
Process p of n reads rows [k*B + p*b, k*B + (p+1)*b) of global batch k (B = n*b), so the global
batch is the same whatever the number of processes, and processes read disjoint data.
Decoding and resizing run in grain worker processes when `data.workers` > 0.

A local batch is a dict of numpy arrays:
  image      uint8 [b, S, S, 3]        the target at the stage's training resolution
  low_res    uint8 [b, s, s, 3]        SR stages: the target downsampled (antialiased)
  index      int64 [b]                 record index in the source (keys the embedding store)
  input_ids  int32 [b, L], text_mask bool [b, L]     when the text is encoded in the train step
  text_emb   bfloat16 [b, L, D], text_mask bool [b, L]  with a precomputed embedding store
"""

from __future__ import annotations

import difflib
import functools
import logging

import grain
import numpy as np

from imagen_jax import images, logs, paths
from imagen_jax.data import builders, remote
from imagen_jax.errors import ConfigError, MissingPath, short_error

log = logging.getLogger(__name__)


def resize_shortest_side(image: np.ndarray, size: int) -> np.ndarray:
  """Antialiased (PIL bicubic) resize so that the shortest side is `size`."""
  h, w = image.shape[:2]
  if min(h, w) == size:
    return image
  scale = size / min(h, w)
  return images.antialiased_resize(
    image, (max(size, round(w * scale)), max(size, round(h * scale)))
  )


def crop(image: np.ndarray, size: int, rng: np.random.Generator | None) -> np.ndarray:
  """A size x size crop: random when rng is given, else centred."""
  h, w = image.shape[:2]
  if rng is None:
    top, left = (h - size) // 2, (w - size) // 2
  else:
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
  return image[top : top + size, left : left + size]


def _get(element: dict, key: str):
  for part in key.split("/"):
    element = element[part]
  return element


def _text(value, rng: np.random.Generator) -> str:
  """A caption from a text feature: bytes, str, or a sequence of them (one picked by rng)."""
  if (isinstance(value, np.ndarray) and value.ndim > 0) or isinstance(value, (list, tuple)):
    value = value[int(rng.integers(len(value)))] if len(value) else b""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class ExampleTransform:
  """One source element (decoded by the tfds data source) -> one training example (see module
  docstring). Picklable, so it runs in grain worker processes."""

  def __init__(self, config, *, tokenize=None, store=None):
    """`tokenize` (picklable): [caption] -> (input_ids [1, L], mask [1, L]), when the text is
    encoded in the train step; `store`: an EmbeddingStore of precomputed embeddings."""
    self.image_size = config.image_size
    self.low_res_size = config.low_res_size if config.stage == "sr" else 0
    self.crop_from = config.data.crop_from
    self.random_crop = config.data.crop == "random"
    self.flip = config.data.flip
    self.image_key = config.data.image_key
    self.text_key = config.data.text_key
    self.seed = config.seed
    self.tokenize = tokenize
    self.store = store

  def __call__(self, element: dict, rng: np.random.Generator) -> dict:
    index = int(element["index"])
    image = np.asarray(_get(element, self.image_key))
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, axis=-1)
    image = image[..., :3]
    if self.crop_from:  # SR on crops: resize to crop_from, cut a training-size crop
      image = crop(resize_shortest_side(image, self.crop_from), self.crop_from, None)
      image = crop(image, self.image_size, rng)
    else:
      image = crop(
        resize_shortest_side(image, self.image_size),
        self.image_size,
        rng if self.random_crop else None,
      )
    if self.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    out = {"image": np.ascontiguousarray(image), "index": np.int64(index)}
    if self.low_res_size:
      out["low_res"] = images.antialiased_resize(out["image"], self.low_res_size)
    if self.store is not None:
      out["text_emb"], out["text_mask"] = self.store.get(index)
    elif self.tokenize is not None:
      ids, mask = self.tokenize([self.caption(element)])
      out["input_ids"], out["text_mask"] = ids[0], mask[0]
    return out

  def caption(self, element: dict) -> str:
    """The example's caption; of several, the one chosen by (seed, index), in every epoch."""
    rng = np.random.default_rng([self.seed, int(element["index"])])
    return _text(_get(element, self.text_key), rng)


class _ProcessRows(grain.MapDataset):
  """Process p's rows of every global batch: position k*B + p*b + j of the parent (j < b)."""

  def __init__(self, parent, *, process_index: int, process_count: int, local_batch: int):
    super().__init__(parent)
    self._p, self._n, self._b = process_index, process_count, local_batch

  def __len__(self):
    return len(self._parent) // self._n

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    step, j = divmod(index, self._b)
    return self._parent[step * self._b * self._n + self._p * self._b + j]

  def __str__(self):
    return f"ProcessRows(p={self._p}, n={self._n}, b={self._b})"


def _with_index(size: int, index: int, element: dict) -> dict:
  # Past the first epoch grain passes epoch * size + position down the chain (its shuffle draws
  # a new order per epoch from that); the element's index is its position in the source, which
  # the text store and the caption choice key on.
  return {**element, "index": index % size}


def make_dataset(
  source,
  transform: ExampleTransform,
  *,
  seed: int,
  global_batch: int,
  process_index: int = 0,
  process_count: int = 1,
  workers: int = 0,
  shuffle: bool = True,
) -> grain.IterDataset:
  """The IterDataset of this process's local batches of `global_batch / process_count` rows."""
  if global_batch % process_count:
    raise ConfigError(
      f"The global batch {global_batch} must divide evenly over {process_count} processes."
    )
  if len(source) == 0:
    raise ConfigError("The dataset is empty.")
  local = global_batch // process_count
  ds = grain.MapDataset.source(source).map_with_index(functools.partial(_with_index, len(source)))
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(None).random_map(transform, seed=seed)
  ds = _ProcessRows(ds, process_index=process_index, process_count=process_count, local_batch=local)
  ds = ds.batch(local, drop_remainder=True).to_iter_dataset(
    grain.ReadOptions(num_threads=4 if workers == 0 else 1, prefetch_buffer_size=4)
  )
  if workers > 0:
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=workers), worker_init_fn=_quiet_worker
    )
  return ds


def _quiet_worker(worker_index: int, worker_count: int) -> None:
  logs.quiet_third_party()


def open_source(config, *, build: bool = True, skip_images: bool = False):
  """The tfds data source of `config.data` (building imagen_shapes / image_text_folder on first
  use when `build`). `skip_images` leaves images encoded (for jobs that read only the text)."""
  import tensorflow_datasets as tfds

  d = config.data
  decoders = {d.image_key.split("/")[0]: tfds.decode.SkipDecoding()} if skip_images else None
  builder = _our_builder(config, build=build)
  if builder is not None:
    return builder.as_data_source(split=d.split, decoders=decoders)
  data_dir = paths.absolute(d.data_dir) or None
  try:
    return tfds.data_source(
      d.name, split=d.split, data_dir=data_dir, download=False, decoders=decoders
    )
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(
      _unknown_dataset(d.name, tfds.list_builders(with_community_datasets=False))
    ) from None
  except Exception as e:  # tfds raises several types for "not prepared"
    raise ConfigError(
      f"Could not open the TFDS dataset {d.name!r} ({short_error(e)}). Prepare it once in the "
      f"ArrayRecord format, e.g. `tfds build {d.name} --file_format=array_record` (that step "
      "needs TensorFlow), and point --config.data.data_dir at its data_dir."
    ) from None


def prepare_dataset(config):
  """Builds the dataset of `config.data` in data.data_dir (a local folder or gs://) unless it
  is built and current; returns its builder. For `imagen-jax prepare-data` and pods: one host
  builds, every host then reads its own shard from data_dir."""
  builder = _our_builder(config, build=True)
  if builder is None:
    raise ConfigError(
      f"{config.data.name} is a TFDS dataset: prepare it with `tfds build {config.data.name} "
      "--file_format=array_record --data_dir=DIR` (needs TensorFlow), then copy DIR to "
      "data.data_dir. prepare-data builds imagen_shapes and image_text_folder."
    )
  return builder


def _our_builder(config, *, build: bool):
  """The builder of imagen_shapes or image_text_folder, built when `build` (locally, or in a
  local folder uploaded to an object-store data_dir), or None for other TFDS datasets."""
  d = config.data
  data_dir = paths.absolute(d.data_dir) or None
  if d.name == "imagen_shapes":
    size = d.build_size or max(config.image_size, config.data.crop_from, config.sample_size)
    make = lambda data_dir: builders.shapes_builder(
      size=size, num_examples=d.num_examples, seed=config.seed, data_dir=data_dir
    )
    builder = make(data_dir)
    if build and not builder.is_prepared():
      log.info("building the %s dataset in %s", d.name, builder.data_dir)
      builder = remote.build(make, data_dir)
  elif d.name == "image_text_folder":
    if not d.path:
      raise ConfigError("image_text_folder needs --config.data.path=DIR (a folder of images).")
    args = dict(path=d.path, min_size=d.min_size, max_size=d.build_size, data_dir=data_dir)
    builder = builders.prepare_folder(**args) if build else builders.folder_builder(**args)
    if builder.is_prepared():
      _warn_small_images(builder, max(config.image_size, d.crop_from), d.path)
  else:
    return None
  if not builder.is_prepared():
    raise MissingPath(f"The dataset {d.name} is not built yet in {builder.data_dir}.")
  return builder


def _warn_small_images(builder, size: int, path: str) -> None:
  """Says how many images training will upscale to `size`, the side it resizes them to."""
  counts = builders.images_under(builder, size)
  if counts and counts[0]:
    log.warning(
      "%d of the %d images of %s have a short side under %d px, the size this stage reads them "
      "at: training upscales them (--config.data.min_size=%d skips them instead)",
      *counts,
      path,
      size,
      size,
    )


def _unknown_dataset(name: str, known: list[str]) -> str:
  ours = ["imagen_shapes", "image_text_folder"]
  close = difflib.get_close_matches(name.split("/")[0].split(":")[0], ours + known, n=3)
  hint = f" Did you mean {' or '.join(close)}?" if close else ""
  return (
    f"Unknown dataset --config.data.name={name!r}.{hint} Use imagen_shapes, image_text_folder "
    "(with --config.data.path=DIR), or a TFDS dataset prepared in --config.data.data_dir."
  )
