"""TextEncoder: tokenization against transformers, padding, truncation, the null text."""

import logging
import os
import pathlib
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import spiece_model
from transformers import AutoTokenizer, ByT5Tokenizer, T5Tokenizer

from imagen_jax import parallel
from imagen_jax.data import shapes
from imagen_jax.errors import InputError, InputTypeError, MissingPath
from imagen_jax.text import (
  BYTE_ENCODER,
  SHAPES_ENCODER,
  TextEncoder,
  load_tokenizer,
  shapes_vocabulary,
  tokenize,
)

GOLDEN = pathlib.Path(__file__).parent / "golden" / "t5"
TEXTS = ["a small red circle at the top left", "naïve café: 東京 👩‍🚀 🎨!", "", "x"]


@pytest.fixture(scope="module")
def demo():
  return TextEncoder.from_pretrained(BYTE_ENCODER, max_length=48)


def test_demo_token_ids_equal_transformers_byt5(demo):
  ids, mask = demo.tokenize(TEXTS)
  reference = ByT5Tokenizer()
  for text, row, valid in zip(TEXTS, ids, mask):
    expected = reference(text)["input_ids"] if text else []
    assert row[: len(expected)].tolist() == expected
    assert valid.sum() == len(expected)
    assert not row[len(expected) :].any()
  # ByT5's rule, independent of transformers: UTF-8 bytes + 3, then </s> = 1.
  emoji = "👩‍🚀"
  row, _ = demo.tokenize([emoji])
  utf8 = [b + 3 for b in emoji.encode("utf-8")] + [1]
  assert row[0, : len(utf8)].tolist() == utf8


def test_embeddings_have_fixed_length_and_zero_padding(demo):
  emb, mask = demo(TEXTS)
  assert emb.shape == (4, 48, demo.dim) and mask.shape == (4, 48) and mask.dtype == jnp.bool_
  assert float(jnp.abs(jnp.where(mask[..., None], 0, emb)).max()) == 0.0


def test_empty_text_is_the_null_condition(demo):
  emb, mask = demo(["", "a blue square"])
  assert not mask[0].any() and float(jnp.abs(emb[0]).max()) == 0.0
  assert mask[1].any()


def test_long_texts_are_truncated_with_a_warning(demo, caplog):
  with caplog.at_level(logging.WARNING):
    _, mask = demo(["y" * 100])
  assert mask.sum() == 48
  assert "truncated" in caplog.text


def test_padding_does_not_change_the_valid_embeddings(demo):
  short = TextEncoder.from_pretrained(BYTE_ENCODER, max_length=20)
  a, mask = demo(["a green triangle"])
  b, _ = short(["a green triangle"])
  n = int(mask.sum())
  np.testing.assert_allclose(a[0, :n], b[0, :n], atol=1e-5)


def test_demo_encoder_is_deterministic_from_its_seed():
  a = TextEncoder.builtin(BYTE_ENCODER, seed=0)(["a red circle"])[0]
  b = TextEncoder.builtin(BYTE_ENCODER, seed=0)(["a red circle"])[0]
  c = TextEncoder.builtin(BYTE_ENCODER, seed=1)(["a red circle"])[0]
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_shapes_encoder_reads_each_caption_word_as_one_known_token(caplog):
  enc = TextEncoder.from_pretrained(SHAPES_ENCODER, max_length=16)
  rng = np.random.default_rng(0)
  captions = [shapes.sample_scene(rng).caption for _ in range(300)]
  with caplog.at_level(logging.WARNING):
    ids, mask = enc.tokenize(captions)
  assert not caplog.text  # no unknown word, nothing truncated
  vocabulary = shapes_vocabulary()
  for caption, row, valid in zip(captions, ids, mask):
    words = caption.split()
    assert valid.sum() == len(words) + 1 and row[len(words)] == 1  # the words, then </s>
    assert [vocabulary[i - 3] for i in row[: len(words)]] == words
  # Upper case reads as lower case.
  assert (
    enc.tokenize(["A RED Circle"])[0][0, :4].tolist()
    == enc.tokenize(["a red circle"])[0][0, :4].tolist()
  )


def test_shapes_encoder_warns_about_unknown_words(caplog):
  enc = TextEncoder.from_pretrained(SHAPES_ENCODER, max_length=16)
  with caplog.at_level(logging.WARNING):
    ids, mask = enc.tokenize(["a red cat", "a red circle"])
  assert "builtin:shapes-tiny" in caplog.text and "not know" in caplog.text
  assert "'a red cat'" in caplog.text
  assert ids[0, 2] == enc.tokenizer.unk_token_id and mask[0, :4].all()


def test_from_pretrained_local_directory_with_a_sentencepiece_tokenizer(tmp_path):
  model_dir = tmp_path / "t5"
  shutil.copytree(GOLDEN / "v1_1_gated_gelu", model_dir)
  pieces = [*list("abcdefghijklmnopqrstuvwxyz"), "▁a", "▁red", "▁circle", "▁", "é", "😀"]
  vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [
    (p, -i - 1.0) for i, p in enumerate(pieces)
  ]
  T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(model_dir)
  enc = TextEncoder.from_pretrained(str(model_dir), max_length=12, dtype=jnp.float32)
  texts = ["a red circle", "café 😀 ñ"]
  ids, mask = enc.tokenize(texts)
  reference = AutoTokenizer.from_pretrained(str(model_dir))(texts)["input_ids"]
  for row, valid, expected in zip(ids, mask, reference):
    assert row[: len(expected)].tolist() == expected and valid.sum() == len(expected)
  emb, _ = enc(texts)
  assert emb.shape == (2, 12, 32)


def test_a_folder_with_only_spiece_model_tokenizes_as_sentencepiece_does(tmp_path):
  """T5X and TensorFlow checkpoints of T5 come with the SentencePiece vocabulary alone."""
  import sentencepiece

  model = spiece_model(
    ["a red circle at the top left", "a blue square in the center", "a photo of a cat"], 30
  )
  (tmp_path / "spiece.model").write_bytes(model)
  tokenizer = load_tokenizer(str(tmp_path))
  reference = sentencepiece.SentencePieceProcessor(model_proto=model)
  texts = ["a red cat", "the blue circle", ""]
  ids, mask = tokenize(tokenizer, texts, max_length=16)
  for row, valid, text in zip(ids, mask, texts):
    expected = [*reference.encode(text), 1] if text else []  # then </s>; "" is the null text
    assert row[valid].tolist() == expected


def test_a_folder_without_a_tokenizer_names_what_it_holds(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(MissingPath, match=r"tokenizer\.json.*config\.json"):
    load_tokenizer(str(tmp_path))


def test_sharded_text_encoder_equals_single_device(demo):
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = TextEncoder.builtin(BYTE_ENCODER, max_length=48, mesh=mesh)
  texts = TEXTS[:3]  # 3 texts: padded to the 4 batch shards internally
  np.testing.assert_allclose(sharded(texts)[0], demo(texts)[0], atol=1e-5)


@pytest.mark.parametrize(
  "texts,error",
  [([], InputError), ("a single string", InputTypeError), (["ok", 3], InputTypeError)],
)
def test_bad_texts_are_clear_errors(demo, texts, error):
  with pytest.raises(error):
    demo(texts)


def test_missing_local_directory_is_not_sent_to_the_hub(tmp_path):
  with pytest.raises(MissingPath, match="model directory"):
    TextEncoder.from_pretrained(str(tmp_path / "nope"))


def test_one_rule_says_what_is_a_hub_id(tmp_path, monkeypatch):
  from imagen_jax.hub import is_repo_id

  monkeypatch.chdir(tmp_path)
  (tmp_path / "runs" / "base").mkdir(parents=True)
  for name in ("DeepFloyd/IF-I-XL-v1.0", "google/t5-v1_1-xxl", "org/model.name_2"):
    assert is_repo_id(name), name
  # Local paths (existing or written as paths), URLs, bare names and malformed ids are not.
  for name in ("runs/base", "./base", "/abs/dir", "~/x", "gs://b/t5", "base", "a/b/c", "a/../b"):
    assert not is_repo_id(name), name


def test_loading_a_tokenizer_prints_no_advisory_about_pytorch():
  # transformers announces at import that PyTorch is missing; this package never uses it, and a
  # user of the Python API should not see that line (nor lose the variable's own setting).
  code = (
    "import os; from imagen_jax.text import load_tokenizer; load_tokenizer('builtin:byt5-tiny'); "
    "print(os.environ.get('TRANSFORMERS_NO_ADVISORY_WARNINGS'))"
  )
  env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_NO_ADVISORY_WARNINGS"}
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stderr
  assert "PyTorch" not in done.stderr
  assert done.stdout.strip() == "None"
