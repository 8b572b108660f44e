"""`imagen-jax encode-text`: precompute the text embeddings of a dataset's captions into a store
(data/store.py) that training reads by example index. Resumable; the batch is split over all
local devices."""

from __future__ import annotations

import logging

import jax
import numpy as np
from tqdm import tqdm

from imagen_jax import parallel
from imagen_jax.data import input_pipeline
from imagen_jax.data.store import EmbeddingStore, StoreWriter
from imagen_jax.errors import ConfigError
from imagen_jax.text.encoder import TextEncoder

log = logging.getLogger(__name__)


def dataset_name(config, source) -> str:
  info = getattr(source, "dataset_info", None)
  return getattr(info, "full_name", None) or f"{config.data.name}/{config.data.split}"


def encode_text(
  config,
  out_dir,
  *,
  batch_size: int = 256,
  encoder: TextEncoder | None = None,
  progress: bool = True,
) -> EmbeddingStore:
  """Encodes every caption of config.data with config.text.encoder into a store at out_dir."""
  source = input_pipeline.open_source(config, skip_images=True)
  total = len(source)
  identity = dict(
    encoder=config.text.encoder,
    max_length=config.text.max_length,
    dim=config.text.dim,
    num_examples=total,
    dataset=dataset_name(config, source),
  )
  if StoreWriter.complete(out_dir, **identity):  # without loading the encoder (T5-XXL: minutes)
    log.info("the store at %s already holds all %d embeddings", out_dir, total)
    return EmbeddingStore(out_dir)
  transform = input_pipeline.ExampleTransform(config)
  if encoder is None:
    mesh = parallel.make_mesh({"data": -1})
    encoder = TextEncoder.from_pretrained(
      config.text.encoder, max_length=config.text.max_length, mesh=mesh
    )
  if encoder.dim != config.text.dim:
    raise ConfigError(f"config.text.dim is {config.text.dim} but the encoder gives {encoder.dim}.")
  writer = StoreWriter(out_dir, **identity)
  if writer.start:
    log.info("resuming the store at %s from row %d of %d", out_dir, writer.start, total)
  bar = tqdm(
    total=total, initial=writer.start, unit="captions", disable=not progress, desc="encode-text"
  )
  for start in range(writer.start, total, batch_size):
    indices = range(start, min(start + batch_size, total))
    captions = [transform.caption({**source[i], "index": i}) for i in indices]
    ids, mask = encoder.tokenize(captions)
    emb = encoder.encode_tokens(ids, mask)
    writer.write(np.asarray(jax.device_get(emb)), mask)
    bar.update(len(indices))
  bar.close()
  return EmbeddingStore(out_dir)
