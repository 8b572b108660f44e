"""`imagen-jax preflight`: run on every host before training. Each host checks what fails first
on a pod, one line per check, and all hosts check that they agree:

  devices    the devices and mesh `train` will use (a CPU host split as `train` splits it), and
             that the batch divides over them
  workdir    writable (a local folder or gs://; the probe file is removed)
  data       the dataset opens (an offline dataset not built yet is built by process 0 on the
             first run)
  text       the encoder's config and tokenizer load (no weights), or the embedding store opens
  hosts      every host has the same config, mesh, JAX version and devices
"""

from __future__ import annotations

import hashlib
import json

from imagen_jax.cli import config_argument, load_run_config
from imagen_jax.errors import InputError, MissingExtra

ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser):
  config_argument(parser)
  parser.add_argument("--workdir", help="the run's workdir: checked for writing")


def fingerprint(config, mesh_shape: dict) -> str:
  import jax

  identity = {
    "config": json.loads(config.to_json()),
    "mesh": mesh_shape,
    "jax": jax.__version__,
    "device_kind": jax.devices()[0].device_kind,
    "devices": jax.device_count(),
  }
  return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _devices(config) -> str:
  import jax

  from imagen_jax import parallel

  mesh = parallel.make_mesh(dict(config.mesh))
  parallel.check_batch(config, mesh.shape)
  local = jax.local_devices()
  shape = {k: int(v) for k, v in mesh.shape.items()}
  return (
    f"process {jax.process_index()} of {jax.process_count()}: {len(local)} local "
    f"{local[0].device_kind} device(s) of {jax.device_count()}; mesh {shape}; batch "
    f"{config.train.batch_size // jax.process_count()} per process"
  )


def _workdir(workdir) -> str:
  import jax
  from etils import epath

  from imagen_jax import paths
  from imagen_jax.errors import missing_package

  path = epath.Path(paths.absolute(workdir))
  probe = path / f".preflight-{jax.process_index()}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except ImportError as e:  # gs:// without gcsfs
    raise MissingExtra(f"{path}: {missing_package(e)}") from e
  return f"{path} is writable"


def _data(config) -> str:
  from imagen_jax.data import input_pipeline

  try:
    source = input_pipeline.open_source(config, build=False, skip_images=True)
  except FileNotFoundError as e:
    if config.data.name in ("imagen_shapes", "image_text_folder") and "not built yet" in str(e):
      return f"{e} Process 0 builds it on the first run."
    raise
  return f"{config.data.name}: {len(source)} examples"


def _text(config) -> str:
  from imagen_jax.data.store import EmbeddingStore
  from imagen_jax.models import t5_weights
  from imagen_jax.text import BUILTIN_TOKENIZERS, load_tokenizer
  from imagen_jax.text.tokenizers import resolve_directory

  t = config.text
  if t.store:
    store = EmbeddingStore(t.store)
    store.check_matches(encoder=t.encoder, max_length=t.max_length, dim=t.dim)
    return f"embedding store {t.store}: {len(store)} examples"
  if t.encoder in BUILTIN_TOKENIZERS:
    load_tokenizer(t.encoder)
    return f"{t.encoder} (builtin, offline)"
  directory = resolve_directory(t.encoder)  # a hub id: config and tokenizer, no weights
  encoder_config = t5_weights.read_config(directory)
  if encoder_config.d_model != t.dim:
    raise InputError(f"config.text.dim is {t.dim} but {t.encoder} gives {encoder_config.d_model}.")
  load_tokenizer(str(directory))
  return f"{t.encoder}: d_model {encoder_config.d_model}, tokenizer loads"


def run(args) -> int:
  import jax
  import numpy as np

  from imagen_jax import parallel
  from imagen_jax.errors import short_error

  config = load_run_config(args)
  parallel.initialize_distributed(config)
  checks = {
    "devices": lambda: _devices(config),
    "workdir": (lambda: _workdir(args.workdir)) if args.workdir else None,
    "data": lambda: _data(config),
    "text": lambda: _text(config),
  }
  failed = []
  for name, check in checks.items():
    if check is None:
      continue
    try:
      print(f"{name}: ok: {check()}", flush=True)
    except Exception as e:  # each failure is one line; the next checks still run
      failed.append(name)
      print(f"{name}: FAILED: {short_error(e)}", flush=True)
  mesh_shape = dict(config.mesh)
  digest = fingerprint(config, mesh_shape)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    mine = np.frombuffer(bytes.fromhex(digest)[:8], np.uint32)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
    differ = [i for i, row in enumerate(every) if not np.array_equal(row, every[0])]
    if differ:
      failed.append("hosts")
      print(
        f"hosts: FAILED: processes {differ} disagree with process 0 on the config, mesh, JAX "
        "version or devices; install the same package and pass the same flags on every host."
      )
  if failed:
    print(f"preflight failed: {', '.join(failed)}")
    return 2
  print(f"preflight ok: {jax.process_count()} process(es) agree (fingerprint {digest[:12]})")
  return 0
