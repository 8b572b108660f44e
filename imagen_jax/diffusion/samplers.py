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

from imagen_jax.diffusion import predictions, rng
from imagen_jax.diffusion.editing import Edit, paste_known, renoise, start_steps
from imagen_jax.diffusion.schedules import Schedule
from imagen_jax.diffusion.thresholding import check_threshold
from imagen_jax.diffusion.thresholding import threshold as threshold_fn

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
  """Draws samples [*shape] (float32) from a model of the reverse process.

  model_fn(z, t): z [B, ...] float32, t [B] in [0, 1]; returns the prediction named by
  `objective` ("eps", "x" or "v"), already guided. It must be pure and traceable.
  `key` is one PRNG key, or keys [B], one per example, so that each sample depends on its own
  key alone (not on its batch).
  A pure function: called as it is, its scan runs eagerly (compiled on every call); inside the
  caller's `jax.jit` (with everything but arrays static) it compiles once, with the model.
  `threshold` ("none", "static", "dynamic") is applied to x_hat at every step. `spacing` is the
  time grid ("time" or "logsnr"; None picks the sampler's default); `times` [steps + 1], from
  near 1 down to 0, replaces it (discrete.step_times visits given steps of a discrete schedule).
  `threshold_max` caps the dynamic threshold's scale (DeepFloyd IF: 1.5 or 1).
  `edit` (diffusion.editing.Edit) edits a source image: with strength s < 1 the scan starts from
  the source noised to t = s and runs round(steps x s) steps over [s, 0] (image-to-image); with
  a mask, the known region is the source noised to each step's level and, at the end, the
  source itself (inpainting); `edit.resample` > 1 adds RePaint's jumps back and forth.
  `progress`, if given, is called on the host with the step index after every step.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"Unknown sampler {sampler!r}; choose one of {SAMPLERS}.")
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a positive integer, got {steps!r}.")
  if not 0.0 <= eta <= 1.0:
    raise ValueError(f"eta must be in [0, 1], got {eta}.")
  if not 0.0 <= logvar_interp <= 1.0:
    raise ValueError(f"logvar_interp must be in [0, 1], got {logvar_interp}.")
  if spacing is None:
    spacing = "logsnr" if sampler == "dpm++2m" else "time"
  if spacing not in SPACINGS:
    raise ValueError(f"Unknown time spacing {spacing!r}; choose one of {SPACINGS}.")
  check_threshold(threshold)
  predictions.check_objective(objective)
  strength = 1.0
  if edit is not None:
    edit.check()
    strength = float(edit.strength)
    if strength < 1.0 and times is None:
      steps = start_steps(steps, strength)
  if times is None:
    t_grid = jnp.asarray(time_grid(schedule, steps, spacing)) * strength
  elif len(times) != steps + 1 or times[-1] != 0:
    raise ValueError(f"times must hold {steps + 1} times ending at 0, got {len(times)}.")
  else:
    t_grid = jnp.asarray(times, jnp.float32)
  lam_grid = logsnr_grid(schedule, t_grid)
  key_init, key_steps = rng.split(key)
  z = rng.normal(key_init, shape)
  if edit is not None:
    if strength < 1.0:  # SDEdit: the source at the first time of the grid
      z = predictions.q_sample(x=edit.source, eps=z, logsnr=lam_grid[0])
    z = paste_known(z, edit, logsnr=lam_grid[0], noise=rng.normal(rng.fold_in(key_init, 1), shape))
  resample = 1 if edit is None else int(edit.resample)

  def body(carry, xs):
    z, x_prev, h_prev = carry
    i, t, lam_t, lam_s = xs
    step_key = rng.fold_in(key_steps, i)
    for jump in range(resample):
      key = step_key if jump == 0 else rng.fold_in(step_key, 2 + jump)
      z_s, x_hat, h = one_step(z, x_prev, h_prev, i, t, lam_t, lam_s, key)
      if edit is not None:
        z_s = paste_known(z_s, edit, logsnr=lam_s, noise=rng.normal(rng.fold_in(key, 1), shape))
      if jump < resample - 1:  # RePaint: back to time t, and the step again
        z = renoise(z_s, rng.normal(rng.fold_in(key, 2), shape), lam_t=lam_t, lam_s=lam_s)
    if progress is not None:
      jax.debug.callback(progress, i)
    return (z_s, x_hat, h), None

  def one_step(z, x_prev, h_prev, i, t, lam_t, lam_s, key):
    """z at the next time of the grid, with this step's x_hat and half-log-SNR step h."""
    pred = model_fn(z, jnp.full((shape[0],), t, jnp.float32)).astype(jnp.float32)
    x_hat, eps_hat = predictions.x_and_eps_from_prediction(
      pred, z=z, logsnr=lam_t, objective=objective
    )
    if threshold != "none":
      x_hat = threshold_fn(x_hat, method=threshold, percentile=percentile, max_value=threshold_max)
      eps_hat = predictions.predict_eps_from_x(z=z, x=x_hat, logsnr=lam_t)
    noise = rng.normal(key, shape)
    h = 0.5 * (lam_s - lam_t)
    if sampler == "ddpm":
      z = ddpm_step(z, x_hat, noise, lam_t=lam_t, lam_s=lam_s, logvar_interp=logvar_interp)
    elif sampler == "ddim":
      z = ddim_step(x_hat, eps_hat, noise, lam_t=lam_t, lam_s=lam_s, eta=eta)
    else:
      first_order = (i == 0) | jnp.isinf(lam_s)
      r = h_prev / jnp.where(first_order, 1.0, h)
      data_pred = jnp.where(first_order, x_hat, x_hat + (x_hat - x_prev) / (2 * r))
      z = dpm_solver_2m_step(z, data_pred, lam_t=lam_t, lam_s=lam_s)
    return z, x_hat, h

  xs = (jnp.arange(steps), t_grid[:-1], lam_grid[:-1], lam_grid[1:])
  (z, _, _), _ = jax.lax.scan(body, (z, jnp.zeros_like(z), jnp.ones((), jnp.float32)), xs)
  return z
