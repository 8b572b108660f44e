"""Texts -> (embeddings, mask): tokenizers and the frozen T5 encoder.

    from imagen_jax.text import TextEncoder
    enc = TextEncoder.from_pretrained("google/t5-v1_1-xxl")  # hub id or local directory
    emb, mask = enc(["a photo of a cat"])                    # [B, L, D] float, [B, L] bool

`text.precompute.encode_text` precomputes the embeddings of a dataset's captions.
"""

from imagen_jax.text.encoder import TINY_CONFIG, TextEncoder
from imagen_jax.text.tokenizers import (
  BUILTIN_TOKENIZERS,
  BYTE_ENCODER,
  SHAPES_ENCODER,
  check_texts,
  load_tokenizer,
  shapes_vocabulary,
  tokenize,
)

__all__ = [
  "BUILTIN_TOKENIZERS",
  "BYTE_ENCODER",
  "SHAPES_ENCODER",
  "TINY_CONFIG",
  "TextEncoder",
  "check_texts",
  "load_tokenizer",
  "shapes_vocabulary",
  "tokenize",
]
