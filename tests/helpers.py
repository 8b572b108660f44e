"""Shared test helpers: tiny stage configs that train in seconds on a CPU."""

import json
import os
import pathlib
import shutil
import site
import subprocess
import sys

import jax

from imagen_jax.configuration import load_config

TINY = {
  "base": [
    "--config.unet.channels=16",
    "--config.unet.channel_mult=(1, 2)",
    "--config.unet.num_res_blocks=1",
    "--config.unet.attn_resolutions=(8,)",
    "--config.unet.head_dim=8",
    "--config.unet.text_cond_dim=16",
  ],
  "sr": [
    "--config.unet.channels=(8, 16)",
    "--config.unet.num_res_blocks=(1, 1)",
    "--config.unet.strides=(2, 2)",
    "--config.unet.text_cond_dim=16",
    "--config.unet.attn_heads=2",
  ],
}


def tiny_overrides(stage: str, tmp_path, *extra) -> list[str]:
  kind = "base" if stage == "base" else "sr"
  attention = (
    []
    if kind == "base"
    else [f"--config.unet.attention=('none', '{'cross' if stage == 'sr2' else 'self'}')"]
  )
  return [
    *TINY[kind],
    *attention,
    "--config.data.num_examples=64",
    "--config.data.build_size=32",
    f"--config.data.data_dir={tmp_path / 'tfds'}",
    "--config.text.max_length=64",
    "--config.train.batch_size=8",
    "--config.train.log_every=1",
    "--config.train.warmup_steps=2",
    "--config.train.learning_rate=2e-3",
    *extra,
  ]


STEPS = "--config.train.steps=30"  # one schedule for every base run: one compiled program


def base_train_args(tmp_path, *extra):
  """`imagen-jax train` arguments of the tiny base run that checkpoints every 4 steps."""
  return [
    "train",
    "--config",
    "configs/demo.py:base",
    *tiny_overrides("base", tmp_path),
    STEPS,
    "--config.train.checkpoint_every=4",
    *extra,
  ]


def read_metrics(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def tiny_config(stage: str, tmp_path, *extra):
  return load_config(f"configs/demo.py:{stage}", tiny_overrides(stage, tmp_path, *extra))


def train_batch(config) -> dict:
  """A host batch for a train step of `config`: random uint8 images (and low-res inputs for SR
  stages), text embeddings of 5 tokens with masks of 1-5 tokens; seeded."""
  import numpy as np

  rng = np.random.default_rng(0)
  b, size = config.train.batch_size, config.image_size
  batch = {
    "image": rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
    "text_emb": rng.normal(size=(b, 5, config.text.dim)).astype(np.float32),
    "text_mask": np.arange(5)[None] < rng.integers(1, 6, (b, 1)),
  }
  if config.stage == "sr":
    low = config.low_res_size
    batch["low_res"] = rng.integers(0, 256, (b, low, low, 3), dtype=np.uint8)
  return batch


def moved(params, scale: float, seed: int = 7):
  """params with every leaf moved off its init by scale * N(0, 1) noise (zero-initialised output
  layers would make two implementations agree trivially). On the host: done eagerly, jax would
  compile one program per leaf shape."""
  import numpy as np

  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda p: (np.asarray(p) + scale * rng.standard_normal(p.shape)).astype(p.dtype), params
  )


def run_cli(*args, env=None, timeout=600, check=True, cwd=None, script=False, command=None):
  """Runs `imagen-jax ARGS` in a subprocess (1 CPU device; in `cwd` if given) and returns the
  CompletedProcess. `script=True` runs the installed `imagen-jax` command itself, as a user
  types it, instead of `python -m imagen_jax.cli`; `command` runs another installation's."""
  if command is None and script:
    command = [os.path.join(os.path.dirname(sys.executable), "imagen-jax")]
  command = command or [sys.executable, "-m", "imagen_jax.cli"]
  full_env = {
    **os.environ,
    "XLA_FLAGS": os.environ["IMAGEN_JAX_TEST_XLA_FLAGS"],
    "JAX_PLATFORMS": "cpu",
    **(env or {}),
  }
  proc = subprocess.run(
    [*command, *args], env=full_env, capture_output=True, text=True, timeout=timeout, cwd=cwd
  )
  if check and proc.returncode != 0:
    raise AssertionError(f"imagen-jax {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
  return proc


def spiece_model(sentences, vocab_size: int) -> bytes:
  """A tiny SentencePiece model (T5's ids: pad 0, </s> 1, unk 2) trained on `sentences`."""
  import io

  import sentencepiece

  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
    sentence_iterator=iter(list(sentences) * 20),
    model_writer=model,
    vocab_size=vocab_size,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  return model.getvalue()


GOLDEN = pathlib.Path(__file__).parent / "golden"
SCHEDULER = {
  "_class_name": "DDPMScheduler",
  "beta_schedule": "squaredcos_cap_v2",
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "variance_type": "learned_range",
  "thresholding": True,
  "dynamic_thresholding_ratio": 0.95,
  "sample_max_value": 1.5,
  "clip_sample": True,
}


def _write(path, obj):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj))


def _unet(src, dst):
  dst.mkdir(parents=True)
  for name in ("config.json", "diffusion_pytorch_model.safetensors"):
    shutil.copy(src / name, dst / name)


def if_pipelines(root):
  """(stage I folder, stage II folder) of a tiny DeepFloyd IF cascade as diffusers'
  save_pretrained lays them out, in `root`: the golden tiny U-Nets (tests/golden/if_unet) and
  T5 (tests/golden/t5/v1_1_gated_gelu), a SentencePiece tokenizer, IF's scheduler configs."""
  root = pathlib.Path(root)
  one, two = root / "IF-I-tiny", root / "IF-II-tiny"
  _write(
    one / "model_index.json",
    {
      "_class_name": "IFPipeline",
      "unet": ["diffusers", "UNet2DConditionModel"],
      "scheduler": ["diffusers", "DDPMScheduler"],
      "text_encoder": ["transformers", "T5EncoderModel"],
      "tokenizer": ["transformers", "T5Tokenizer"],
    },
  )
  _unet(GOLDEN / "if_unet" / "stage_1", one / "unet")
  _write(one / "scheduler" / "scheduler_config.json", SCHEDULER)
  (one / "text_encoder").mkdir()
  for name in ("config.json", "model.safetensors"):
    shutil.copy(GOLDEN / "t5" / "v1_1_gated_gelu" / name, one / "text_encoder" / name)
  (one / "tokenizer").mkdir()
  (one / "tokenizer" / "spiece.model").write_bytes(
    spiece_model(["a red circle", "a blue square on a white background", "an owl"], 100)
  )
  _write(
    two / "model_index.json",
    {
      "_class_name": "IFSuperResolutionPipeline",
      "unet": ["diffusers", "UNet2DConditionModel"],
      "scheduler": ["diffusers", "DDPMScheduler"],
      "image_noising_scheduler": ["diffusers", "DDPMScheduler"],
    },
  )
  _unet(GOLDEN / "if_unet" / "stage_2", two / "unet")
  _write(two / "scheduler" / "scheduler_config.json", {**SCHEDULER, "sample_max_value": 1.0})
  _write(
    two / "image_noising_scheduler" / "scheduler_config.json",
    {"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2"},
  )
  return one, two


def install_wheel(folder: pathlib.Path) -> tuple[pathlib.Path, str]:
  """Builds the package's wheel and installs it into a fresh virtual environment under `folder`:
  (the venv, its site-packages). Offline: the wheel is built without build isolation and
  installed without dependencies; this environment's packages stand in for them."""
  repo = pathlib.Path(__file__).resolve().parent.parent
  pip = [sys.executable, "-m", "pip", "-q"]
  dist = folder / "dist"
  subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, repo], check=True)
  (wheel,) = dist.glob("imagen_jax-*.whl")
  venv = folder / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  own_site = subprocess.run(
    [venv / "bin" / "python", "-c", "import site; print(site.getsitepackages()[0])"],
    check=True,
    capture_output=True,
    text=True,
  ).stdout.strip()
  # The dependencies come from this environment's site-packages (a .pth line adds the folder
  # without running its .pth files, so the editable install of the source tree stays out).
  (pathlib.Path(own_site) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
  subprocess.run([*pip, "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
                  wheel], check=True)  # fmt: skip
  return venv, own_site
