"""Errors as users read them.

`UserError` and its kinds are mistakes a user can fix (a config, an input, a path, a missing
extra): their message says what to do, and the command line prints them as one line. Each kind
is also the built-in exception it refines (`InputError` is a ValueError, `MissingPath` a
FileNotFoundError, ...), so code that caught the built-in before still catches it. Anything
else that escapes is a bug of this package (or of the platform under it) and reads as one.
"""


class UserError(Exception):
  """A mistake the user can fix; the message says how."""


class ConfigError(UserError, ValueError):
  """A config field, override or config file that cannot be used."""


class InputError(UserError, ValueError):
  """An argument, prompt, picture or key of a call that cannot be used."""


class InputTypeError(UserError, TypeError):
  """An argument of the wrong kind (a float seed, a key that is not a PRNG key)."""


class PathError(UserError, OSError):
  """A path that cannot be used as asked (not writable, a file where a folder is needed)."""


class MissingPath(UserError, FileNotFoundError):
  """A file or folder the user named that is not there, or holds nothing usable."""


class PathExists(UserError, FileExistsError):
  """A path the user named that is already taken."""


class AccessDenied(UserError, PermissionError):
  """A resource the user has no access to yet (a gated model on the hub)."""


class Unreachable(UserError, ConnectionError):
  """A network resource that cannot be reached, and no local copy of it."""


class CheckpointError(UserError, RuntimeError):
  """Checkpoints that cannot be used as they are (none of a workdir's can be restored)."""


class DataError(UserError, ValueError):
  """A dataset, folder of pictures or caption file that cannot be read as asked."""


class MissingExtra(UserError, ImportError):
  """An optional package that an option or a path needs (gcsfs for gs://, ...)."""


def short_error(e: BaseException, limit: int = 200) -> str:
  """'Type: message' on one line, cut at `limit` characters: orbax, TensorStore and TFDS put
  whole specs or dataset lists in their messages."""
  text = " ".join(str(e).split()) or type(e).__name__
  if len(text) > limit:
    text = text[: limit - 3] + "..."
  return f"{type(e).__name__}: {text}"


# fsspec's message when a URL's filesystem package is missing -> the extra that installs it.
_FILESYSTEM_EXTRAS = {"gcsfs": "gcs"}


def missing_package(e: ImportError) -> str:
  """An ImportError as one line that says what to install: fsspec raises one for gs:// paths
  without gcsfs ("Please install gcsfs to access Google Storage")."""
  text = " ".join(str(e).split()) or f"missing module {e.name}"
  for package, extra in _FILESYSTEM_EXTRAS.items():
    if package in text:
      return f"{text} (install the {extra} extra: pip install 'imagen-jax[{extra}]')"
  return text
