"""`imagen-jax demo`: offline, trains and samples the tiny three-stage cascade."""

from __future__ import annotations

ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser):
  parser.add_argument(
    "--out",
    default="imagen_demo",
    help="output directory (default: %(default)s in the current directory; --quick writes to "
    "its subfolder quick/)",
  )
  parser.add_argument(
    "--quick",
    action="store_true",
    help="a smoke run of every step in a few minutes (untrained pictures)",
  )
  parser.add_argument(
    "--no-eval",
    action="store_true",
    help="skip measuring prompt following (256 one-shape and 64 two-shape prompts)",
  )
  parser.epilog = (
    "Config overrides (--config.a.b=value) apply to all three stages. An "
    "interrupted demo resumes when run again with the same --out."
  )


def run(args) -> int:
  from imagen_jax import logs
  from imagen_jax.demo_job import run_demo

  logs.setup()
  summary = run_demo(
    args.out, quick=args.quick, evaluate=not args.no_eval, overrides=args.overrides
  )
  out = summary["out"]
  if summary.get("stopped_by"):
    print(
      f"\ndemo stopped by {summary['stopped_by']} while training {summary['stopped_stage']} "
      f"(step {summary['step']}); run the same command to resume it in {out}."
    )
    return 130 if summary["stopped_by"] == "Ctrl-C" else 0
  print(f"\ndemo finished in {summary['seconds'] / 60:.1f} min; outputs in {out}:")
  print(f"  {out}/samples.png          prompts x stages (base, sr1, sr2)")
  print(f"  {out}/samples_stage3.png   final images")
  print(f"  {out}/base, sr1, sr2       checkpoints, metrics.jsonl; tensorboard --logdir {out}")
  if "eval" in summary:
    e = summary["eval"]
    one, two = e["per_stage"][-1], e["two_shapes"][-1]
    truth, two_truth = one["reader_on_ground_truth"], two["reader_on_ground_truth"]

    def figures(report, reader, names):
      return "   ".join(f"{n} {report[k]:.0%} / {reader[k]:.0%}" for n, k in names)

    print(
      f"  {out}/eval.json            prompt following at {one['size']} px "
      "(the model / the reader on rendered pictures):"
    )
    one_names = [("colour", "color_accuracy"), ("shape", "shape_accuracy")]
    one_names.append(("position", "position_accuracy"))
    two_names = [("both shapes", "shapes_accuracy"), ("relation", "relation_accuracy")]
    print(f"    {one['samples']} one-shape prompts   {figures(one, truth, one_names)}")
    print(f"    {two['samples']} two-shape prompts   {figures(two, two_truth, two_names)}")
  prompt = '"a red star on the left"'
  print(f"more pictures: imagen-jax sample --stages {out} --prompt {prompt} --out DIR")
  return 0
