"""Noise schedules of the continuous-time variance-preserving process, in log-SNR form.

A schedule maps time t in [0, 1] to logsnr(t) = log(alpha^2 / sigma^2), strictly decreasing, with
alpha^2 = sigmoid(logsnr) and sigma^2 = sigmoid(-logsnr), so alpha^2 + sigma^2 = 1 by construction.
logsnr stays finite on the closed interval [0, 1].
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from imagen_jax.errors import InputError

LOGSNR_MIN = -20.0
LOGSNR_MAX = 20.0


def alpha_sigma_from_logsnr(logsnr):
  """alpha = sqrt(sigmoid(logsnr)), sigma = sqrt(sigmoid(-logsnr))."""
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def logsnr_from_log_alpha_bar(log_ab):
  """logsnr = log(ab / (1 - ab)) from log(ab), stable for ab near 0 and 1."""
  return log_ab - jnp.log(-jnp.expm1(log_ab))


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A noise schedule: `logsnr(t)` and `alpha_sigma(t)` for t in [0, 1] (arrays of any shape)."""

  name: str

  def logsnr(self, t):
    """logsnr(t) = log(alpha^2 / sigma^2), strictly decreasing and finite on [0, 1].

    Args:
      t: times in [0, 1], an array of any shape (or a Python float).

    Returns:
      float32 logsnr of t's shape.
    """
    raise NotImplementedError

  def alpha_sigma(self, t):
    """(alpha, sigma) at time t: z_t = alpha * x + sigma * eps.

    Args:
      t: times in [0, 1], an array of any shape.

    Returns:
      (alpha, sigma), each of t's shape, with alpha^2 + sigma^2 = 1.
    """
    return alpha_sigma_from_logsnr(self.logsnr(t))


@dataclasses.dataclass(frozen=True)
class CosineSchedule(Schedule):
  """iDDPM cosine schedule (Nichol & Dhariwal 2021, eq. 17) in continuous time.

  alpha_bar(t) = cos^2(theta(t)) / cos^2(theta(0)), theta(t) = (t + s) / (1 + s) * pi / 2.
  Its logsnr runs from +inf to -inf; t is mapped affinely onto the sub-interval where logsnr
  goes from `logsnr_max` to `logsnr_min`, which moves t by less than 3e-5 at the ends and keeps the
  schedule smooth, strictly decreasing and finite on [0, 1].
  """

  name: str = "cosine"
  s: float = 0.008
  logsnr_min: float = LOGSNR_MIN
  logsnr_max: float = LOGSNR_MAX

  def _t_of_logsnr(self, logsnr: float) -> float:
    # Inverse of the unclipped schedule: cos(theta) = sqrt(sigmoid(logsnr)) * cos(theta(0)).
    cos0 = math.cos(self.s / (1 + self.s) * math.pi / 2)
    theta = math.acos(math.sqrt(1.0 / (1.0 + math.exp(-logsnr))) * cos0)
    return theta * 2 / math.pi * (1 + self.s) - self.s

  def logsnr(self, t):
    """logsnr = log(alpha_bar / (1 - alpha_bar)) at time t_lo + t (t_hi - t_lo)."""
    t_lo, t_hi = self._t_of_logsnr(self.logsnr_max), self._t_of_logsnr(self.logsnr_min)
    theta = (
      (t_lo + jnp.asarray(t, jnp.float32) * (t_hi - t_lo) + self.s) / (1 + self.s) * (math.pi / 2)
    )
    # alpha_bar = cos^2 / cos0^2 and 1 - alpha_bar = (cos0^2 - cos^2) / cos0^2
    #           = sin(theta - theta0) * sin(theta + theta0) / cos0^2.
    theta0 = self.s / (1 + self.s) * math.pi / 2
    return 2 * jnp.log(jnp.cos(theta)) - jnp.log(jnp.sin(theta - theta0) * jnp.sin(theta + theta0))


@dataclasses.dataclass(frozen=True)
class LinearSchedule(Schedule):
  """DDPM's linear betas (Ho et al. 2020: 1e-4 to 0.02 over 1000 steps), made continuous.

  log alpha_bar(t) is the integral of log(1 - beta(u)) over u in [1/2, t*T + 1/2] for the
  linearly interpolated beta(u) (beta_j = beta(j)); by the midpoint rule it equals the discrete
  sum_{j <= i} log(1 - beta_j) at t = i / T to about 1e-8, so alpha_bar matches DDPM's table.
  logsnr is capped at `logsnr_max`, which only touches t < 1e-7.
  """

  name: str = "linear"
  beta_start: float = 1e-4
  beta_end: float = 0.02
  num_steps: int = 1000
  logsnr_max: float = LOGSNR_MAX

  def log_alpha_bar(self, t):
    """log alpha_bar(t) = integral of log(1 - beta(u)) over u in [1/2, t*T + 1/2]."""
    # With n = t*T steps, beta_a = beta(1/2) and beta_b = beta(n + 1/2), expanding
    # log(1 - beta) = -sum_k beta^k / k and integrating each power exactly gives
    #   -n * sum_k sum_{j<=k} beta_b^j beta_a^(k-j) / (k (k+1)),
    # free of the cancellation of a closed-form antiderivative; beta <= 0.02 makes k <= 6 enough.
    slope = (self.beta_end - self.beta_start) / (self.num_steps - 1)
    n = jnp.asarray(t, jnp.float32) * self.num_steps
    beta_a = self.beta_start - 0.5 * slope
    beta_b = self.beta_start + (n - 0.5) * slope
    total = 0.0
    for k in range(1, 7):
      total += sum(beta_b**j * beta_a ** (k - j) for j in range(k + 1)) / (k * (k + 1))
    return -n * total

  def logsnr(self, t):
    """logsnr = min(log(alpha_bar / (1 - alpha_bar)), logsnr_max)."""
    return jnp.minimum(logsnr_from_log_alpha_bar(self.log_alpha_bar(t)), self.logsnr_max)


@dataclasses.dataclass(frozen=True)
class ShiftedSchedule(Schedule):
  """`base` with its logsnr moved by `shift`: logsnr(t) = base.logsnr(t) + shift.

  A schedule made for one resolution carries over to another by the shift 2 log(res / new res)
  (Hoogeboom et al. 2023, "simple diffusion", sec. 3.1): at a lower resolution each pixel holds
  more of the picture, so the same per-pixel noise destroys more of it, and an unshifted
  schedule spends much of its time where nothing is left to denoise.
  """

  base: Schedule
  shift: float

  def logsnr(self, t):
    """logsnr(t) = base.logsnr(t) + shift."""
    return self.base.logsnr(t) + self.shift


SCHEDULES = {"cosine": CosineSchedule, "linear": LinearSchedule}


def get_schedule(name: str, *, shift: float = 0.0, **kwargs) -> Schedule:
  """Returns the schedule called `name`, its logsnr moved by `shift`.

  Args:
    name: "cosine" (iDDPM's, CosineSchedule) or "linear" (DDPM's betas, LinearSchedule).
    shift: added to logsnr(t) (0: none); 2 log(64 / res) carries a schedule made for 64 px to
      res px (ShiftedSchedule).
    **kwargs: override its constants (cosine: s, logsnr_min, logsnr_max; linear: beta_start,
      beta_end, num_steps, logsnr_max).

  Returns:
    The Schedule; with a shift, a ShiftedSchedule named "name+shift".

  Raises:
    InputError: an unknown name.
  """
  if name not in SCHEDULES:
    raise InputError(f"Unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}.")
  schedule = SCHEDULES[name](**kwargs)
  if shift:
    return ShiftedSchedule(name=f"{name}+{shift:g}", base=schedule, shift=float(shift))
  return schedule
