"""`imagen-jax encode-text`: precompute the text embeddings of a dataset's captions."""

from __future__ import annotations

from imagen_jax.cli import load_run_config, positive_int

ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser):
  parser.add_argument(
    "--config",
    required=True,
    help="the stage config whose data and text encoder to use, e.g. configs/sr256.py",
  )
  parser.add_argument("--out", required=True, help="store directory; an interrupted run resumes")
  parser.add_argument(
    "--batch-size", type=positive_int, default=256, help="captions per encoder call"
  )
  parser.epilog = (
    "Train with the store: --config.text.store=OUT. The encoder runs on all local "
    "devices (the batch is split over them)."
  )


def run(args) -> int:
  from imagen_jax.text.precompute import encode_text

  config = load_run_config(args)
  store = encode_text(config, args.out, batch_size=args.batch_size)
  print(f"{args.out} holds {len(store)} embeddings; train with --config.text.store={args.out}")
  return 0
