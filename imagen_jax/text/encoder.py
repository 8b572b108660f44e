"""Texts -> (embeddings, mask): a tokenizer and the frozen T5 encoder behind one call.

    enc = TextEncoder.from_pretrained("google/t5-v1_1-xxl")  # hub id or local directory
    emb, mask = enc(["a photo of a cat"])                    # [B, L, D] float, [B, L] bool

Texts are padded to a fixed length (128 tokens by default) so the encoder compiles once per batch
size; longer texts are truncated with a warning. An empty string is the unconditional prompt: its
mask is all False and its embedding all zeros, exactly the null text of classifier-free guidance.

Two offline stand-ins for real T5 weights, for the demo and the tests, need no files: a small
encoder of the T5 v1.1 architecture, its weights initialised deterministically from a seed, not
trained, behind one of the builtin tokenizers (text/tokenizers.py). An untrained encoder gives
each token a fixed random vector; with whole words as tokens, the diffusion model reads "red" or
"star" directly instead of learning to spell them from bytes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax import hardware, parallel
from imagen_jax.errors import InputError, MissingPath
from imagen_jax.models import t5, t5_weights
from imagen_jax.text import tokenizers
from imagen_jax.text.tokenizers import BUILTIN_TOKENIZERS, SHAPES_ENCODER, check_texts

# The builtin encoders' body: a tiny T5 v1.1 over the builtin tokenizers' vocabulary.
TINY_CONFIG = t5.T5Config(
  vocab_size=tokenizers.BUILTIN_VOCAB_SIZE,
  d_model=64,
  d_kv=16,
  d_ff=128,
  num_layers=2,
  num_heads=4,
  feed_forward_proj="gated-gelu",
)
log = logging.getLogger(__name__)


def hub_files(repo_id: str) -> list[str]:
  """What to download of a hub model: config and tokenizer, and its weights in the first format
  that is read without PyTorch or unpickling: safetensors, else Flax msgpack (the encoder is read
  from it, the decoder skipped)."""
  from huggingface_hub import list_repo_files

  names = list_repo_files(repo_id)
  config = list(tokenizers.HUB_CONFIG_FILES)
  if any(n.endswith(".safetensors") for n in names):
    return [*config, "*.safetensors", "*.safetensors.index.json"]
  if any(n.startswith("flax_model.msgpack") for n in names):
    return [*config, "flax_model.msgpack*"]
  weights = sorted(n for n in names if n.endswith((".bin", ".h5", ".ckpt", ".pt", ".pth")))
  raise MissingPath(
    f"{repo_id} on the hub has no safetensors or Flax msgpack weights (it has {weights}); "
    "pickled PyTorch and TensorFlow files are not read. Convert them once with transformers "
    "(T5EncoderModel.from_pretrained(src).save_pretrained(dst)) and pass the folder."
  )


class TextEncoder:
  """A tokenizer plus a frozen T5 encoder. Call it on a list of strings.

  Usually made by TextEncoder.from_pretrained (or TextEncoder.builtin); the constructor takes a
  config and parameters already loaded.

  Args:
    config: the encoder's t5.T5Config.
    params: its parameters (sharded over `mesh` when one is given).
    tokenizer: a Hugging Face tokenizer (text/tokenizers.load_tokenizer).
    max_length: the fixed token length every text is padded or truncated to (positive).
    dtype: the compute dtype, that of the embeddings returned (default: bfloat16 on
      accelerators, float32 on CPU).
    name: what it was loaded from (a hub id, a folder or a builtin name), for messages.
    mesh: splits the batch over its batch axes (None: one device).
    if_style: encode as DeepFloyd IF does: texts lower-cased and stripped, every text ("" too)
      tokenized with its end token, and the encoder's outputs kept at padded positions (IF's
      U-Nets attend to all of them); the null text is then the encoding of "", not zeros.

  Attributes:
    config: the T5Config.
    params: the parameters.
    tokenizer: the tokenizer.
    max_length: the token length of every text.
    dtype: the compute dtype; embeddings come back in it.
    dim: the embedding width D (d_model).
    name: what it was loaded from.
    if_style: whether it encodes as DeepFloyd IF does.

  Raises:
    InputError: max_length below 1.
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
    if_style: bool = False,
  ):
    if max_length < 1:
      raise InputError(f"max_length must be positive, got {max_length}.")
    self.config = config
    self.params = params
    self.tokenizer = tokenizer
    self.max_length = max_length
    self.dtype = hardware.default_compute_dtype() if dtype is None else dtype
    self.name = name
    self.mesh = mesh
    self.if_style = if_style
    self.model = t5.T5Encoder(config, dtype=self.dtype)
    self._encode = jax.jit(self._forward)

  @property
  def dim(self) -> int:
    """The embedding width D (d_model)."""
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

    Args:
      name_or_dir: a local directory with Hugging Face's config.json, tokenizer files and
        model.safetensors (or a sharded index); a hub id (owner/name), downloaded only when it
        is not a local directory; or a builtin name (`BYTE_ENCODER` "builtin:byt5-tiny",
        `SHAPES_ENCODER` "builtin:shapes-tiny"), which builds that offline encoder from `seed`.
      max_length: the token length every text is padded or truncated to.
      dtype: the compute dtype (default: bfloat16 on accelerators, float32 on CPU).
      param_dtype: the dtype the parameters are stored in.
      mesh: parameters are created sharded over it, and the batch is split over it.
      seed: the seed of a builtin encoder's weights (ignored for real ones).

    Returns:
      A TextEncoder.

    Raises:
      InputError: an unknown builtin name.
      MissingPath: a name that is neither a directory nor a hub id, a hub id not on the hub, a
        directory without config.json or a tokenizer, or a hub model without safetensors or
        Flax msgpack weights.
      DataError: a config.json that is not a T5 encoder's, or weights that do not fit it.
      AccessDenied: a gated hub repository whose license the logged-in account has not accepted.
      Unreachable: the hub cannot be reached and its cache holds no copy.
    """
    if name_or_dir in BUILTIN_TOKENIZERS:
      return cls.builtin(name_or_dir, seed=seed, max_length=max_length, dtype=dtype, mesh=mesh)
    directory = tokenizers.resolve_directory(name_or_dir, files=hub_files)
    config = t5_weights.read_config(directory)
    params = t5_weights.load_params(directory, config, param_dtype=param_dtype, mesh=mesh)
    tokenizer = tokenizers.load_tokenizer(str(directory))
    return cls(
      config, params, tokenizer, max_length=max_length, dtype=dtype, name=name_or_dir, mesh=mesh
    )

  @classmethod
  def builtin(
    cls, name: str, *, seed: int = 0, max_length: int = 128, dtype=None, mesh=None
  ) -> TextEncoder:
    """An offline stand-in encoder: tiny T5 v1.1, seeded random weights, the tokenizer of `name`.

    Args:
      name: `BYTE_ENCODER` ("builtin:byt5-tiny") or `SHAPES_ENCODER` ("builtin:shapes-tiny").
      seed: the seed of its (untrained) weights.
      max_length: the token length every text is padded or truncated to.
      dtype: the compute dtype (default: bfloat16 on accelerators, float32 on CPU).
      mesh: parameters are placed sharded over it, and the batch is split over it.

    Returns:
      A TextEncoder that needs no files.
    """
    params = _builtin_params(seed, mesh)
    tokenizer = tokenizers.load_tokenizer(name)
    return cls(
      TINY_CONFIG, params, tokenizer, max_length=max_length, dtype=dtype, name=name, mesh=mesh
    )

  def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenizes texts, padded and truncated to max_length (truncation logs a warning).

    Args:
      texts: a non-empty list of B strings; an empty text gets no tokens (unless if_style).

    Returns:
      (input_ids [B, max_length] int32, mask [B, max_length] bool), numpy arrays.

    Raises:
      InputTypeError: a single string instead of a list, or an item that is not a string.
      InputError: an empty list.
    """
    texts = check_texts(texts)
    if self.if_style:  # IF's _text_preprocessing without its optional caption cleaning
      texts = [t.lower().strip() for t in texts]
    ids, mask = tokenizers.tokenize(
      self.tokenizer, texts, self.max_length, empty_is_null=not self.if_style
    )
    unknown = self.tokenizer.unk_token_id
    if self.name == SHAPES_ENCODER and (ids[mask] == unknown).any():
      rows = [t for t, r, m in zip(texts, ids, mask) if (r[m] == unknown).any()]
      log.warning(
        "%d text(s) have words %s does not know (it knows the shapes captions' words: %s); they "
        "are read as <unk>, e.g. %r",
        len(rows),
        self.name,
        " ".join(tokenizers.shapes_vocabulary()),
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
    if self.if_style:
      return emb.astype(self.dtype)
    return jnp.where(mask[..., None], emb, 0).astype(self.dtype)

  def encode_tokens(self, ids, mask):
    """Runs the encoder on tokens; jitted once per batch size.

    Args:
      ids: token ids [B, L] int32 (tokenize).
      mask: [B, L] bool, True at real tokens.

    Returns:
      Embeddings [B, L, D] in the compute dtype, zero where masked (if_style keeps the
      encoder's outputs there). With a mesh, the batch is split over its batch axes (padded up
      to a multiple of their size, the padding cut off again).
    """
    if self.mesh is None:
      return self._encode(self.params, ids, mask)
    batch = ids.shape[0]
    ids, mask = parallel.pad_batch(ids, self.mesh), parallel.pad_batch(mask, self.mesh)
    sharding = parallel.batch_sharding(self.mesh, 2)
    emb = self._encode(self.params, jax.device_put(ids, sharding), jax.device_put(mask, sharding))
    return emb[:batch]

  def __call__(self, texts: Sequence[str]):
    """Encodes texts: tokenize, then encode_tokens.

    Args:
      texts: a non-empty list of B strings; "" is the null text (all-False mask and zero
        embeddings, unless if_style).

    Returns:
      (embeddings [B, max_length, D] in the compute dtype, mask [B, max_length] bool), jax
      arrays.

    Raises:
      InputTypeError: a single string instead of a list, or an item that is not a string.
      InputError: an empty list.
    """
    ids, mask = self.tokenize(texts)
    return self.encode_tokens(ids, mask), jnp.asarray(mask)


@functools.lru_cache(maxsize=4)
def _builtin_params_unsharded(seed: int):
  ids = jnp.zeros((1, 8), jnp.int32)
  mask = jnp.ones((1, 8), bool)
  # Jitted: run op by op, the init (a forward pass) took seconds in every process.
  variables = jax.jit(t5.T5Encoder(TINY_CONFIG).init)(jax.random.key(seed), ids, mask)
  return jax.tree.map(np.asarray, nn.unbox(variables["params"]))


def _builtin_params(seed: int, mesh):
  params = _builtin_params_unsharded(seed)
  if mesh is None:
    return jax.tree.map(jnp.asarray, params)
  boxed = t5_weights.abstract_params(TINY_CONFIG)
  shardings = parallel.tree_shardings(boxed, mesh)
  return jax.tree.map(jax.device_put, params, shardings)
