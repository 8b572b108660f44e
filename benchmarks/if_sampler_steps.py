"""How few DDIM / DPM-Solver++ steps sample like IF's 100 DDPM steps on IF's schedule, and what
the tiny IF cascade of the tests costs on this machine. Not part of the package or of CI.

Steps: on IF's discrete schedule (1000 squaredcos_cap_v2 steps) with the exact eps of Gaussian
data x ~ N(0.3, 0.5^2), the error of the samples' mean and standard deviation (200k samples)
for DDPM with the posterior variance on IF's leading steps (IF's sampler) and for DDIM and
DPM-Solver++(2M) on trailing steps. The tiny cascade's random U-Nets are no guide here: their
eps changes erratically from one step to the next (random weights on the timestep sinusoids),
so no ODE solver converges on them before ~1000 steps.

Cascade: the tests' tiny IF cascade (tests/helpers.py if_pipelines: the golden tiny random
U-Nets and T5; 16 -> 64 px) at IF's defaults (100 + 50 DDPM steps, guidance 7 and 4), seconds
per call after compilation.

  python benchmarks/if_sampler_steps.py [--out docs/if_sampler_steps.json]
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

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from helpers import if_pipelines

from imagen_jax import Imagen, diffusion
from imagen_jax.diffusion import discrete

MU, STD, SAMPLES = 0.3, 0.5, 200_000


def gaussian_errors(sampler: str, steps: int) -> dict:
  alpha_bar = discrete.alphas_cumprod(discrete.betas(1000))
  table = jnp.asarray(alpha_bar)

  def eps(x, step):
    a = table[step]
    a = a.reshape(a.shape + (1,) * (x.ndim - a.ndim))
    return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * MU) / (a * STD**2 + 1 - a)

  key = jax.random.key(0)
  if sampler == "ddpm":
    x = jax.jit(
      lambda k: discrete.sample(
        lambda x, t: (eps(x, t), -jnp.ones_like(x)),
        (SAMPLES, 1),
        k,
        alpha_bar=alpha_bar,
        steps=discrete.inference_steps(1000, steps, "leading"),
      )
    )(key)
  else:
    schedule = discrete.Discrete(alpha_bar)
    times = discrete.step_times(discrete.inference_steps(1000, steps, "trailing"), 1000)
    x = jax.jit(
      lambda k: diffusion.sample(
        lambda z, t: eps(z, schedule.step(t)),
        (SAMPLES, 1),
        k,
        schedule=schedule,
        steps=steps,
        sampler=sampler,
        times=times,
      )
    )(key)
  return {"mean_error": float(x.mean()) - MU, "std_error": float(x.std()) - STD}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  report = {"gaussian": {"ddpm": {"100": gaussian_errors("ddpm", 100)}}}
  for sampler in ("ddim", "dpm++2m"):
    report["gaussian"][sampler] = {
      str(k): gaussian_errors(sampler, k) for k in (5, 10, 15, 20, 25, 50, 100)
    }
    print(sampler, report["gaussian"][sampler], flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    imagen = Imagen.from_pretrained([str(p) for p in if_pipelines(tmp)], dtype=jnp.float32)
    for batch in (1, 4):
      prompts = ["an owl"] * batch
      imagen.sample(prompts, seed=0)  # compiles both stages at IF's defaults
      t0 = time.perf_counter()
      imagen.sample(prompts, seed=0)
      report[f"tiny_cascade_batch{batch}_s"] = round(time.perf_counter() - t0, 3)
  report["devices"] = jax.device_count()
  print(json.dumps(report, indent=1))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
  main()
