"""Discrete-time DDPM (Ho et al. 2020) as DeepFloyd IF samples it: 1000 training steps, a beta
schedule, a subset of steps at inference, eps prediction with a learned-range variance
(Nichol & Dhariwal 2021) and dynamic thresholding. Pure functions over arrays; the formulas are
those of diffusers' DDPMScheduler, which IF's pipelines use (tests compare against it).

Time is an integer step t in [0, T); alpha_bar[t] is the cumulative product of 1 - beta.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.diffusion import editing, rng
from imagen_jax.diffusion.progress import report
from imagen_jax.diffusion.schedules import Schedule
from imagen_jax.diffusion.thresholding import dynamic_threshold
from imagen_jax.errors import InputError

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")
SPACINGS = ("leading", "trailing", "linspace")


def betas(num_steps: int = 1000, schedule: str = "squaredcos_cap_v2", *, start=1e-4, end=0.02):
  """float32 [num_steps]: "squaredcos_cap_v2" (iDDPM's cosine alpha_bar, each beta capped at
  0.999) or "linear" (DDPM's, from `start` to `end`)."""
  if schedule == "linear":
    return np.linspace(start, end, num_steps, dtype=np.float32)
  if schedule != "squaredcos_cap_v2":
    raise InputError(f"Unknown beta schedule {schedule!r}; choose one of {BETA_SCHEDULES}.")

  def alpha_bar(t):
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

  return np.array(
    [
      min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999)
      for i in range(num_steps)
    ],
    np.float32,
  )


def alphas_cumprod(beta) -> np.ndarray:
  """float32 [T]: alpha_bar[t] = prod_{s <= t} (1 - beta[s])."""
  return np.cumprod(1.0 - np.asarray(beta, np.float32), dtype=np.float32)


def inference_steps(num_train: int, num_steps: int, spacing: str = "leading", offset: int = 0):
  """int [num_steps], decreasing: the training steps visited when sampling in `num_steps`."""
  if not 1 <= num_steps <= num_train:
    raise InputError(f"num_steps must be in [1, {num_train}], got {num_steps}.")
  if spacing == "leading":
    steps = (np.arange(num_steps) * (num_train // num_steps)).round()[::-1] + offset
  elif spacing == "trailing":
    steps = np.round(np.arange(num_train, 0, -num_train / num_steps)) - 1
  elif spacing == "linspace":
    steps = np.linspace(0, num_train - 1, num_steps).round()[::-1]
  else:
    raise InputError(f"Unknown timestep spacing {spacing!r}; choose one of {SPACINGS}.")
  return steps.astype(np.int32)


def logsnr_of_steps(alpha_bar) -> np.ndarray:
  """float64 [T]: log(alpha_bar / (1 - alpha_bar)) at each training step."""
  ab = np.asarray(alpha_bar, np.float64)
  return np.log(ab) - np.log1p(-ab)


def step_times(steps, num_train: int) -> np.ndarray:
  """float32 [len(steps) + 1]: the continuous times (t + 1) / T of decreasing training steps,
  then 0 (clean data): the time grid on which diffusion.sample visits exactly those steps of a
  Discrete schedule."""
  return np.append((np.asarray(steps, np.float64) + 1) / num_train, 0.0).astype(np.float32)


class Discrete(Schedule):
  """A discrete schedule seen in continuous time, for the samplers of imagen_jax.diffusion:
  time t in [0, 1] is the training step t T - 1, and logsnr interpolates linearly between steps
  (exact at every step). Hashable: `alpha_bar` is kept as a tuple."""

  def __init__(self, alpha_bar):
    alpha_bar = tuple(float(a) for a in np.asarray(alpha_bar))
    # Schedule is a frozen dataclass: its fields are set once, here.
    object.__setattr__(self, "alpha_bar", alpha_bar)
    object.__setattr__(self, "name", f"discrete{len(alpha_bar)}")
    object.__setattr__(self, "_lam", logsnr_of_steps(alpha_bar))

  def __hash__(self):
    return hash(self.alpha_bar)

  def __eq__(self, other):
    return isinstance(other, Discrete) and other.alpha_bar == self.alpha_bar

  def step(self, t):
    """The (rounded) training step of time t."""
    return jnp.round(t * len(self.alpha_bar) - 1).astype(jnp.int32)

  def logsnr(self, t):
    steps = jnp.asarray(t, jnp.float32) * len(self.alpha_bar) - 1
    return jnp.interp(steps, jnp.arange(len(self._lam)), jnp.asarray(self._lam, jnp.float32))


def edit_steps(steps, strength: float) -> np.ndarray:
  """The last max(1, int(len(steps) x strength)) of decreasing steps: where image-to-image at
  `strength` starts (as diffusers' IF img2img pipelines cut their schedules)."""
  steps = np.asarray(steps)
  return steps[len(steps) - max(1, int(len(steps) * strength)) :]


def alpha_bar_at(alpha_bar, t):
  """alpha_bar[t], and 1 (clean data) for t = -1, the step after the last."""
  return jnp.where(t >= 0, jnp.asarray(alpha_bar)[jnp.maximum(t, 0)], 1.0)


def _logsnr(a):
  """log(a / (1 - a)), +inf at a = 1 (where editing.paste_known gives the source itself)."""
  return jnp.log(a) - jnp.log1p(-a)


def add_noise(x, noise, t, alpha_bar):
  """The forward process at step t ([B] or scalar): sqrt(alpha_bar) x + sqrt(1 - alpha_bar) eps
  (IF's stage II noises its upsampled input so, at the noise level it is told)."""
  a = jnp.asarray(alpha_bar)[t]
  a = a.reshape(a.shape + (1,) * (x.ndim - a.ndim))
  return jnp.sqrt(a) * x + jnp.sqrt(1.0 - a) * noise


def learned_range_step(
  x_t,
  eps,
  variance_value,
  noise,
  *,
  t,
  t_prev,
  alpha_bar,
  threshold_percentile: float | None = None,
  max_value: float = float("inf"),
):
  """One ancestral step from step t to t_prev (-1 after the last), -> (x_prev, x0_hat).

  x_t, eps, variance_value, noise: [B, ...]. The variance is exp of v max_log + (1 - v) min_log
  with v = (variance_value + 1) / 2, max_log = log(beta_t), min_log = log of the posterior
  variance (clamped at 1e-20); no noise is added at t = 0. With `threshold_percentile`, x0_hat
  is dynamically thresholded (at that percentile, s at most `max_value`)."""
  alpha_bar = jnp.asarray(alpha_bar)
  a_t = alpha_bar[t]
  a_prev = alpha_bar_at(alpha_bar, t_prev)
  beta_t = 1.0 - a_t / a_prev
  x0 = (x_t - jnp.sqrt(1.0 - a_t) * eps) / jnp.sqrt(a_t)
  if threshold_percentile is not None:
    x0 = dynamic_threshold(x0, percentile=threshold_percentile, max_value=max_value)
  mean = (
    jnp.sqrt(a_prev) * beta_t / (1.0 - a_t) * x0
    + jnp.sqrt(1.0 - beta_t) * (1.0 - a_prev) / (1.0 - a_t) * x_t
  )
  min_log = jnp.log(jnp.maximum((1.0 - a_prev) / (1.0 - a_t) * beta_t, 1e-20))
  max_log = jnp.log(beta_t)
  frac = (variance_value + 1.0) / 2.0
  log_var = frac * max_log + (1.0 - frac) * min_log
  x_prev = mean + jnp.where(t > 0, jnp.exp(0.5 * log_var) * noise, 0.0)
  return x_prev, x0


def sample(
  model_fn,
  shape,
  key,
  *,
  alpha_bar,
  steps,
  threshold_percentile: float | None = None,
  max_value: float = float("inf"),
  x_T=None,
  noises=None,
  edit=None,
  progress=None,
):
  """Ancestral sampling over the training steps `steps` as one lax.scan; pure, for the caller
  to jit.

  Args:
    model_fn: model_fn(x_t, t) -> (eps, variance_value), each [*shape], t an int32 scalar step;
      already guided (IF guides eps only and keeps the variance of the text branch).
    shape: the samples' shape [B, ...].
    key: one PRNG key or keys [B], one per example (diffusion.rng), typed or legacy.
    alpha_bar: [T] of the schedule.
    steps: the training steps to visit, decreasing (inference_steps; edit_steps cuts them for
      image-to-image).
    threshold_percentile: dynamic thresholding of x0 at this percentile (None: none), its
      scale at most `max_value`.
    x_T: the starting noise, and `noises` [len(steps), *shape] the steps' draws, to replay
      another sampler's run (default: drawn from `key`).
    edit: a diffusion.Edit: with strength < 1 the scan starts from the source noised to
      steps[0]; with a mask the known region is the source noised to each step's level and the
      source itself after the last; resample > 1 adds RePaint's jumps.
    progress: called on the host with the step index after every step.

  Returns:
    float32 images [*shape].
  """
  if edit is not None:
    edit.check()
  steps = np.asarray(steps, np.int32)
  previous = np.append(steps[1:], -1).astype(np.int32)
  alpha_bar = jnp.asarray(alpha_bar, jnp.float32)
  key_init, key_steps = rng.split(key)
  x = rng.normal(key_init, shape) if x_T is None else jnp.asarray(x_T)
  x = editing.start(x, edit, logsnr=_logsnr(alpha_bar[int(steps[0])]), key=key_init)

  def body(x, inputs):
    i, t, t_prev = inputs
    lam_t, lam_prev = _logsnr(alpha_bar[t]), _logsnr(alpha_bar_at(alpha_bar, t_prev))

    def one_step(x, key):
      eps, value = model_fn(x, t)
      noise = rng.normal(key, shape) if noises is None else jnp.asarray(noises)[i]
      return learned_range_step(
        x, eps, value, noise, t=t, t_prev=t_prev, alpha_bar=alpha_bar,
        threshold_percentile=threshold_percentile, max_value=max_value,
      )  # fmt: skip

    x_prev, _ = editing.step(
      one_step, x, rng.fold_in(key_steps, i), edit, lam_t=lam_t, lam_s=lam_prev
    )
    report(progress, i)
    return x_prev, None

  x, _ = jax.lax.scan(body, x, (jnp.arange(len(steps)), jnp.asarray(steps), jnp.asarray(previous)))
  return x
