"""Prompt following against sampling time, per stage and sampler, on a trained demo cascade.

For each stage in turn, only that stage's sampler and step count change: the base stage samples
the evaluation prompts; sr1 super-resolves the base's 256-step DDPM pictures (start_image); sr2
runs after the base and sr1 at their configs' settings. Each variant is read by the shapes
reader at that stage's size (colour, shape, position; for SR stages also the agreement with the
input, demo.sr_consistency). Time per image comes from a separate warm call per stage and
sampler (seconds per step at batch `--time-batch`, times the steps a variant runs), so
compilation is not counted. The summary names, per stage and sampler, the fewest steps whose
shape and colour accuracy stay within 2 points of the stage's 256-step DDPM result.

  python benchmarks/time_to_quality.py --stages runs/demo/base runs/demo/sr1 runs/demo/sr2 \
      --json docs/time_to_quality.json --plot docs/time_to_quality.png

Not part of the package or of CI; --plot needs matplotlib (pip install matplotlib).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from imagen_jax import Imagen
from imagen_jax.data import shapes_eval
from imagen_jax.demo_job import sr_consistency
from imagen_jax.diffusion import editing

STEPS = {"ddpm": (32, 64, 128, 256), "ddim": (8, 16, 32, 64), "dpm++2m": (8, 16, 32, 64)}
REFERENCE = ("ddpm", 256)
TOLERANCE = 0.02  # of accuracy: "within 2 points"


def _options(imagen, stage: int, sampler: str, steps: int) -> dict:
  configs = [s.config.sample for s in imagen.stages]
  samplers = [c.sampler for c in configs]
  counts = [int(c.steps) for c in configs]
  samplers[stage], counts[stage] = sampler, steps
  return {"sampler": samplers, "steps": counts, "stop_at_stage": stage + 1}


def _steps_run(loaded, steps: int) -> int:
  """The steps a stage runs of `steps`: an SR stage with sr_strength < 1 runs that fraction."""
  strength = float(getattr(loaded.config.sample, "sr_strength", 1.0))
  return editing.start_steps(steps, strength) if strength < 1.0 else steps


def _seconds_per_step(imagen, stage: int, sampler: str, prompts, start) -> float:
  """Seconds per step and image of `stage` with `sampler`, from a warm call."""
  options = _options(imagen, stage, sampler, 16)
  kwargs = {"start_image": start} if stage > 0 else {}
  for _ in range(2):  # the first call compiles
    out = imagen.sample(prompts, seed=0, **options, **kwargs)
  return out.timings[-1].seconds / _steps_run(imagen.stages[stage], 16) / len(prompts)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--stages", nargs=3, required=True, help="base, sr1, sr2 workdirs")
  parser.add_argument("--prompts", type=int, default=128, help="one-shape evaluation prompts")
  parser.add_argument("--time-batch", type=int, default=8)
  parser.add_argument("--json", required=True)
  parser.add_argument("--plot", help="a PNG of shape accuracy against seconds per image")
  args = parser.parse_args(argv)
  imagen = Imagen.load(args.stages)
  prompts, scenes = shapes_eval.evaluation_prompts(args.prompts, seed=1234)
  reference = imagen.sample(prompts, seed=1, stop_at_stage=1, steps=REFERENCE[1], sampler="ddpm")
  base_images = reference.images[0]
  timing_prompts = list(prompts[: args.time_batch])
  results = {"prompts": args.prompts, "stages": []}
  for stage, loaded in enumerate(imagen.stages):
    size = loaded.stage.output_size
    rows = []
    for sampler, grid in STEPS.items():
      start = base_images[: args.time_batch] if stage == 1 else None
      per_step = _seconds_per_step(imagen, stage, sampler, timing_prompts, start)
      for steps in grid:
        t0 = time.perf_counter()
        kwargs = {"start_image": base_images} if stage == 1 else {}
        out = imagen.sample(prompts, seed=1, **_options(imagen, stage, sampler, steps), **kwargs)
        ran = _steps_run(loaded, steps)
        row = {
          "sampler": sampler,
          "steps": steps,
          "steps_run": ran,
          "seconds_per_image": round(per_step * ran, 5),
          **shapes_eval.evaluate(out.images[-1], scenes),
        }
        if stage > 0:
          row["sr"] = sr_consistency(out.images[-2:])[0]
        rows.append(row)
        print(
          f"stage {stage + 1} ({size} px) {sampler:8s} {steps:4d} steps: shape "
          f"{row['shape_accuracy']:.3f} colour {row['color_accuracy']:.3f} position "
          f"{row['position_accuracy']:.3f}, {row['seconds_per_image'] * 1e3:.1f} ms/image "
          f"({time.perf_counter() - t0:.0f} s)",
          flush=True,
        )
    ref = next(r for r in rows if (r["sampler"], r["steps"]) == REFERENCE)
    fewest = {}
    for sampler in STEPS:
      ok = [
        r
        for r in rows
        if r["sampler"] == sampler
        and all(r[k] >= ref[k] - TOLERANCE for k in ("shape_accuracy", "color_accuracy"))
      ]
      if ok:
        best = min(ok, key=lambda r: r["steps"])
        fewest[sampler] = {"steps": best["steps"], "seconds_per_image": best["seconds_per_image"]}
    results["stages"].append({"stage": stage + 1, "size": size, "rows": rows, "fewest": fewest})
    print(f"stage {stage + 1}: fewest steps within 2 points of 256 DDPM steps: {fewest}")
  pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
  if args.plot:
    _plot(results, args.plot)
  return 0


def _plot(results: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  stages = results["stages"]
  fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.4))
  for ax, stage in zip(axes, stages):
    for sampler in STEPS:
      rows = [r for r in stage["rows"] if r["sampler"] == sampler]
      x = [r["seconds_per_image"] * 1e3 for r in rows]
      y = [100 * r["shape_accuracy"] for r in rows]
      ax.plot(x, y, "o-", label=sampler)
      for r, xi, yi in zip(rows, x, y):
        ax.annotate(str(r["steps"]), (xi, yi), xytext=(2, 3), textcoords="offset points", size=7)
    ax.set_xscale("log")
    ax.set_xlabel("ms per image (2-core CPU)")
    ax.set_title(f"stage {stage['stage']} ({stage['size']} px)")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel(f"shape right, % of {results['prompts']} prompts")
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


if __name__ == "__main__":
  sys.exit(main())
