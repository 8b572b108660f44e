"""Tokenizers: Hugging Face's for real encoders, and two builtin ones for the offline stand-in
encoders (see text/encoder.py):
  BYTE_ENCODER   "builtin:byt5-tiny"    the ByT5 byte tokenizer: any text, a token per byte
  SHAPES_ENCODER "builtin:shapes-tiny"  a token per word of the shapes captions (data/shapes.py),
                                        <unk> for any other word (with a warning)
An empty text has no tokens at all: the null text of classifier-free guidance.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import sys
from collections.abc import Iterable, Sequence

import numpy as np
from etils import epath

from imagen_jax import hub, paths
from imagen_jax.data import shapes
from imagen_jax.errors import InputError, InputTypeError, MissingPath

BYTE_ENCODER = "builtin:byt5-tiny"
SHAPES_ENCODER = "builtin:shapes-tiny"
# The builtin tokenizers' vocabulary size: ByT5's (256 bytes + 3 special + 125 extra ids), which
# also holds the shapes words.
BUILTIN_VOCAB_SIZE = 384
HUB_CONFIG_FILES = ["*.json", "*.model", "*.txt"]  # config and tokenizer, no weights
# The SentencePiece vocabulary of T5 (v1.0 and v1.1), for T5X checkpoints, which carry none.
T5_VOCABULARY = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"

log = logging.getLogger(__name__)


def resolve_directory(name_or_dir: str, files=HUB_CONFIG_FILES) -> pathlib.Path:
  """A local model directory, or a hub snapshot downloaded on request of `files` (patterns, or
  a function of the hub id that returns them; by default config and tokenizer only)."""
  if name_or_dir.startswith("builtin:"):
    raise InputError(
      f"Unknown builtin text encoder {name_or_dir!r}; the builtins are "
      f"{', '.join(sorted(BUILTIN_TOKENIZERS))}."
    )
  if paths.is_url(name_or_dir):  # a model folder on an object store (a T5X checkpoint on gs://)
    return epath.Path(name_or_dir)
  path = pathlib.Path(os.path.expanduser(name_or_dir))
  if path.is_dir():
    return path
  if not hub.is_repo_id(name_or_dir):
    raise MissingPath(f"{name_or_dir} is neither a model directory nor a hub id (owner/name).")
  return hub.snapshot(name_or_dir, files)


def _transformers():
  """transformers (for its tokenizers only), imported without the advisory it prints when
  PyTorch, which this package never uses, is not installed."""
  if "transformers" not in sys.modules:
    quiet = "TRANSFORMERS_NO_ADVISORY_WARNINGS"
    before = os.environ.get(quiet)
    os.environ[quiet] = "1"  # read by that advisory when transformers is imported
    try:
      import transformers  # noqa: F401
    finally:
      if before is None:
        del os.environ[quiet]
      else:
        os.environ[quiet] = before
  return sys.modules["transformers"]


def load_tokenizer(name_or_dir: str):
  """The tokenizer of an encoder.

  Args:
    name_or_dir: a builtin name (BYTE_ENCODER, SHAPES_ENCODER), a model directory (local or on
      an object store) or a hub id (downloaded on request, config and tokenizer only). A
      directory holds Hugging Face's tokenizer files or T5's SentencePiece vocabulary
      `spiece.model` alone (as T5X and TensorFlow checkpoints ship it); a T5X checkpoint, which
      carries none, gets T5's own vocabulary.

  Returns:
    A Hugging Face tokenizer (the builtin ones are too).

  Raises:
    InputError: an unknown builtin name.
    MissingPath: a name that is neither a directory nor a hub id, a hub id not on the hub, or a
      directory with no tokenizer.
    AccessDenied: a gated hub repository whose license the logged-in account has not accepted.
    Unreachable: the hub cannot be reached and its cache holds no copy.
  """
  if name_or_dir in BUILTIN_TOKENIZERS:
    return BUILTIN_TOKENIZERS[name_or_dir]()
  directory = resolve_directory(name_or_dir)
  files = sorted(p.name for p in directory.iterdir())
  if "tokenizer.json" in files or "tokenizer_config.json" in files:
    return _transformers().AutoTokenizer.from_pretrained(str(directory))
  if "spiece.model" in files:
    return _transformers().T5TokenizerFast.from_pretrained(str(_spiece_folder(directory)))
  from imagen_jax.models import t5x_io

  if t5x_io.is_checkpoint(directory):  # T5X checkpoints carry no vocabulary: T5's own
    log.info("%s: using T5's SentencePiece vocabulary %s", directory, T5_VOCABULARY)
    return _transformers().T5TokenizerFast.from_pretrained(str(_spiece_folder(T5_VOCABULARY)))
  raise MissingPath(
    f"{directory} has no tokenizer: it needs tokenizer.json, tokenizer_config.json or "
    f"spiece.model; it holds {', '.join(files) or 'nothing'}."
  )


def _spiece_folder(source) -> pathlib.Path:
  """A local folder holding `spiece.model`: the model folder `source` itself, or, for a folder
  or a vocabulary file on an object store, a cached local copy."""
  source = epath.Path(source)
  if not paths.is_url(source):
    return pathlib.Path(source)
  file = source / "spiece.model" if source.is_dir() else source
  cache = pathlib.Path.home() / ".cache" / "imagen_jax" / "vocabularies"
  cache = cache / hashlib.sha1(str(file).encode()).hexdigest()[:16]
  if not (cache / "spiece.model").exists():
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "spiece.model").write_bytes(file.read_bytes())
  return cache


def tokenize(
  tokenizer, texts: Sequence[str], max_length: int, *, empty_is_null: bool = True
) -> tuple[np.ndarray, np.ndarray]:
  """Tokenizes texts, padded and truncated to max_length.

  Args:
    tokenizer: a Hugging Face tokenizer (load_tokenizer).
    texts: B strings (check_texts checks them; this does not).
    max_length: the token length of every row.
    empty_is_null: an empty text has no tokens at all, not even its end token (the null text).

  Returns:
    (input_ids [B, max_length] int32, mask [B, max_length] bool), numpy arrays.
  """
  enc = tokenizer(
    list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
  )
  ids = np.asarray(enc["input_ids"], np.int32)
  mask = np.asarray(enc["attention_mask"], bool)
  if not empty_is_null:
    return ids, mask
  empty = np.array([t == "" for t in texts])
  mask[empty] = False
  ids[empty] = 0
  return ids, mask


def check_texts(texts) -> list[str]:
  """Checks the texts a text encoder is called on.

  Args:
    texts: what the caller passed: it must be a non-empty iterable of strings.

  Returns:
    `texts` as a list of strings.

  Raises:
    InputTypeError: a single string or bytes instead of a list, something that is not
      iterable, or an item that is not a string (a TypeError).
    InputError: an empty list (a ValueError).
  """
  if isinstance(texts, str):
    raise InputTypeError("Pass a list of strings, not a single string: enc([text]).")
  if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
    raise InputTypeError(
      f"Pass a list of strings, e.g. ['a red circle']; got {type(texts).__name__}."
    )
  texts = list(texts)
  if not texts:
    raise InputError("No texts given: pass a non-empty list of strings.")
  bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
  if bad:
    raise InputTypeError(f"Every text must be a string; got {bad[0]}.")
  return texts


def shapes_vocabulary() -> list[str]:
  """Every word of the shapes captions (data/shapes.py), sorted."""
  phrases = [
    "a an on background",
    *shapes.SHAPES,
    *shapes.COLORS,
    *shapes.BACKGROUNDS,
    *shapes.SIZES,
    *shapes.POSITIONS,
    *shapes.RELATIONS,
  ]
  return sorted({word for phrase in phrases for word in phrase.split()})


def _shapes_tokenizer():
  """Lower-cased, split at spaces and punctuation, a token per known word, then </s>. Ids follow
  T5: <pad> 0, </s> 1, <unk> 2, then the words."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
  vocab.update({word: i + 3 for i, word in enumerate(shapes_vocabulary())})
  assert len(vocab) <= BUILTIN_VOCAB_SIZE
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.normalizer = normalizers.Lowercase()
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  return _transformers().PreTrainedTokenizerFast(
    tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
  )


def _byte_tokenizer():
  return _transformers().ByT5Tokenizer()


BUILTIN_TOKENIZERS = {BYTE_ENCODER: _byte_tokenizer, SHAPES_ENCODER: _shapes_tokenizer}
