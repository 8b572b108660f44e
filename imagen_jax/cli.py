"""The `imagen-jax` command line: one verb per job, each with --help.

Verbs import their heavy modules only when they run, so `imagen-jax --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module with add_arguments(parser) and run(args), one-line help)
VERBS = {
  "demo": ("imagen_jax.cli_demo", "offline: build demo data, train 3 tiny stages, sample"),
  "train": ("imagen_jax.cli_train", "train one stage from a config"),
  "sample": ("imagen_jax.cli_sample", "generate images from prompts with trained stages"),
  "encode-text": ("imagen_jax.cli_encode_text", "precompute text embeddings for a dataset"),
  "preflight": ("imagen_jax.cli_preflight", "check devices, mesh and agreement of all hosts"),
  "bench": ("imagen_jax.cli_bench", "benchmark training or sampling speed (JSON)"),
  "inspect": ("imagen_jax.cli_inspect", "parameter counts, FLOPs and memory of a config (JSON)"),
}


def _parser() -> argparse.ArgumentParser:
  from imagen_jax import __version__

  parser = argparse.ArgumentParser(
    prog="imagen-jax",
    description="Imagen text-to-image diffusion in JAX/Flax: train, sample, inspect, benchmark.",
  )
  parser.add_argument("--version", action="version", version=f"imagen-jax {__version__}")
  parser.add_argument(
    "--debug", action="store_true", help="show full tracebacks for configuration and input errors"
  )
  sub = parser.add_subparsers(dest="verb", metavar="VERB")
  for verb, (module, help_text) in VERBS.items():
    p = sub.add_parser(verb, help=help_text, description=help_text)
    importlib.import_module(module).add_arguments(p)
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = _parser()
  args, extra = parser.parse_known_args(argv)
  if args.verb is None:
    parser.print_help()
    return 2
  args.overrides = extra
  module = importlib.import_module(VERBS[args.verb][0])
  if extra and not getattr(module, "ACCEPTS_CONFIG_OVERRIDES", False):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  try:
    return module.run(args) or 0
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
    # Errors of configuration and input carry a message that says what to do.
    if args.debug:
      raise
    print(f"imagen-jax {args.verb}: error: {e}", file=sys.stderr)
    print("(run with --debug for the traceback)", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
