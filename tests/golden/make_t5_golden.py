"""Writes the golden files of the T5 parity test: tiny random T5 encoders of each family, saved
by transformers' save_pretrained (safetensors), with inputs and PyTorch's last hidden states.

Needs torch, transformers, safetensors and numpy, in a virtual environment of its own (the
project's environment and the test suite have no torch):
  python -m venv /tmp/goldenvenv
  /tmp/goldenvenv/bin/pip install torch==2.13.0 'transformers>=4.45,<6' safetensors numpy
Run from the repository root, naming the families to write (all of them when none is named):
  /tmp/goldenvenv/bin/python tests/golden/make_t5_golden.py [family ...]
Each family's seeds follow from its place in FAMILIES, so add new families at the end. Rewriting
an existing family changes its expected.npz by float noise (about 1e-6) and its config.json's
transformers_version: name only the families that are new or changed.
"""

import pathlib
import sys
from typing import NamedTuple

import numpy as np
import torch
from transformers import T5Config, T5EncoderModel

HERE = pathlib.Path(__file__).parent / "t5"


class Family(NamedTuple):
  config: dict
  length: int  # longer than relative_attention_max_distance
  valid: tuple  # valid tokens per example; the rest is padding
  zero_padding: bool  # pad id 0 behind the mask; else random tokens, so only the mask hides them


SMALL = dict(
  d_model=32,
  d_kv=8,
  d_ff=64,
  num_layers=2,
  num_heads=4,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=16,
)
PADDED_40 = dict(length=40, valid=(40, 23, 1), zero_padding=True)
FAMILIES = {
  "v1_0_relu": Family(dict(vocab_size=100, feed_forward_proj="relu", **SMALL), **PADDED_40),
  "v1_1_gated_gelu": Family(
    dict(vocab_size=100, feed_forward_proj="gated-gelu", **SMALL), **PADDED_40
  ),
  "byt5_vocab": Family(dict(vocab_size=384, feed_forward_proj="gated-gelu", **SMALL), **PADDED_40),
  # A bucketing other than SMALL's (3 buckets each way: one exact, two logarithmic up to distance
  # 10), 3 layers, widths that are not powers of two, and tokens behind the mask that are not 0.
  "v1_1_6_buckets_3_layers": Family(
    dict(
      vocab_size=50,
      d_model=24,
      d_kv=6,
      d_ff=40,
      num_layers=3,
      num_heads=4,
      relative_attention_num_buckets=6,
      relative_attention_max_distance=10,
      feed_forward_proj="gated-gelu",
    ),
    length=30,
    valid=(30, 12),
    zero_padding=False,
  ),
}


def main(names):
  unknown = set(names) - set(FAMILIES)
  if unknown:
    sys.exit(f"unknown families {sorted(unknown)}; known: {list(FAMILIES)}")
  for i, (name, family) in enumerate(FAMILIES.items()):
    if names and name not in names:
      continue
    torch.manual_seed(i)
    model = T5EncoderModel(T5Config(**family.config, dropout_rate=0.0)).eval()
    out_dir = HERE / name
    model.save_pretrained(out_dir, safe_serialization=True)
    rng = np.random.default_rng(i)
    ids = rng.integers(2, family.config["vocab_size"], size=(len(family.valid), family.length))
    mask = np.arange(family.length)[None, :] < np.array(family.valid)[:, None]
    if family.zero_padding:
      ids = np.where(mask, ids, 0)
    with torch.no_grad():
      hidden = model(
        input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64))
      )
    np.savez_compressed(
      out_dir / "expected.npz",
      input_ids=ids.astype(np.int32),
      mask=mask,
      last_hidden_state=hidden.last_hidden_state.numpy(),
    )
    print(name, "->", out_dir)


if __name__ == "__main__":
  main(sys.argv[1:])
