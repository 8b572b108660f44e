"""Writes the golden files of the T5 parity test: tiny random T5 encoders of each family, saved
by transformers' save_pretrained (safetensors), with inputs and PyTorch's last hidden states.

Needs torch and transformers (not the test suite): pip install torch==2.13.0 transformers
Run from the repository root: python tests/golden/make_t5_golden.py
"""

import pathlib

import numpy as np
import torch
from transformers import T5Config, T5EncoderModel

HERE = pathlib.Path(__file__).parent / "t5"
SMALL = dict(
  d_model=32,
  d_kv=8,
  d_ff=64,
  num_layers=2,
  num_heads=4,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=16,
)
FAMILIES = {
  "v1_0_relu": dict(vocab_size=100, feed_forward_proj="relu", **SMALL),
  "v1_1_gated_gelu": dict(vocab_size=100, feed_forward_proj="gated-gelu", **SMALL),
  "byt5_vocab": dict(vocab_size=384, feed_forward_proj="gated-gelu", **SMALL),
}
LENGTH = 40  # longer than relative_attention_max_distance
VALID = (40, 23, 1)  # valid tokens per example; the rest is padding


def main():
  for i, (family, kwargs) in enumerate(FAMILIES.items()):
    torch.manual_seed(i)
    model = T5EncoderModel(T5Config(**kwargs, dropout_rate=0.0)).eval()
    out_dir = HERE / family
    model.save_pretrained(out_dir, safe_serialization=True)
    rng = np.random.default_rng(i)
    ids = rng.integers(2, kwargs["vocab_size"], size=(len(VALID), LENGTH))
    mask = np.arange(LENGTH)[None, :] < np.array(VALID)[:, None]
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
    print(family, "->", out_dir)


if __name__ == "__main__":
  main()
