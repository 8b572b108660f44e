"""Editing in the samplers (diffusion.editing) against closed forms on Gaussian data: image-to-
image from a known point lands on the right conditional law; inpainting keeps the known region
exactly and leaves the rest as plain sampling draws it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_samplers import gaussian_eps

from imagen_jax import diffusion
from imagen_jax.errors import InputError

MU, STD, N = 0.3, 0.5, 20_000


def _run(edit, *, sampler="ddpm", steps=400, shape=(N, 1), key=0):
  schedule = diffusion.get_schedule("cosine")
  return jax.jit(
    lambda k, e: diffusion.sample(
      gaussian_eps(schedule, MU, STD), shape, k, schedule=schedule, steps=steps, sampler=sampler,
      edit=e,
    )
  )(jax.random.key(key), edit)  # fmt: skip


def test_image_to_image_from_a_point_samples_its_closed_form_law():
  """From x0 at strength s: z_s = alpha x0 + sigma eps, then the exact reverse process gives
  x | z_s ~ N(mu + k (z_s - alpha mu), v), k = alpha std^2 / (alpha^2 std^2 + sigma^2),
  v = std^2 sigma^2 / (alpha^2 std^2 + sigma^2); so x | x0 has mean mu + k alpha (x0 - mu) and
  variance v + k^2 sigma^2."""
  schedule = diffusion.get_schedule("cosine")
  strength, x0 = 0.5, -0.8
  alpha, sigma = (float(a) for a in schedule.alpha_sigma(jnp.float32(strength)))
  k = alpha * STD**2 / (alpha**2 * STD**2 + sigma**2)
  mean = MU + k * alpha * (x0 - MU)
  var = STD**2 * sigma**2 / (alpha**2 * STD**2 + sigma**2) + k**2 * sigma**2
  x = _run(diffusion.Edit(jnp.full((N, 1), x0), strength=strength), steps=800)
  assert abs(float(x.mean()) - mean) < 0.02
  assert abs(float(x.std()) - np.sqrt(var)) < 0.02


def test_a_tiny_strength_returns_the_source():
  source = jnp.linspace(-0.9, 0.9, 64).reshape(64, 1)
  x = _run(diffusion.Edit(source, strength=0.001), shape=(64, 1), steps=100)
  np.testing.assert_allclose(x, source, atol=0.02)


@pytest.mark.parametrize("sampler, steps", [("ddpm", 400), ("ddim", 200), ("dpm++2m", 25)])
def test_inpainting_keeps_the_known_region_and_draws_the_rest_from_the_data_law(sampler, steps):
  source = jnp.full((N, 2), -0.7)
  keep = jnp.array([[1.0, 0.0]]) * jnp.ones((N, 1))
  x = _run(diffusion.Edit(source, keep=keep), sampler=sampler, steps=steps, shape=(N, 2))
  np.testing.assert_array_equal(x[:, 0], source[:, 0])  # exactly the source
  assert abs(float(x[:, 1].mean()) - MU) < 0.02 and abs(float(x[:, 1].std()) - STD) < 0.03


def test_a_full_mask_is_plain_sampling_and_an_empty_one_the_source():
  shape = (256, 3)
  source = jnp.full(shape, 0.25)
  plain = _run(None, shape=shape, steps=50)
  full = _run(diffusion.Edit(source, keep=jnp.zeros(shape)), shape=shape, steps=50)
  np.testing.assert_array_equal(full, plain)
  empty = _run(diffusion.Edit(source, keep=jnp.ones(shape)), shape=shape, steps=50)
  np.testing.assert_array_equal(empty, source)


def test_repaint_resampling_keeps_the_known_region_and_the_law():
  source = jnp.full((N, 2), -0.7)
  keep = jnp.array([[1.0, 0.0]]) * jnp.ones((N, 1))
  x = _run(diffusion.Edit(source, keep=keep, resample=3), steps=200, shape=(N, 2))
  np.testing.assert_array_equal(x[:, 0], source[:, 0])
  assert abs(float(x[:, 1].mean()) - MU) < 0.03 and abs(float(x[:, 1].std()) - STD) < 0.03


@pytest.mark.parametrize(
  "kwargs, message", [({"strength": 0.0}, "strength"), ({"resample": 0}, "resample")]
)
def test_bad_edits_are_clear_errors(kwargs, message):
  with pytest.raises(InputError, match=message):
    _run(diffusion.Edit(jnp.zeros((4, 1)), **kwargs), shape=(4, 1), steps=4)


def test_discrete_image_to_image_and_inpainting_follow_the_same_laws():
  """IF's sampler (discrete DDPM with the posterior variance) from x0 noised to step t_s, and
  with a mask: the closed-form law, and the known region exactly the source."""
  from imagen_jax.diffusion import discrete

  alpha_bar = discrete.alphas_cumprod(discrete.betas(1000))
  table = jnp.asarray(alpha_bar)

  def model_fn(x, t):
    a = table[t]
    eps = jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * MU) / (a * STD**2 + 1 - a)
    return eps, -jnp.ones_like(x)

  steps = discrete.edit_steps(discrete.inference_steps(1000, 1000), 0.5)
  x0 = -0.8
  a = float(alpha_bar[steps[0]])
  alpha, sigma = np.sqrt(a), np.sqrt(1 - a)
  k = alpha * STD**2 / (alpha**2 * STD**2 + sigma**2)
  mean = MU + k * alpha * (x0 - MU)
  var = STD**2 * sigma**2 / (alpha**2 * STD**2 + sigma**2) + k**2 * sigma**2
  source = jnp.full((N, 2), x0)
  keep = jnp.array([[0.0, 1.0]]) * jnp.ones((N, 1))
  edit = diffusion.Edit(source, strength=0.5, keep=keep)
  x = jax.jit(
    lambda key: discrete.sample(model_fn, (N, 2), key, alpha_bar=alpha_bar, steps=steps, edit=edit)
  )(jax.random.key(4))
  np.testing.assert_array_equal(x[:, 1], source[:, 1])
  assert abs(float(x[:, 0].mean()) - mean) < 0.02
  assert abs(float(x[:, 0].std()) - np.sqrt(var)) < 0.02
