"""Errors as users read them: one line each."""


def short_error(e: BaseException, limit: int = 200) -> str:
  """'Type: message' on one line, cut at `limit` characters: orbax, TensorStore and TFDS put
  whole specs or dataset lists in their messages."""
  text = " ".join(str(e).split()) or type(e).__name__
  if len(text) > limit:
    text = text[: limit - 3] + "..."
  return f"{type(e).__name__}: {text}"
