"""Golden outputs of diffusers' DDPMScheduler configured as DeepFloyd IF's, for
tests/test_if_scheduler.py. Run by hand in a separate environment (CI never installs torch):

  python3 -m venv /tmp/goldenv && /tmp/goldenv/bin/pip install torch==2.13.0 diffusers==0.42.1
  /tmp/goldenv/bin/python tests/golden/make_if_scheduler_golden.py

Writes tests/golden/if_scheduler/ddpm.npz: the schedule, the inference steps of several spacings,
and for fixed inputs (x_t, the model's eps and variance channels, the step noise) every step of a
10-step learned-range sampling with IF's thresholding (stage I: sample_max_value 1.5) and the
stage II noising at level 250. Arrays are NCHW, as diffusers has them.
"""

import pathlib

import numpy as np
import torch
from diffusers import DDPMScheduler

OUT = pathlib.Path(__file__).parent / "if_scheduler" / "ddpm.npz"


def scheduler(**overrides):
  config = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="epsilon",
    variance_type="learned_range",
    thresholding=True,
    dynamic_thresholding_ratio=0.95,
    sample_max_value=1.5,
    clip_sample=True,
    clip_sample_range=1.0,
  )
  return DDPMScheduler(**{**config, **overrides})


def main():
  rng = np.random.default_rng(0)
  out = {}
  s = scheduler()
  out["betas"] = s.betas.numpy()
  out["alphas_cumprod"] = s.alphas_cumprod.numpy()
  out["linear_betas"] = scheduler(beta_schedule="linear").betas.numpy()
  for spacing in ("leading", "trailing", "linspace"):
    for n in (10, 50, 100):
      t = scheduler(timestep_spacing=spacing)
      t.set_timesteps(n)
      out[f"steps_{spacing}_{n}"] = t.timesteps.numpy()

  steps = 10
  s.set_timesteps(steps)
  x = torch.from_numpy(rng.normal(size=(2, 3, 8, 8)).astype(np.float32) * 1.5)
  out["x_T"] = x.numpy()
  outputs, noises, x_prev, x0 = [], [], [], []
  for t in s.timesteps:
    model_out = rng.normal(size=(2, 6, 8, 8)).astype(np.float32)
    model_out[:, 3:] = np.tanh(model_out[:, 3:])  # the variance value lies in [-1, 1]
    noise = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    outputs.append(model_out)
    noises.append(noise)
    result = _step_with_noise(s, model_out, t, x, noise)
    x = result.prev_sample
    x_prev.append(x.numpy())
    x0.append(result.pred_original_sample.numpy())
  out["model_outputs"], out["noises"] = np.stack(outputs), np.stack(noises)
  out["x_prev"], out["x0"] = np.stack(x_prev), np.stack(x0)

  noising = scheduler(variance_type="fixed_small", thresholding=False)
  low = rng.uniform(-1, 1, size=(2, 3, 8, 8)).astype(np.float32)
  noise = rng.normal(size=low.shape).astype(np.float32)
  levels = torch.tensor([250, 250])
  out["noising_input"], out["noising_noise"] = low, noise
  out["noised"] = noising.add_noise(torch.from_numpy(low), torch.from_numpy(noise), levels).numpy()
  OUT.parent.mkdir(exist_ok=True)
  np.savez_compressed(OUT, **out)
  print(f"wrote {OUT}: {sorted(out)}")


def _step_with_noise(s, model_out, t, x, noise):
  """DDPMScheduler.step with its variance noise given: diffusers draws it with randn_tensor, so
  it is patched to return `noise` for this call."""
  import diffusers.schedulers.scheduling_ddpm as ddpm

  original = ddpm.randn_tensor
  ddpm.randn_tensor = lambda shape, **kwargs: torch.from_numpy(noise)
  try:
    return s.step(torch.from_numpy(model_out), t, x)
  finally:
    ddpm.randn_tensor = original


if __name__ == "__main__":
  main()
