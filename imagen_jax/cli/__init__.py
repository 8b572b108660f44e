"""The `imagen-jax` command line: one verb per job, each with --help.

Verbs import their heavy modules only when they run, so `imagen-jax --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

DEBUG_HELP = "show full tracebacks for configuration and input errors"
# verb -> (module with add_arguments(parser) and run(args), one-line help)
VERBS = {
  "demo": ("imagen_jax.cli.demo", "offline: build demo data, train 3 tiny stages, sample"),
  "train": ("imagen_jax.cli.train", "train one stage from a config"),
  "sample": ("imagen_jax.cli.sample", "generate images from prompts with trained stages"),
  "export": ("imagen_jax.cli.export", "a cascade's EMA parameters and configs, to share"),
  "prepare-data": ("imagen_jax.cli.prepare_data", "build a dataset once, locally or on gs://"),
  "encode-text": ("imagen_jax.cli.encode_text", "precompute text embeddings for a dataset"),
  "preflight": ("imagen_jax.cli.preflight", "check devices, workdir, data, text encoder, hosts"),
  "bench": ("imagen_jax.cli.bench", "benchmark training or sampling speed (JSON)"),
  "inspect": ("imagen_jax.cli.inspect", "parameter counts, FLOPs and memory of a config (JSON)"),
}


class _HelpFormatter(argparse.HelpFormatter):
  """Shows each option's default in its help, when it has one worth showing."""

  def _get_help_string(self, action):
    text = action.help or ""
    default = action.default
    if (
      "%(default)" in text
      or default in (None, False, argparse.SUPPRESS)
      or not action.option_strings
    ):
      return text
    return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
  from imagen_jax import __version__

  parser = argparse.ArgumentParser(
    prog="imagen-jax",
    description="Imagen text-to-image diffusion in JAX/Flax: train, sample, inspect, benchmark.",
  )
  parser.add_argument("--version", action="version", version=f"imagen-jax {__version__}")
  parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
  sub = parser.add_subparsers(dest="verb", metavar="VERB")
  for verb, (module, help_text) in VERBS.items():
    p = sub.add_parser(verb, help=help_text, description=help_text, formatter_class=_HelpFormatter)
    importlib.import_module(module).add_arguments(p)
    # Also after the verb, where the error messages' hint puts it.
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
  return parser


def positive_int(text: str) -> int:
  """argparse type: a whole number of at least 1."""
  value = int(text)  # argparse turns a ValueError into "invalid positive_int value: ..."
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
  return value


def config_argument(parser, help_text: str = "the config the run will use") -> None:
  """--config FILE[:ARG] (its --config.a.b=value overrides are read by load_run_config)."""
  parser.add_argument("--config", required=True, help=help_text)


def load_run_config(args):
  """Logging set up for a verb's run, and the config of --config with its overrides."""
  from imagen_jax import logs
  from imagen_jax.configuration import load_config

  logs.setup()
  return load_config(args.config, args.overrides)


def host_cpu_devices(cpus: int | None = None) -> int:
  """How many devices the command line splits a CPU host into: the largest power of two up to
  the count of cores this process may use and 8 (powers of two divide the configs' batches)."""
  if cpus is None:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  cpus = min(cpus or 1, 8)
  return 1 << (cpus.bit_length() - 1)


def trains(args: argparse.Namespace) -> bool:
  """Whether the verb trains (train, demo, bench --what train), or checks for training
  (preflight, which must see the devices as train does)."""
  training = ("train", "demo", "preflight")
  return args.verb in training or (args.verb == "bench" and args.what == "train")


def split_host_cpu() -> None:
  """Trains on a CPU as one device per core (data parallel over the cores), unless XLA_FLAGS
  says otherwise: training is faster so, sampling is not (docs/performance.md), so only the
  training verbs split. Accelerators are unaffected: only XLA's CPU platform reads it. Must run
  before JAX starts its backends."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    count = host_cpu_devices()
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


# A smoke run (`demo --quick`) compiles a dozen programs and runs each a few dozen times, so
# compiling fast matters more than running fast: LLVM at -O0 and XLA:CPU's older elemental
# emitters shorten it with a cold compilation cache (figures: docs/performance.md, "The quick
# demo's time"). The tests compile so too.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def runs_on_cpu() -> bool:
  """Whether JAX will run on the CPU, decided without starting it: JAX_PLATFORMS says so, or
  neither a TPU runtime (libtpu) nor a GPU plugin is installed."""
  from importlib import metadata, util

  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  return util.find_spec("libtpu") is None and not metadata.entry_points(group="jax_plugins")


def compile_fast() -> None:
  """Adds FAST_COMPILE_FLAGS to XLA_FLAGS on a CPU host, unless XLA_FLAGS already sets an
  optimisation level. Must run before JAX starts its backends."""
  flags = os.environ.get("XLA_FLAGS", "")
  if runs_on_cpu() and "xla_backend_optimization_level" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE_FLAGS}".strip()


def main(argv: list[str] | None = None) -> int:
  """Runs `imagen-jax VERB ...`; returns the exit status: 0 done, 2 a mistake the user can fix
  (one line says what to do), 1 a bug (a short message and how to report it), 130 Ctrl-C."""
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if args.verb is None:
    parser.print_help()
    return 2
  if trains(args):
    split_host_cpu()
  if args.verb == "demo" and args.quick:
    compile_fast()
  args.overrides = extra
  module = importlib.import_module(VERBS[args.verb][0])
  if extra and not getattr(module, "ACCEPTS_CONFIG_OVERRIDES", False):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  try:
    return module.run(args) or 0
  except KeyboardInterrupt:
    print("\ninterrupted", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # At once: not waiting for background threads (an orbax save in flight, data loaders).
    # Checkpoints are published only when complete, so none is left half-written.
    os._exit(130)
  except Exception as e:
    if args.debug:
      raise
    return report_error(args.verb, e)


def report_error(verb: str, e: Exception) -> int:
  """Prints `e` for a user and returns the exit status (see main)."""
  from imagen_jax.errors import UserError, missing_package, short_error

  ours = isinstance(e, ImportError) and (e.name or "").startswith("imagen_jax")
  if isinstance(e, UserError):
    message = missing_package(e) if isinstance(e, ImportError) else str(e)
  elif isinstance(e, ImportError) and not ours:
    message = missing_package(e)  # an optional package a path or option needs (gcsfs for gs://)
  elif isinstance(e, OSError):
    # What the file system or the network said (no space left, permission denied): the user's
    # to fix, not a bug.
    message = short_error(e, 300)
  else:
    print(f"imagen-jax {verb}: internal error: {short_error(e, 300)}", file=sys.stderr)
    print(
      "This is a bug in imagen-jax or in a library it runs on, not in what you asked for. "
      f"Run again with --debug for the traceback and report it with the command line: "
      f"imagen-jax {verb} ... --debug",
      file=sys.stderr,
    )
    return 1
  print(f"imagen-jax {verb}: error: {message}", file=sys.stderr)
  print("(run with --debug for the traceback)", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main())
