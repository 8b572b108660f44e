"""`imagen-jax bench`: train or sampling throughput, MFU, compile time and memory (JSON)."""

from __future__ import annotations

import json
import sys

from imagen_jax.cli import positive_int

ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser):
  parser.add_argument(
    "--config",
    required=True,
    help="a stage config; configs/demo.py without an argument means all three "
    "demo stages (a cascade for --what sample)",
  )
  parser.add_argument(
    "--what", choices=["train", "sample"], default="train", help="the train step or the sampler"
  )
  parser.add_argument(
    "--batch-size",
    type=positive_int,
    default=None,
    help="global batch (train default: the config's, or 1 per device on CPU; "
    "sample default: 1 per device)",
  )
  parser.add_argument("--steps", type=positive_int, nargs="+", help="sampling steps per stage")
  parser.add_argument(
    "--sampler", choices=["ddpm", "ddim", "dpm++2m"], help="default: each config's"
  )
  parser.add_argument("--guidance", type=float, help="guidance scale for every stage")
  parser.add_argument("--iters", type=positive_int, default=5, help="timed calls (median reported)")
  parser.add_argument("--json", metavar="FILE", help="also write the report to this file")


def run(args) -> int:
  import jax

  from imagen_jax import logs
  from imagen_jax.perf import bench

  logs.setup()
  # Compile time is part of the report: measure it, not a hit in the persistent cache.
  jax.config.update("jax_enable_compilation_cache", False)
  configs = bench.load_configs(args.config, args.overrides)
  if args.what == "train":
    reports = [bench.bench_train(c, batch=args.batch_size, iters=args.iters) for c in configs]
    result = reports[0] if len(reports) == 1 else reports
  else:
    batch = args.batch_size or jax.device_count()
    reports = [
      bench.bench_sample(
        configs,
        batch=batch,
        steps=args.steps,
        sampler=args.sampler,
        guidance=args.guidance,
        iters=args.iters,
      )
    ]
    result = reports[0]
  text = json.dumps(result, indent=1)
  print(text)
  if args.json:
    with open(args.json, "w") as f:
      f.write(text + "\n")
  for report in reports:
    print(bench.summary_line(report), file=sys.stderr)
  return 0
