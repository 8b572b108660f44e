"""DeepFloyd IF's sampling math against diffusers' DDPMScheduler (golden files made by
tests/golden/make_if_scheduler_golden.py): the betas, the inference steps, a 10-step ancestral
sampling with the learned-range variance and IF's dynamic thresholding, and stage II's noising."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import discrete
from imagen_jax.errors import InputError

GOLDEN = np.load(pathlib.Path(__file__).parent / "golden" / "if_scheduler" / "ddpm.npz")


def nhwc(x):
  return np.moveaxis(np.asarray(x), -3, -1)


def test_betas_match_diffusers():
  np.testing.assert_allclose(discrete.betas(1000), GOLDEN["betas"], rtol=1e-6)
  np.testing.assert_allclose(discrete.betas(1000, "linear"), GOLDEN["linear_betas"], rtol=1e-6)
  alpha_bar = discrete.alphas_cumprod(discrete.betas(1000))
  np.testing.assert_allclose(alpha_bar, GOLDEN["alphas_cumprod"], rtol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [10, 50, 100])
def test_inference_steps_match_diffusers(spacing, n):
  steps = discrete.inference_steps(1000, n, spacing)
  np.testing.assert_array_equal(steps, GOLDEN[f"steps_{spacing}_{n}"])


def test_learned_range_sampling_with_thresholding_matches_diffusers_step_by_step():
  alpha_bar = jnp.asarray(GOLDEN["alphas_cumprod"])
  steps = discrete.inference_steps(1000, 10)
  step = jax.jit(discrete.learned_range_step, static_argnames=("threshold_percentile", "max_value"))
  x = jnp.asarray(nhwc(GOLDEN["x_T"]))
  for i, t in enumerate(steps):
    out = nhwc(GOLDEN["model_outputs"][i])
    x, x0 = step(
      x,
      out[..., :3],
      out[..., 3:],
      nhwc(GOLDEN["noises"][i]),
      t=int(t),
      t_prev=int(steps[i + 1]) if i + 1 < len(steps) else -1,
      alpha_bar=alpha_bar,
      threshold_percentile=95.0,
      max_value=1.5,
    )
    np.testing.assert_allclose(x0, nhwc(GOLDEN["x0"][i]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x, nhwc(GOLDEN["x_prev"][i]), rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(x0).max()) <= 1.0 + 1e-6  # thresholded


def test_stage_two_noising_matches_diffusers():
  noised = discrete.add_noise(
    jnp.asarray(nhwc(GOLDEN["noising_input"])),
    jnp.asarray(nhwc(GOLDEN["noising_noise"])),
    jnp.array([250, 250]),
    GOLDEN["alphas_cumprod"],
  )
  np.testing.assert_allclose(noised, nhwc(GOLDEN["noised"]), rtol=1e-6, atol=1e-6)


def test_bad_schedule_and_step_counts_are_clear_errors():
  with pytest.raises(InputError, match=r"schedule.*'cosine'"):
    discrete.betas(1000, "cosine")
  with pytest.raises(InputError, match="num_steps"):
    discrete.inference_steps(1000, 0)


def test_the_scan_sampler_replays_diffusers_run():
  steps = discrete.inference_steps(1000, 10)
  outputs = jnp.asarray(nhwc(GOLDEN["model_outputs"]))

  def model_fn(x, t):
    out = outputs[jnp.argmax(jnp.asarray(steps) == t)]
    return out[..., :3], out[..., 3:]

  x = jax.jit(
    lambda: discrete.sample(
      model_fn,
      (2, 8, 8, 3),
      jax.random.key(0),
      alpha_bar=GOLDEN["alphas_cumprod"],
      steps=steps,
      threshold_percentile=95.0,
      max_value=1.5,
      x_T=nhwc(GOLDEN["x_T"]),
      noises=nhwc(GOLDEN["noises"]),
    )
  )()
  np.testing.assert_allclose(x, nhwc(GOLDEN["x_prev"][-1]), rtol=1e-5, atol=1e-5)


def test_ddpm_with_the_exact_eps_of_gaussian_data_samples_that_gaussian():
  """x ~ N(0.3, 0.5^2): with the exact E[eps | x_t] and the posterior variance (variance value
  -1), 1000 ancestral steps give samples of that law."""
  mu, std = 0.3, 0.5
  alpha_bar = jnp.asarray(discrete.alphas_cumprod(discrete.betas(1000)))

  def model_fn(x, t):
    a = alpha_bar[t]
    eps = jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * std**2 + 1 - a)
    return eps, -jnp.ones_like(x)

  x = jax.jit(
    lambda key: discrete.sample(
      model_fn, (20_000, 1), key, alpha_bar=alpha_bar, steps=discrete.inference_steps(1000, 1000)
    )
  )(jax.random.key(1))
  assert abs(float(x.mean()) - mu) < 0.02
  assert abs(float(x.std()) - std) < 0.02


@pytest.mark.parametrize("sampler, steps", [("ddim", 100), ("dpm++2m", 20)])
def test_ode_samplers_on_the_discrete_steps_sample_gaussian_data(sampler, steps):
  """DDIM and DPM-Solver++ on IF's schedule (discrete.Discrete, visiting exactly the "trailing"
  steps from 999) with the exact eps of x ~ N(0.3, 0.5^2) give samples of that law. (From
  "leading" steps, which start at 1000 - 1000 / steps, the pure-noise start is off by the signal
  left at that step: DPM-Solver++ at 20 steps then gives std 0.546.)"""
  from imagen_jax import diffusion

  mu, std = 0.3, 0.5
  alpha_bar = discrete.alphas_cumprod(discrete.betas(1000))
  schedule = discrete.Discrete(alpha_bar)
  visited = discrete.inference_steps(1000, steps, "trailing")
  times = discrete.step_times(visited, 1000)
  np.testing.assert_array_equal(np.asarray(schedule.step(jnp.asarray(times[:-1]))), visited)
  np.testing.assert_allclose(
    np.asarray(schedule.logsnr(jnp.asarray(times[:-1]))),
    discrete.logsnr_of_steps(alpha_bar)[visited],
    rtol=1e-5,
  )
  table = jnp.asarray(alpha_bar)

  def eps_fn(z, t):
    a = table[schedule.step(t)][:, None]
    return jnp.sqrt(1 - a) * (z - jnp.sqrt(a) * mu) / (a * std**2 + 1 - a)

  x = jax.jit(
    lambda key: diffusion.sample(
      eps_fn, (20_000, 1), key, schedule=schedule, steps=steps, sampler=sampler, times=times
    )
  )(jax.random.key(2))
  assert abs(float(x.mean()) - mu) < 0.02
  assert abs(float(x.std()) - std) < 0.02
