"""`imagen-jax inspect`: parameter counts, FLOPs and per-device memory of a stage config, or of
an imported DeepFloyd IF stage (--pretrained), without allocating or downloading anything."""

from __future__ import annotations

import json

from imagen_jax.cli import positive_int
from imagen_jax.errors import InputError

ACCEPTS_CONFIG_OVERRIDES = True


def _mesh(text: str) -> dict[str, int]:
  from imagen_jax import parallel

  try:
    mesh = {k: int(v) for k, v in (item.split("=") for item in text.split(",") if item)}
  except ValueError:
    mesh = None
  if not mesh or set(mesh) - set(parallel.MESH_AXES):
    raise InputError(
      f"--mesh takes axis=size pairs over {parallel.MESH_AXES}, e.g. fsdp=8 or data=2,fsdp=4; "
      f"got {text!r}."
    )
  return mesh


def add_arguments(parser):
  what = parser.add_mutually_exclusive_group(required=True)
  what.add_argument("--config", help="a stage config, e.g. configs/base64.py")
  what.add_argument(
    "--pretrained",
    metavar="MODEL",
    help="an IF stage: DeepFloyd/IF-I-XL-v1.0 (its config ships with the package; also -L, -M, "
    "IF-II-L, IF-II-M) or a U-Net config.json / folder",
  )
  parser.add_argument(
    "--devices",
    type=positive_int,
    default=None,
    help="plan the per-device memory for this many devices (default: local)",
  )
  parser.add_argument(
    "--mesh",
    default="fsdp=-1",
    help="with --pretrained: the mesh, axis=size pairs over data, fsdp, tensor (default: "
    "%(default)s, the weights split over every device)",
  )
  parser.add_argument(
    "--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="with --pretrained"
  )
  parser.add_argument(
    "--chip", default=None, help="with --pretrained: say whether the weights fit, e.g. v5e, h100"
  )
  parser.add_argument(
    "--activations",
    action="store_true",
    help="also the activations kept for the backward pass per device under each remat "
    "policy (traced, not compiled: seconds, and the same on every backend)",
  )
  parser.add_argument(
    "--compile",
    action="store_true",
    help="also compile the train step on this machine for the per-device batch "
    "to report activation memory (slow for paper-size models on a CPU)",
  )


def run(args) -> int:
  import jax

  from imagen_jax import logs

  logs.setup()
  if args.pretrained:
    from imagen_jax.perf.inspection import inspect_pretrained

    report = inspect_pretrained(
      args.pretrained,
      devices=args.devices or jax.device_count(),
      mesh=_mesh(args.mesh),
      dtype=args.dtype,
      chip=args.chip,
    )
  else:
    from imagen_jax.configuration import load_config
    from imagen_jax.perf.inspection import inspect_config

    config = load_config(args.config, args.overrides)
    report = inspect_config(
      config, devices=args.devices, compile_memory=args.compile, activations=args.activations
    )
  print(json.dumps(report, indent=1))
  return 0
