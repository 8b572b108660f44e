"""Samplers against closed-form oracles: the exact eps of Gaussian data, of a two-component
Gaussian mixture (guidance) and of a point mass."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from imagen_jax import diffusion
from imagen_jax.errors import InputError, InputTypeError

MU, STD = 0.7, 0.3
N = 10_000


def gaussian_eps(schedule, mu, std):
  """E[eps | z_t] for x ~ N(mu, std^2): sigma (z - alpha mu) / (alpha^2 std^2 + sigma^2)."""

  def eps_fn(z, t):
    alpha, sigma = (a[:, None] for a in schedule.alpha_sigma(t))
    return sigma * (z - alpha * mu) / (alpha**2 * std**2 + sigma**2)

  return eps_fn


@pytest.mark.parametrize("schedule_name", ["cosine", "linear"])
@pytest.mark.parametrize(
  "sampler,steps,kwargs",
  [
    ("ddpm", 1000, {}),
    ("ddpm", 1000, {"logvar_interp": 1.0}),
    ("ddpm", 1000, {"logvar_interp": 0.5}),
    ("ddim", 256, {}),
    ("ddim", 256, {"eta": 1.0}),
    ("dpm++2m", 25, {}),
  ],
)
def test_sampler_reproduces_gaussian_data(schedule_name, sampler, steps, kwargs):
  schedule = diffusion.get_schedule(schedule_name)
  x = diffusion.sample(
    gaussian_eps(schedule, MU, STD),
    (N, 1),
    jax.random.key(0),
    schedule=schedule,
    steps=steps,
    sampler=sampler,
    **kwargs,
  )
  assert abs(float(x.mean()) - MU) < 0.03 * MU
  assert abs(float(x.std()) - STD) < 0.04 * STD


@pytest.mark.parametrize("objective", ["x", "v"])
def test_sampler_accepts_x_and_v_predictions(objective):
  schedule = diffusion.get_schedule("cosine")
  eps_fn = gaussian_eps(schedule, MU, STD)

  def pred_fn(z, t):
    lam = schedule.logsnr(t)
    x_hat = diffusion.predict_x_from_eps(z=z, eps=eps_fn(z, t), logsnr=lam)
    if objective == "x":
      return x_hat
    return diffusion.predict_v_from_x_and_eps(x=x_hat, eps=eps_fn(z, t), logsnr=lam)

  x = diffusion.sample(
    pred_fn,
    (N, 1),
    jax.random.key(1),
    schedule=schedule,
    steps=25,
    sampler="dpm++2m",
    objective=objective,
  )
  assert abs(float(x.mean()) - MU) < 0.03 * MU
  assert abs(float(x.std()) - STD) < 0.04 * STD


M0, M1, S = -1.0, 1.0, 0.8


def mixture_model(schedule):
  """model_fn(z, t, cond): exact eps of N(M1, S^2) where cond = 1, of the even mixture of
  N(M0, S^2) and N(M1, S^2) where cond = 0 (the null condition)."""

  def model_fn(z, t, cond):
    alpha, sigma = (a[:, None] for a in schedule.alpha_sigma(t))
    var = alpha**2 * S**2 + sigma**2
    log_p0 = norm.logpdf(z, alpha * M0, jnp.sqrt(var))
    log_p1 = norm.logpdf(z, alpha * M1, jnp.sqrt(var))
    r1 = jnp.where(cond[:, None] > 0, 1.0, jax.nn.sigmoid(log_p1 - log_p0))
    mean = alpha * (r1 * M1 + (1 - r1) * M0)
    return sigma * (z - mean) / var

  return model_fn


def class_one_posterior(x):
  """p(c = 1 | x) under the clean mixture."""
  return jax.nn.sigmoid(norm.logpdf(x, M1, S) - norm.logpdf(x, M0, S))


def test_guidance_moves_samples_toward_the_conditioned_component():
  schedule = diffusion.get_schedule("cosine")
  model = mixture_model(schedule)
  cond, null = jnp.ones((N,)), jnp.zeros((N,))
  posteriors = []
  for w in (0.0, 1.0, 2.0, 4.0):
    guided = diffusion.guided_model(model, w)
    x = diffusion.sample(
      lambda z, t, guided=guided: guided(z, t, (cond, null)),
      (N, 1),
      jax.random.key(2),
      schedule=schedule,
      steps=256,
      sampler="ddim",
    )
    posteriors.append(float(jnp.mean(class_one_posterior(x))))
    if w == 0.0:  # the unconditional model samples the mixture
      assert abs(float(x.mean()) - (M0 + M1) / 2) < 0.05
    if w == 1.0:  # w = 1 is the conditional model: N(M1, S^2)
      assert abs(float(x.mean()) - M1) < 0.05 and abs(float(x.std()) - S) < 0.04 * S
  # E_{x ~ mixture}[p(c=1|x)] = 1/2 exactly, and under the conditional it is a 1-d integral.
  grid = np.linspace(-8, 8, 20001)
  expected_w1 = np.trapezoid(norm.pdf(grid, M1, S) * class_one_posterior(grid), grid)
  assert abs(posteriors[0] - 0.5) < 0.02
  assert abs(posteriors[1] - expected_w1) < 0.02
  assert posteriors[1] < posteriors[2] < posteriors[3]


def test_guided_model_unpacks_cond_and_null_from_one_pytree():
  schedule = diffusion.get_schedule("cosine")
  calls = []

  def model_fn(z, t, cond):
    calls.append(z.shape)
    return mixture_model(schedule)(z, t, cond)

  guided = diffusion.guided_model(model_fn, 3.0)
  diffusion.sample(
    lambda z, t: guided(z, t, (jnp.ones(8), jnp.zeros(8))),
    (8, 1),
    jax.random.key(3),
    schedule=schedule,
    steps=4,
    sampler="ddim",
  )
  assert calls == [(16, 1)]  # one batched call per step, traced once


def test_ddim_with_the_exact_denoiser_of_a_point_mass_returns_the_point():
  schedule = diffusion.get_schedule("cosine")
  point = jnp.linspace(-0.9, 0.9, 12).reshape(1, 12)

  def eps_fn(z, t):
    alpha, sigma = (a[:, None] for a in schedule.alpha_sigma(t))
    return (z - alpha * point) / sigma

  x = diffusion.sample(
    eps_fn, (16, 12), jax.random.key(4), schedule=schedule, steps=50, sampler="ddim"
  )
  np.testing.assert_allclose(x, jnp.broadcast_to(point, x.shape), atol=1e-4)


def test_the_callers_jit_traces_the_sampler_once_per_shape_and_steps():
  """sample() is pure: inside a jit that takes the model's inputs as arguments, it compiles once
  and is reused for new keys and inputs; only static options (steps) trace it again."""
  schedule = diffusion.get_schedule("cosine")
  traces = []

  def eps_fn(z, t, c):
    traces.append(z.shape)
    return z * c

  @functools.partial(jax.jit, static_argnames="steps")
  def run(key, c, steps=8):
    return diffusion.sample(
      lambda z, t: eps_fn(z, t, c), (4, 3), key, schedule=schedule, steps=steps, sampler="ddpm"
    )

  a = run(jax.random.key(0), jnp.float32(0.1))
  b = run(jax.random.key(1), jnp.float32(0.2))
  assert len(traces) == 1
  assert not np.allclose(a, b)
  run(jax.random.key(0), jnp.float32(0.1), steps=9)
  assert len(traces) == 2


def test_same_key_gives_the_same_samples():
  schedule = diffusion.get_schedule("linear")
  eps_fn = gaussian_eps(schedule, MU, STD)
  a = diffusion.sample(eps_fn, (64, 1), jax.random.key(5), schedule=schedule, steps=10)
  b = diffusion.sample(eps_fn, (64, 1), jax.random.key(5), schedule=schedule, steps=10)
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("batched", [False, True])
def test_legacy_uint32_keys_draw_what_typed_keys_draw(batched):
  """jax.random.PRNGKey(0) (uint32 [2]) is the same key as jax.random.key(0), one or [B]: every
  sampler, the discrete one and noise augmentation take either."""
  from imagen_jax.diffusion import discrete

  schedule = diffusion.get_schedule("cosine")
  eps_fn = gaussian_eps(schedule, MU, STD)
  typed, legacy = jax.random.key(3), jax.random.PRNGKey(3)
  if batched:
    typed, legacy = jax.random.split(typed, 8), jax.random.split(legacy, 8)
  assert legacy.dtype == jnp.uint32
  for sampler in diffusion.SAMPLERS:
    run = lambda key, sampler=sampler: diffusion.sample(
      eps_fn, (8, 2), key, schedule=schedule, steps=4, sampler=sampler
    )
    np.testing.assert_array_equal(run(legacy), run(typed))
  alpha_bar = discrete.alphas_cumprod(discrete.betas(50))
  both = [
    discrete.sample(
      lambda x, t: (x * 0.1, jnp.zeros_like(x)),
      (8, 2),
      key,
      alpha_bar=alpha_bar,
      steps=discrete.inference_steps(50, 5),
    )
    for key in (legacy, typed)
  ]
  np.testing.assert_array_equal(*both)
  low = jnp.zeros((8, 4, 4, 3))
  augmented = [
    diffusion.noise_augment(low, aug_level=0.5, schedule=schedule, key=key)[0]
    for key in (legacy, typed)
  ]
  np.testing.assert_array_equal(*augmented)


def test_keys_that_are_not_keys_are_one_clear_error():
  schedule = diffusion.get_schedule("cosine")
  for key in (jnp.zeros((3,), jnp.uint32), jnp.zeros((2,), jnp.float32), 7):
    with pytest.raises(InputTypeError, match="PRNG key"):
      diffusion.sample(lambda z, t: z, (2, 1), key, schedule=schedule, steps=2)


def test_thresholding_keeps_samples_in_range():
  schedule = diffusion.get_schedule("cosine")
  eps_fn = gaussian_eps(schedule, 0.0, 3.0)  # data far outside [-1, 1]
  for method in ("static", "dynamic"):
    x = diffusion.sample(
      eps_fn,
      (256, 1),
      jax.random.key(6),
      schedule=schedule,
      steps=20,
      sampler="ddim",
      threshold=method,
    )
    assert float(jnp.max(jnp.abs(x))) <= 1.0 + 1e-5


@pytest.mark.parametrize(
  "kwargs,match",
  [
    ({"sampler": "euler"}, "sampler.*'euler'"),
    ({"steps": 0}, "steps"),
    ({"eta": 2.0}, "eta"),
    ({"threshold": "soft"}, "threshold.*'soft'"),
    ({"objective": "score"}, "objective.*'score'"),
  ],
)
def test_bad_sampler_options_are_clear_errors(kwargs, match):
  schedule = diffusion.get_schedule("cosine")
  options = {"schedule": schedule, "steps": 4, **kwargs}
  with pytest.raises(InputError, match=match):
    diffusion.sample(lambda z, t: z, (2, 1), jax.random.key(0), **options)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++2m"])
def test_every_sampler_runs_inside_a_callers_jit(sampler):
  """The log-SNR grid of dpm++2m is computed at trace time even inside a caller's jit."""
  schedule = diffusion.get_schedule("cosine")
  eps_fn = gaussian_eps(schedule, 0.3, 0.5)
  run = jax.jit(
    lambda key, steps=7: diffusion.sample(
      eps_fn, (4, 1), key, schedule=schedule, steps=steps, sampler=sampler
    )
  )
  assert run(jax.random.key(0)).shape == (4, 1)
