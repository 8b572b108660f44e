"""Texts -> (embeddings, mask): a tokenizer and the frozen T5 encoder behind one call.

    enc = TextEncoder.from_pretrained("google/t5-v1_1-xxl")  # hub id or local directory
    emb, mask = enc(["a photo of a cat"])                    # [B, L, D] float, [B, L] bool

Texts are padded to a fixed length (128 tokens by default) so the encoder compiles once per batch
size; longer texts are truncated with a warning. An empty string is the unconditional prompt: its
mask is all False and its embedding all zeros, exactly the null text of classifier-free guidance.

Two offline stand-ins for real T5 weights, for the demo and the tests, need no files: a small
encoder of the T5 v1.1 architecture, its weights initialised deterministically from a seed, not
trained, behind one of two tokenizers:
  BYTE_ENCODER   "builtin:byt5-tiny"    the ByT5 byte tokenizer: any text, a token per byte
  SHAPES_ENCODER "builtin:shapes-tiny"  a token per word of the shapes captions (data/shapes.py),
                                        <unk> for any other word (with a warning)
An untrained encoder gives each token a fixed random vector; with whole words as tokens, the
diffusion model reads "red" or "star" directly instead of learning to spell them from bytes.
"""

from __future__ import annotations

import functools
import logging
import os
import pathlib
from collections.abc import Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax import parallel
from imagen_jax.models import t5, t5_weights

BYTE_ENCODER = "builtin:byt5-tiny"
SHAPES_ENCODER = "builtin:shapes-tiny"
# The builtin encoders' body: a tiny T5 v1.1 with the ByT5 vocabulary size (256 bytes + 3 special
# + 125 extra ids = 384), which also holds the shapes words.
TINY_CONFIG = t5.T5Config(
  vocab_size=384,
  d_model=64,
  d_kv=16,
  d_ff=128,
  num_layers=2,
  num_heads=4,
  feed_forward_proj="gated-gelu",
)
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt"]

log = logging.getLogger(__name__)


def _resolve_directory(name_or_dir: str) -> pathlib.Path:
  """A local model directory, or a hub snapshot downloaded on request (config, tokenizer,
  safetensors; nothing else)."""
  path = pathlib.Path(os.path.expanduser(name_or_dir))
  if path.is_dir():
    return path
  if path.exists() or name_or_dir.startswith((".", "/", "~")) or name_or_dir.count("/") > 1:
    raise FileNotFoundError(f"{name_or_dir} is not a model directory.")
  from huggingface_hub import snapshot_download

  log.info("downloading %s from the Hugging Face hub", name_or_dir)
  return pathlib.Path(snapshot_download(name_or_dir, allow_patterns=HUB_FILES))


class TextEncoder:
  """A tokenizer plus a frozen T5 encoder. Call it on a list of strings.

  Attributes: `config` (T5Config), `params`, `max_length`, `dtype` (compute dtype; embeddings
  come back in it), `dim` (d_model).
  """

  def __init__(
    self,
    config: t5.T5Config,
    params,
    tokenizer,
    *,
    max_length: int = 128,
    dtype=None,
    name: str = "",
    mesh=None,
  ):
    if max_length < 1:
      raise ValueError(f"max_length must be positive, got {max_length}.")
    self.config = config
    self.params = params
    self.tokenizer = tokenizer
    self.max_length = max_length
    self.dtype = parallel.default_compute_dtype() if dtype is None else dtype
    self.name = name
    self.mesh = mesh
    self.model = t5.T5Encoder(config, dtype=self.dtype)
    self._encode = jax.jit(self._forward)

  @property
  def dim(self) -> int:
    return self.config.d_model

  @classmethod
  def from_pretrained(
    cls,
    name_or_dir: str,
    *,
    max_length: int = 128,
    dtype=None,
    param_dtype=jnp.float32,
    mesh=None,
    seed: int = 0,
  ) -> TextEncoder:
    """Loads a T5 encoder and its tokenizer from a hub id or a local directory.

    The directory holds Hugging Face's config.json, tokenizer files and model.safetensors (or a
    sharded index). A hub id is downloaded only when it is not a local directory. With `mesh`,
    parameters are created sharded over it. A builtin name (`BYTE_ENCODER`, `SHAPES_ENCODER`)
    builds that offline encoder from `seed`.
    """
    if name_or_dir in BUILTIN_TOKENIZERS:
      return cls.builtin(name_or_dir, seed=seed, max_length=max_length, dtype=dtype, mesh=mesh)
    directory = _resolve_directory(name_or_dir)
    config = t5_weights.read_config(directory)
    params = t5_weights.load_params(directory, config, param_dtype=param_dtype, mesh=mesh)
    tokenizer = load_tokenizer(str(directory))
    return cls(
      config, params, tokenizer, max_length=max_length, dtype=dtype, name=name_or_dir, mesh=mesh
    )

  @classmethod
  def builtin(
    cls, name: str, *, seed: int = 0, max_length: int = 128, dtype=None, mesh=None
  ) -> TextEncoder:
    """An offline stand-in encoder: tiny T5 v1.1, seeded random weights, the tokenizer of `name`."""
    params = _builtin_params(seed, mesh)
    tokenizer = load_tokenizer(name)
    return cls(
      TINY_CONFIG, params, tokenizer, max_length=max_length, dtype=dtype, name=name, mesh=mesh
    )

  def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """input_ids [B, max_length] int32 and mask [B, max_length] bool; empty texts get no tokens."""
    texts = check_texts(texts)
    ids, mask = tokenize(self.tokenizer, texts, self.max_length)
    unknown = self.tokenizer.unk_token_id
    if self.name == SHAPES_ENCODER and (ids[mask] == unknown).any():
      rows = [t for t, r, m in zip(texts, ids, mask) if (r[m] == unknown).any()]
      log.warning(
        "%d text(s) have words %s does not know (it knows the shapes captions' words: %s); they "
        "are read as <unk>, e.g. %r",
        len(rows),
        self.name,
        " ".join(shapes_vocabulary()),
        rows[0][:80],
      )
    lengths = [len(x) for x in self.tokenizer(list(texts), truncation=False)["input_ids"]]
    too_long = [t for t, n in zip(texts, lengths) if n > self.max_length]
    if too_long:
      log.warning(
        "%d text(s) longer than %d tokens were truncated, e.g. %r",
        len(too_long),
        self.max_length,
        too_long[0][:80],
      )
    return ids, mask

  def _forward(self, params, ids, mask):
    emb = self.model.apply({"params": params}, ids, mask)
    return jnp.where(mask[..., None], emb, 0).astype(self.dtype)

  def encode_tokens(self, ids, mask):
    """Embeddings [B, L, D] (compute dtype) of token ids [B, L] with mask [B, L]; zero where
    masked. Jitted once per batch size; with a mesh, the batch is split over its batch axes
    (padded up to a multiple of their size)."""
    if self.mesh is None:
      return self._encode(self.params, ids, mask)
    shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    batch = ids.shape[0]
    pad = -batch % shards
    ids = np.pad(np.asarray(ids), ((0, pad), (0, 0)))
    mask = np.pad(np.asarray(mask), ((0, pad), (0, 0)))
    sharding = parallel.batch_sharding(self.mesh, 2)
    emb = self._encode(self.params, jax.device_put(ids, sharding), jax.device_put(mask, sharding))
    return emb[:batch]

  def __call__(self, texts: Sequence[str]):
    """(embeddings [B, max_length, D] in the compute dtype, mask [B, max_length] bool)."""
    ids, mask = self.tokenize(texts)
    return self.encode_tokens(ids, mask), jnp.asarray(mask)


def load_tokenizer(name_or_dir: str):
  """The tokenizer of an encoder: a builtin one for a builtin name, else AutoTokenizer's for the
  model directory (or hub id, downloaded on request)."""
  if name_or_dir in BUILTIN_TOKENIZERS:
    return BUILTIN_TOKENIZERS[name_or_dir]()
  from transformers import AutoTokenizer

  return AutoTokenizer.from_pretrained(str(_resolve_directory(name_or_dir)))


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
  """(input_ids [B, max_length] int32, mask [B, max_length] bool), padded and truncated to
  max_length; an empty text has no tokens at all (the null text)."""
  enc = tokenizer(
    list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
  )
  ids = np.asarray(enc["input_ids"], np.int32)
  mask = np.asarray(enc["attention_mask"], bool)
  empty = np.array([t == "" for t in texts])
  mask[empty] = False
  ids[empty] = 0
  return ids, mask


def check_texts(texts) -> list[str]:
  """`texts` as a list of strings; a clear TypeError or ValueError for anything else."""
  if isinstance(texts, str):
    raise TypeError("Pass a list of strings, not a single string: enc([text]).")
  if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
    raise TypeError(f"Pass a list of strings, e.g. ['a red circle']; got {type(texts).__name__}.")
  texts = list(texts)
  if not texts:
    raise ValueError("No texts given: pass a non-empty list of strings.")
  bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
  if bad:
    raise TypeError(f"Every text must be a string; got {bad[0]}.")
  return texts


def shapes_vocabulary() -> list[str]:
  """Every word of the shapes captions (data/shapes.py), sorted."""
  from imagen_jax.data import shapes

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
  from transformers import PreTrainedTokenizerFast

  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
  vocab.update({word: i + 3 for i, word in enumerate(shapes_vocabulary())})
  assert len(vocab) <= TINY_CONFIG.vocab_size
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.normalizer = normalizers.Lowercase()
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  return PreTrainedTokenizerFast(
    tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
  )


def _byte_tokenizer():
  from transformers import ByT5Tokenizer

  return ByT5Tokenizer()


BUILTIN_TOKENIZERS = {BYTE_ENCODER: _byte_tokenizer, SHAPES_ENCODER: _shapes_tokenizer}


@functools.lru_cache(maxsize=4)
def _builtin_params_unsharded(seed: int):
  ids = jnp.zeros((1, 8), jnp.int32)
  mask = jnp.ones((1, 8), bool)
  variables = t5.T5Encoder(TINY_CONFIG).init(jax.random.key(seed), ids, mask)
  return jax.tree.map(np.asarray, nn.unbox(variables["params"]))


def _builtin_params(seed: int, mesh):
  params = _builtin_params_unsharded(seed)
  if mesh is None:
    return jax.tree.map(jnp.asarray, params)
  boxed = t5_weights.abstract_params(TINY_CONFIG)
  shardings = parallel.tree_shardings(boxed, mesh)
  return jax.tree.map(jax.device_put, params, shardings)
