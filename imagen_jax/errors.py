"""Errors as users read them: one line each."""


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
