"""`imagen-jax train`: train one stage from a config."""

from __future__ import annotations

from imagen_jax.cli import config_argument, load_run_config, positive_int

ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser):
  config_argument(parser, "config file, optionally with an argument: configs/demo.py:base")
  parser.add_argument(
    "--workdir",
    required=True,
    help="run directory (local or gs://): checkpoints, metrics.jsonl, "
    "TensorBoard events; an existing run resumes",
  )
  parser.add_argument(
    "--max-steps",
    type=positive_int,
    default=None,
    help="stop after this many steps of this invocation (smoke runs)",
  )
  parser.epilog = "Override any config field with --config.a.b=value, e.g. --config.train.steps=10."


def run(args) -> int:
  from imagen_jax import paths
  from imagen_jax.train import train_and_evaluate

  config = load_run_config(args)
  summary = train_and_evaluate(config, args.workdir, max_steps=args.max_steps)
  workdir = paths.absolute(args.workdir)
  if summary.get("stopped_by"):
    print(
      f"stopped by {summary['stopped_by']} at step {summary['step']}; the run resumes from "
      f"its checkpoint of step {summary['saved_step']} in {workdir} when the same command runs "
      "again."
    )
    # Not 0: the run is not done. 143 (128 + SIGTERM) tells a supervisor to run it again.
    return 130 if summary["stopped_by"] == "Ctrl-C" else 143
  if summary.get("complete"):  # before this command
    print(
      f"the run in {workdir} is already at step {summary['step']} of {config.train.steps}: "
      "nothing to train (a larger --config.train.steps trains on)."
    )
    return 0
  print(
    f"trained {config.stage} to step {summary['step']} in {workdir} (loss {summary['loss']:.4f})"
  )
  return 0
