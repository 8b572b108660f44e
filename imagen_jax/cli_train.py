"""`imagen-jax train`: train one stage from a config."""

from __future__ import annotations

ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser):
  parser.add_argument(
    "--config", required=True, help="config file, optionally with an argument: configs/demo.py:base"
  )
  parser.add_argument(
    "--workdir",
    required=True,
    help="run directory (local or gs://): checkpoints, metrics.jsonl, "
    "TensorBoard events; an existing run resumes",
  )
  parser.add_argument(
    "--max-steps",
    type=int,
    default=None,
    help="stop after this many steps of this invocation (smoke runs)",
  )
  parser.epilog = "Override any config field with --config.a.b=value, e.g. --config.train.steps=10."


def run(args) -> int:
  from imagen_jax import logs
  from imagen_jax.configuration import load_config
  from imagen_jax.train.trainer import train_and_evaluate

  logs.setup()
  config = load_config(args.config, args.overrides)
  summary = train_and_evaluate(config, args.workdir, max_steps=args.max_steps)
  print(
    f"trained {config.stage} to step {summary['step']} in {args.workdir} "
    f"(loss {summary.get('loss', float('nan')):.4f})"
  )
  return 0
