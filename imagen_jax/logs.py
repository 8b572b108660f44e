"""Console logging for the command line: our messages at INFO, third-party chatter at ERROR."""

import logging
import os

QUIET_LOGGERS = ("absl", "jax._src", "orbax", "tensorflow", "tensorflow_datasets", "grain")


def setup(level: int = logging.INFO) -> None:
  """Logging for the command line, and JAX's persistent compilation cache (so a resumed run or a
  second sampling call does not compile again): $JAX_COMPILATION_CACHE_DIR, by default
  ~/.cache/imagen_jax/xla."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import jax

  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update(
      "jax_compilation_cache_dir",
      os.path.join(os.path.expanduser("~"), ".cache", "imagen_jax", "xla"),
    )
  if not os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  logging.basicConfig(
    level=level,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    datefmt="%H:%M:%S",
    force=True,
  )
  quiet_third_party()


# Notices about what this package does on purpose, dropped also when a program of the user's
# configures logging: TFDS announces every builder config it is given (the datasets here are
# configured by size and seed), and recommends OpenCV for decoding images where PIL is used.
DROPPED_NOTICES = ("Using custom data configuration", "OpenCV is not installed")


class _DropNotices(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(DROPPED_NOTICES)


def drop_known_notices() -> None:
  """Drops DROPPED_NOTICES from absl's logger (TFDS logs through absl); idempotent."""
  logger = logging.getLogger("absl")
  if not any(isinstance(f, _DropNotices) for f in logger.filters):
    logger.addFilter(_DropNotices())


# Kept at WARNING under a quiet parent: JAX says here when it falls back to the CPU on a machine
# with a GPU or TPU (JAX for that accelerator not installed, or its backend failed to start).
SPOKEN_LOGGERS = ("jax._src.xla_bridge",)


def quiet_third_party() -> None:
  """Third-party loggers at ERROR: also in data-loader worker processes, which would otherwise
  repeat their notices (absl's "Using custom data configuration", ...) once per worker."""
  for name in QUIET_LOGGERS:
    logging.getLogger(name).setLevel(logging.ERROR)
  for name in SPOKEN_LOGGERS:
    logging.getLogger(name).setLevel(logging.WARNING)
