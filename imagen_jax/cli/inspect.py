"""`imagen-jax inspect`: parameter counts, FLOPs and per-device memory of a stage config."""

from __future__ import annotations

import json

ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser):
  parser.add_argument("--config", required=True, help="e.g. configs/base64.py")
  parser.add_argument(
    "--devices",
    type=int,
    default=None,
    help="plan the per-device memory for this many devices (default: local)",
  )
  parser.add_argument(
    "--compile",
    action="store_true",
    help="also compile the train step on this machine for the per-device batch "
    "to report activation memory (slow for paper-size models on a CPU)",
  )


def run(args) -> int:
  from imagen_jax import logs
  from imagen_jax.configuration import load_config
  from imagen_jax.perf.inspect import inspect_config

  logs.setup()
  config = load_config(args.config, args.overrides)
  report = inspect_config(config, devices=args.devices, compile_memory=args.compile)
  print(json.dumps(report, indent=1))
  return 0
