"""`imagen-jax preflight`: run on every host before training; each prints its process, devices
and the mesh it will use, and all hosts check that they agree."""

from __future__ import annotations

import hashlib
import json

ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser):
  parser.add_argument("--config", required=True, help="the config the run will use")


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


def run(args) -> int:
  import jax
  import numpy as np

  from imagen_jax import logs, parallel
  from imagen_jax.configuration import load_config

  logs.setup()
  config = load_config(args.config, args.overrides)
  parallel.initialize_distributed(config)
  mesh = parallel.make_mesh(dict(config.mesh))
  parallel.check_batch(config, mesh)
  shape = {k: int(v) for k, v in mesh.shape.items()}
  local = jax.local_devices()
  print(
    f"process {jax.process_index()} of {jax.process_count()}: {len(local)} local "
    f"{local[0].device_kind} device(s) of {jax.device_count()}; mesh {shape}; "
    f"batch {config.train.batch_size // jax.process_count()} per process"
  )
  digest = fingerprint(config, shape)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    mine = np.frombuffer(bytes.fromhex(digest)[:8], np.uint32)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
    differ = [i for i, row in enumerate(every) if not np.array_equal(row, every[0])]
    if differ:
      raise RuntimeError(
        f"Hosts disagree with host 0 on the config, mesh, JAX version or devices: processes "
        f"{differ}. Install the same package and pass the same flags on every host."
      )
  print(f"preflight ok: {jax.process_count()} process(es) agree (fingerprint {digest[:12]})")
  return 0
