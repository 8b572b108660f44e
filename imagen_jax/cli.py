"""The `imagen-jax` command line: one verb per job, each with --help.

Verbs import their heavy modules only when they run, so `imagen-jax --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module with add_arguments(parser) and run(args), one-line help)
VERBS = {}


def _parser() -> argparse.ArgumentParser:
  from imagen_jax import __version__

  parser = argparse.ArgumentParser(
    prog="imagen-jax",
    description="Imagen text-to-image diffusion in JAX/Flax: train, sample, inspect, benchmark.",
  )
  parser.add_argument("--version", action="version", version=f"imagen-jax {__version__}")
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


if __name__ == "__main__":
  sys.exit(main())
