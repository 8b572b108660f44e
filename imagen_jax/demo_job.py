"""`imagen-jax demo`: offline, end to end. Builds the procedural shapes data, trains the three
tiny stages of configs/demo.py, samples a grid for several prompts, and measures how well
samples follow their prompts (evaluate_cascade). Interrupted, it resumes: finished stages are
skipped, and a stage in training continues from its last checkpoint.

Outputs under --out (default ./imagen_demo; a --quick run in its subfolder quick/):
  base/ sr1/ sr2/        training workdirs (checkpoints, metrics.jsonl, TensorBoard events)
  samples.png            the final-stage grid, one row per prompt
  samples_stageK.png     the grid of stage K
  eval.json              prompt following of 256 one-shape samples (colour, shape, position) and
                         64 two-shape samples (both shapes, relation), per stage, next to the
                         reader's accuracy on rendered pictures; each SR stage's agreement with
                         its input (sr_stages)
"""

from __future__ import annotations

import itertools
import json
import logging
import pathlib
import time

import numpy as np
from PIL import Image

from imagen_jax import paths
from imagen_jax.configuration import load_config
from imagen_jax.data import shapes_eval
from imagen_jax.images import grid

log = logging.getLogger(__name__)

STAGES = ("base", "sr1", "sr2")
PROMPTS = (
  "a red circle at the top left on a white background",
  "a small blue square at the bottom right on a gray background",
  "a big green triangle in the center on a black background",
  "a yellow circle to the left of a purple square on a white background",
  "an orange star on the right on a gray background",
  "a purple diamond at the top on a white background",
)
# --quick: a smoke run of the whole path in a few minutes, not a trained model.
QUICK = {
  "base": ["--config.train.steps=40", "--config.data.num_examples=512"],
  "sr1": ["--config.train.steps=20", "--config.data.num_examples=512"],
  "sr2": ["--config.train.steps=20", "--config.data.num_examples=512"],
}
QUICK_SAMPLE_STEPS = (8, 4, 4)
# 256 one-shape prompts: at 64, one picture moves a figure by 1.6 points (docs/demo.md).
EVAL_SAMPLES = 256
TWO_EVAL_SAMPLES = 64


def sr_consistency(per_stage: list[np.ndarray]) -> list[dict]:
  """How each SR stage treats its input: its output box-downsampled to the input's size against
  that input (mean absolute difference, in 0-255 levels), and the detail it adds (the mean
  absolute difference between its output and the input upsampled by pixel repetition)."""
  report = []
  for low, high in itertools.pairwise(per_stage):
    f = high.shape[1] // low.shape[1]
    n, h, w, c = high.shape
    high = high.astype(np.float32)
    down = high.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))
    up = np.repeat(np.repeat(low.astype(np.float32), f, axis=1), f, axis=2)
    report.append(
      {
        "size": int(h),
        "input_difference": round(float(np.abs(down - low).mean()), 2),
        "added_detail": round(float(np.abs(high - up).mean()), 2),
      }
    )
  return report


def evaluate_cascade(
  imagen, samples: int = EVAL_SAMPLES, two_samples: int = TWO_EVAL_SAMPLES, *, seed: int = 1
) -> dict:
  """Prompt following of the cascade: `samples` one-shape prompts (colour, shape, position) at
  the final stage and per stage, the same for `two_samples` two-shape prompts (both colours,
  both shapes, the relation), the reader's own accuracy on rendered ground truth at each stage's
  size (the ceiling of each figure), and each SR stage's agreement with its input."""
  prompts, scenes = shapes_eval.evaluation_prompts(samples, seed=1234)
  images = imagen.sample(prompts, seed=seed).images
  report = shapes_eval.evaluate(images[-1], scenes)
  two_prompts, two_scenes = shapes_eval.evaluation_prompts(two_samples, seed=1234, two=True)
  two = imagen.sample(two_prompts, seed=seed).images
  report["per_stage"] = [
    {
      "size": int(one.shape[1]),
      **shapes_eval.evaluate(one, scenes),
      "reader_on_ground_truth": shapes_eval.reader_accuracy(200, size=int(one.shape[1])),
    }
    for one in images
  ]
  report["two_shapes"] = [
    {
      "size": int(pair.shape[1]),
      **shapes_eval.evaluate_two(pair, two_scenes),
      "reader_on_ground_truth": shapes_eval.reader_accuracy(200, size=int(pair.shape[1]), two=True),
    }
    for pair in two
  ]
  report["sr_stages"] = sr_consistency(images)
  return report


def _save_grid(images: np.ndarray, path: pathlib.Path, columns: int) -> None:
  Image.fromarray(grid(images, columns=columns)).save(path)


def run_demo(
  out="imagen_demo",
  *,
  quick: bool = False,
  evaluate: bool = True,
  overrides: list[str] | tuple[str, ...] = (),
) -> dict:
  """Trains (or resumes) the demo cascade in `out`, samples and evaluates it; returns a summary."""
  from imagen_jax.pipeline import Imagen
  from imagen_jax.pipeline.loading import DEMO_SUMMARY
  from imagen_jax.train import train_and_evaluate

  out = pathlib.Path(paths.absolute(out))
  if quick:  # apart from a full demo in the same --out, which a quick run must not resume
    out = out / "quick"
  out.mkdir(parents=True, exist_ok=True)
  data_dir = out / "tfds"
  summary = {"out": str(out), "quick": quick, "stages": {}}
  start = time.perf_counter()
  for name in STAGES:
    args = [f"--config.data.data_dir={data_dir}", *(QUICK[name] if quick else []), *overrides]
    config = load_config(f"demo:{name}", args)
    t0 = time.perf_counter()
    result = train_and_evaluate(config, out / name)
    summary["stages"][name] = {
      "step": result["step"],
      "loss": result.get("loss"),
      "seconds": round(time.perf_counter() - t0, 1),
    }
    log.info("stage %s: step %d in %.0fs", name, result["step"], time.perf_counter() - t0)
    if result.get("stopped_by"):
      summary.update(stopped_by=result["stopped_by"], stopped_stage=name, step=result["step"])
      return summary

  imagen = Imagen.load([str(out / name) for name in STAGES])
  steps = QUICK_SAMPLE_STEPS if quick else None
  t0 = time.perf_counter()
  per_stage = imagen.sample(list(PROMPTS), seed=0, steps=steps, progress=True)
  summary["sample_seconds"] = round(time.perf_counter() - t0, 1)
  for k, images in enumerate(per_stage, 1):
    _save_grid(images, out / f"samples_stage{k}.png", columns=len(PROMPTS))
  # One row per prompt: the three stages side by side, each upsampled to the final size.
  size = per_stage[-1].shape[1]
  rows = [
    np.asarray(Image.fromarray(im).resize((size, size), Image.NEAREST))
    for i in range(len(PROMPTS))
    for im in (s[i] for s in per_stage)
  ]
  _save_grid(np.stack(rows), out / "samples.png", columns=len(per_stage))

  if evaluate and not quick:  # untrained --quick models would only measure noise
    t0 = time.perf_counter()
    report = evaluate_cascade(imagen)
    report["sample_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    summary["eval"] = report
  summary["seconds"] = round(time.perf_counter() - start, 1)
  (out / DEMO_SUMMARY).write_text(json.dumps(summary, indent=1))  # also names the stages to load
  return summary
