"""Samplers of the reverse process, each one `lax.scan` over a time grid (the caller jits it).

A step goes from time t to an earlier time s on a grid from t = 1 to t = 0: uniform in t
("time" spacing, the default of "ddpm" and "ddim") or uniform in log-SNR over [-10, 10] ("logsnr",
the default of "dpm++2m", whose few large steps need it). Every formula is written with log-SNR
values lam_t < lam_s; the last step goes to lam = +inf (alpha = 1, sigma = 0), where each sampler
returns its estimate of the clean image.

- "ddpm": ancestral sampling from the posterior q(z_s | z_t, x = x_hat) (Ho et al. 2020), whose
  log-variance interpolates between the posterior's (`logvar_interp` = 0) and the forward
  step's (= 1), as in iDDPM (Nichol & Dhariwal 2021, eq. 15) with a fixed interpolation.
- "ddim": DDIM (Song et al. 2021) with stochasticity `eta` (0 deterministic, 1 ancestral).
- "dpm++2m": DPM-Solver++(2M) (Lu et al. 2022), a second-order multistep solver of the
  probability-flow ODE in half-log-SNR time; first order on the first and the last step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.diffusion import editing, predictions, rng
from imagen_jax.diffusion.editing import Edit, start_steps
from imagen_jax.diffusion.progress import report
from imagen_jax.diffusion.schedules import Schedule
from imagen_jax.diffusion.thresholding import check_threshold
from imagen_jax.diffusion.thresholding import threshold as threshold_fn
from imagen_jax.errors import InputError

SAMPLERS = ("ddpm", "ddim", "dpm++2m")
SPACINGS = ("time", "logsnr")
# The "logsnr" grid spans [-10, 10]: at -10 alpha = e^-5 leaves no visible signal, at +10
# sigma = e^-5 is below one 8-bit grey level of [-1, 1] (2 / 255).
LOGSNR_SPAN = (-10.0, 10.0)


@functools.lru_cache(maxsize=64)
def time_grid(schedule: Schedule, steps: int, spacing: str = "time") -> np.ndarray:
  """[steps + 1] times from 1 down to 0 (float32): uniform in t, or uniform in logsnr."""
  if spacing == "time":
    return np.linspace(1.0, 0.0, steps + 1, dtype=np.float32)
  dense_t = np.linspace(0.0, 1.0, 100_001)
  with jax.ensure_compile_time_eval():  # a constant of the program, also inside a caller's jit
    dense_lam = np.asarray(schedule.logsnr(dense_t), np.float64)  # decreasing in t
  lam = np.linspace(max(LOGSNR_SPAN[0], dense_lam[-1]), min(LOGSNR_SPAN[1], dense_lam[0]), steps)
  t = np.interp(lam, dense_lam[::-1], dense_t[::-1])
  t[0] = 1.0
  return np.append(t, 0.0).astype(np.float32)


def logsnr_grid(schedule: Schedule, t_grid):
  """logsnr at the time grid, with +inf at t = 0 so the last step lands on clean data."""
  return schedule.logsnr(t_grid).at[-1].set(jnp.inf)


def _log_alpha_sigma(lam):
  """(log alpha, log sigma) = (log_sigmoid(lam) / 2, log_sigmoid(-lam) / 2); exact at lam = inf."""
  return 0.5 * jax.nn.log_sigmoid(lam), 0.5 * jax.nn.log_sigmoid(-lam)


def ddpm_step(z, x_hat, noise, *, lam_t, lam_s, logvar_interp: float = 0.0):
  """z_s ~ N(mean, var): mean = (alpha_s / alpha_t) e^(lam_t - lam_s) z + alpha_s c x_hat,
  c = 1 - e^(lam_t - lam_s); var = exp(v log(c sigma_t^2) + (1 - v) log(c sigma_s^2))."""
  log_a_t, log_s_t = _log_alpha_sigma(lam_t)
  log_a_s, log_s_s = _log_alpha_sigma(lam_s)
  c = -jnp.expm1(lam_t - lam_s)
  mean = jnp.exp(log_a_s - log_a_t + lam_t - lam_s) * z + jnp.exp(log_a_s) * c * x_hat
  log_var = jnp.log(c) + 2 * (logvar_interp * log_s_t + (1 - logvar_interp) * log_s_s)
  std = jnp.where(jnp.isfinite(lam_s), jnp.exp(0.5 * log_var), 0.0)
  return mean + std * noise


def ddim_step(x_hat, eps_hat, noise, *, lam_t, lam_s, eta: float = 0.0):
  """z_s = alpha_s x_hat + sqrt(sigma_s^2 - s_eta^2) eps_hat + s_eta noise,
  s_eta^2 = eta^2 (1 - e^(lam_t - lam_s)) sigma_s^2."""
  log_a_s, log_s_s = _log_alpha_sigma(lam_s)
  var_s = jnp.exp(2 * log_s_s)
  var_eta = eta**2 * -jnp.expm1(lam_t - lam_s) * var_s
  return jnp.exp(log_a_s) * x_hat + jnp.sqrt(var_s - var_eta) * eps_hat + jnp.sqrt(var_eta) * noise


def dpm_solver_2m_step(z, data_pred, *, lam_t, lam_s):
  """z_s = (sigma_s / sigma_t) z - alpha_s expm1(-h) D, with h = (lam_s - lam_t) / 2 and D the
  (possibly multistep-corrected) data prediction."""
  _, log_s_t = _log_alpha_sigma(lam_t)
  log_a_s, log_s_s = _log_alpha_sigma(lam_s)
  h = 0.5 * (lam_s - lam_t)
  return jnp.exp(log_s_s - log_s_t) * z - jnp.exp(log_a_s) * jnp.expm1(-h) * data_pred


def sample(
  model_fn,
  shape,
  key,
  *,
  schedule: Schedule,
  steps: int,
  sampler: str = "ddpm",
  eta: float = 0.0,
  logvar_interp: float = 0.0,
  threshold: str = "none",
  percentile: float = 99.5,
  objective: str = "eps",
  spacing: str | None = None,
  times=None,
  threshold_max: float = float("inf"),
  edit: Edit | None = None,
  progress=None,
):
  """Draws samples from a model of the reverse process, as one `lax.scan` (the caller jits).

  A pure function: called as it is, its scan runs eagerly (compiled on every call); inside the
  caller's `jax.jit` (with everything but arrays static) it compiles once, with the model.

  Args:
    model_fn: model_fn(z, t) -> the prediction named by `objective` ("eps", "x" or "v"), already
      guided; z [B, ...] float32, t [B] in [0, 1]. Pure and traceable.
    shape: the samples' shape [B, ...].
    key: one PRNG key, or keys [B], one per example (then each sample depends on its own key
      alone, not on its batch); typed (jax.random.key) or legacy (jax.random.PRNGKey).
    schedule: the noise schedule (diffusion.get_schedule).
    steps: the number of steps (U-Net calls, times edit.resample).
    sampler: "ddpm" (ancestral), "ddim" or "dpm++2m" (see the module docstring).
    eta: DDIM's stochasticity, in [0, 1].
    logvar_interp: DDPM's log-variance interpolation, in [0, 1] (0: the posterior's).
    threshold: "none", "static" or "dynamic", applied to x_hat at every step.
    percentile: the dynamic threshold's percentile of |x_hat|.
    objective: what model_fn predicts.
    spacing: the time grid, "time" or "logsnr" (None: the sampler's default).
    times: [steps + 1] times from near 1 down to 0 that replace the grid (discrete.step_times
      visits given steps of a discrete schedule).
    threshold_max: the dynamic threshold's largest scale (DeepFloyd IF: 1.5 or 1).
    edit: a diffusion.Edit: with strength s < 1 the scan starts from the source noised to t = s
      and runs round(steps x s) steps over [s, 0] (image-to-image); with a mask, the known region
      is the source noised to each step's level and, at the end, the source itself
      (inpainting); edit.resample > 1 adds RePaint's jumps back and forth.
    progress: called on the host with the step index after every step (a function, or a
      diffusion.progress.Listener).

  Returns:
    float32 samples [*shape].

  Raises:
    InputError: an unknown sampler, spacing, threshold or objective, or steps, eta,
      logvar_interp or times out of range.
  """
  spacing = _check_options(
    steps=steps, sampler=sampler, eta=eta, logvar_interp=logvar_interp, spacing=spacing,
    threshold=threshold, objective=objective,
  )  # fmt: skip
  if edit is not None:
    edit.check()
    if edit.strength < 1.0 and times is None:
      steps = start_steps(steps, edit.strength)
  lam_grid, t_grid = _grids(schedule, steps, spacing, times, edit)
  key_init, key_steps = rng.split(key)
  z = editing.start(rng.normal(key_init, shape), edit, logsnr=lam_grid[0], key=key_init)
  step_options = dict(
    sampler=sampler, eta=eta, logvar_interp=logvar_interp, threshold=threshold,
    percentile=percentile, threshold_max=threshold_max, objective=objective,
  )  # fmt: skip

  def body(carry, xs):
    z, x_prev, h_prev = carry
    i, t, lam_t, lam_s = xs

    def one_step(z, key):
      pred = model_fn(z, jnp.full((shape[0],), t, jnp.float32)).astype(jnp.float32)
      z_s, x_hat = reverse_step(
        z, pred, rng.normal(key, shape), x_prev=x_prev, h_prev=h_prev, first=i == 0,
        lam_t=lam_t, lam_s=lam_s, **step_options,
      )  # fmt: skip
      return z_s, x_hat

    z_s, x_hat = editing.step(
      one_step, z, rng.fold_in(key_steps, i), edit, lam_t=lam_t, lam_s=lam_s
    )
    report(progress, i)
    return (z_s, x_hat, 0.5 * (lam_s - lam_t)), None

  xs = (jnp.arange(steps), t_grid[:-1], lam_grid[:-1], lam_grid[1:])
  carry = (z, jnp.zeros_like(z), jnp.ones((), jnp.float32))
  (z, _, _), _ = jax.lax.scan(body, carry, xs)
  return z


def _check_options(*, steps, sampler, eta, logvar_interp, spacing, threshold, objective) -> str:
  """The time spacing to use, after refusing options out of range."""
  if sampler not in SAMPLERS:
    raise InputError(f"Unknown sampler {sampler!r}; choose one of {SAMPLERS}.")
  if not isinstance(steps, int) or steps < 1:
    raise InputError(f"steps must be a positive integer, got {steps!r}.")
  if not 0.0 <= eta <= 1.0:
    raise InputError(f"eta must be in [0, 1], got {eta}.")
  if not 0.0 <= logvar_interp <= 1.0:
    raise InputError(f"logvar_interp must be in [0, 1], got {logvar_interp}.")
  if spacing is None:
    spacing = "logsnr" if sampler == "dpm++2m" else "time"
  if spacing not in SPACINGS:
    raise InputError(f"Unknown time spacing {spacing!r}; choose one of {SPACINGS}.")
  check_threshold(threshold)
  predictions.check_objective(objective)
  return spacing


def _grids(schedule: Schedule, steps: int, spacing: str, times, edit: Edit | None):
  """(logsnr, t), each [steps + 1], of the scan's grid: `times` if given, else the spacing's
  grid scaled to start at an edit's strength; logsnr is +inf at the end."""
  if times is None:
    strength = 1.0 if edit is None else float(edit.strength)
    t_grid = jnp.asarray(time_grid(schedule, steps, spacing)) * strength
  elif len(times) != steps + 1 or times[-1] != 0:
    raise InputError(f"times must hold {steps + 1} times ending at 0, got {len(times)}.")
  else:
    t_grid = jnp.asarray(times, jnp.float32)
  return logsnr_grid(schedule, t_grid), t_grid


def reverse_step(
  z, pred, noise, *, x_prev, h_prev, first, lam_t, lam_s, sampler, eta, logvar_interp,
  threshold, percentile, threshold_max, objective,
):  # fmt: skip
  """(z at lam_s, x_hat) from z at lam_t and the model's prediction `pred` there: x_hat and
  eps_hat (thresholded), then the sampler's update. dpm++2m reads the previous step's x_hat
  (`x_prev`) and half-log-SNR step (`h_prev`); it is first order on the first and last step."""
  x_hat, eps_hat = predictions.x_and_eps_from_prediction(
    pred, z=z, logsnr=lam_t, objective=objective
  )
  if threshold != "none":
    x_hat = threshold_fn(x_hat, method=threshold, percentile=percentile, max_value=threshold_max)
    eps_hat = predictions.predict_eps_from_x(z=z, x=x_hat, logsnr=lam_t)
  if sampler == "ddpm":
    return ddpm_step(z, x_hat, noise, lam_t=lam_t, lam_s=lam_s, logvar_interp=logvar_interp), x_hat
  if sampler == "ddim":
    return ddim_step(x_hat, eps_hat, noise, lam_t=lam_t, lam_s=lam_s, eta=eta), x_hat
  h = 0.5 * (lam_s - lam_t)
  first_order = first | jnp.isinf(lam_s)
  r = h_prev / jnp.where(first_order, 1.0, h)
  data_pred = jnp.where(first_order, x_hat, x_hat + (x_hat - x_prev) / (2 * r))
  return dpm_solver_2m_step(z, data_pred, lam_t=lam_t, lam_s=lam_s), x_hat
