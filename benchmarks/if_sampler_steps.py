"""How few DDIM / DPM-Solver++ steps sample DeepFloyd IF's stage I like 100 DDPM steps, and what
the tiny IF cascade of the tests costs on this machine. Not part of the package or of CI.

The cascade is the tests' (tests/helpers.py if_pipelines: the golden tiny random U-Nets and T5),
so the figures show the samplers' convergence on IF's discrete schedule, with IF's guidance (7)
and thresholding, not image quality. For each sampler and step count, over `--images` prompts:
- swd: the sliced Wasserstein distance between its images and those of DDPM at 100 steps, next
  to that between two DDPM-100 runs with different seeds (the noise floor: two draws of the
  same law differ by that much);
- rms_to_converged: for the deterministic samplers, the RMS difference (in [0, 255]) to the same
  sampler at 250 steps.

  python benchmarks/if_sampler_steps.py [--images 32] [--out docs/if_sampler_steps.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from helpers import if_pipelines

from imagen_jax import Imagen

PROMPTS = ["a red circle", "an owl", "a blue square on a white background", "a white owl"]


def swd(a: np.ndarray, b: np.ndarray, projections: int = 256, seed: int = 0) -> float:
  """Sliced Wasserstein-1 distance between two equal-sized sets of images (as vectors)."""
  a = a.reshape(len(a), -1).astype(np.float64)
  b = b.reshape(len(b), -1).astype(np.float64)
  dirs = np.random.default_rng(seed).standard_normal((a.shape[1], projections))
  dirs /= np.linalg.norm(dirs, axis=0)
  return float(np.mean(np.abs(np.sort(a @ dirs, 0) - np.sort(b @ dirs, 0))))


def run(imagen, prompts, *, seed, sampler, steps, stop=1):
  imagen.sample(prompts, seed=seed, sampler=sampler, steps=steps, stop_at_stage=stop)  # compile
  t0 = time.perf_counter()
  images = imagen.sample(prompts, seed=seed, sampler=sampler, steps=steps, stop_at_stage=stop)
  return images[-1], (time.perf_counter() - t0) / len(prompts)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=32)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  prompts = (PROMPTS * args.images)[: args.images]
  with tempfile.TemporaryDirectory() as tmp:
    imagen = Imagen.from_pretrained([str(p) for p in if_pipelines(tmp)], dtype=jnp.float32)
    report = {"devices": jax.device_count(), "images": args.images, "stage_1": {}}
    ref, ref_time = run(imagen, prompts, seed=0, sampler="ddpm", steps=100)
    other, _ = run(imagen, prompts, seed=1, sampler="ddpm", steps=100)
    report["stage_1"]["ddpm"] = {"100": {"swd": swd(ref, other), "s_per_image": ref_time}}
    for sampler in ("ddim", "dpm++2m"):
      converged, _ = run(imagen, prompts, seed=0, sampler=sampler, steps=250)
      rows = {}
      for steps in (5, 10, 15, 20, 25, 50, 100):
        images, seconds = run(imagen, prompts, seed=0, sampler=sampler, steps=steps)
        diff = images.astype(np.float64) - converged
        rows[str(steps)] = {
          "swd": swd(images, ref),
          "rms_to_converged": float(np.sqrt(np.mean(diff**2))),
          "s_per_image": seconds,
        }
        print(sampler, steps, rows[str(steps)], flush=True)
      report["stage_1"][sampler] = rows
    for batch in (1, 4):
      imagen.sample(prompts[:batch], seed=0)  # compile both stages at IF's defaults
      t0 = time.perf_counter()
      out = imagen.sample(prompts[:batch], seed=0)
      report[f"cascade_defaults_batch{batch}_s"] = time.perf_counter() - t0
      report["cascade_sizes"] = [list(o.shape[1:3]) for o in out]
  print(json.dumps(report, indent=1))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
  main()
