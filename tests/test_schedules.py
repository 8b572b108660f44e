import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax import diffusion

T = np.linspace(0.0, 1.0, 10001)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_alpha_squared_plus_sigma_squared_is_one(name):
  alpha, sigma = diffusion.get_schedule(name).alpha_sigma(T)
  np.testing.assert_allclose(np.square(alpha) + np.square(sigma), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_logsnr_is_finite_and_strictly_decreasing(name):
  lam = np.asarray(diffusion.get_schedule(name).logsnr(T))
  assert np.all(np.isfinite(lam))
  assert np.all(np.diff(lam) < 0)


def test_linear_schedule_matches_ddpm_alpha_bar():
  betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
  alpha_bar = np.cumprod(1.0 - betas)
  t = np.arange(1, 1001) / 1000
  alpha, _ = diffusion.get_schedule("linear").alpha_sigma(t)
  np.testing.assert_allclose(np.square(np.asarray(alpha, np.float64)), alpha_bar, rtol=1e-3)


def test_cosine_schedule_matches_iddpm_alpha_bar():
  f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
  t = np.linspace(0.001, 0.999, 999)
  alpha, _ = diffusion.get_schedule("cosine").alpha_sigma(t)
  np.testing.assert_allclose(np.square(np.asarray(alpha)), f(t) / f(0), rtol=1e-3, atol=2e-5)


def test_unknown_schedule_is_a_clear_error():
  with pytest.raises(ValueError, match="choose one of"):
    diffusion.get_schedule("sigmoid")


def test_schedules_are_hashable_for_jit_caching():
  assert hash(diffusion.get_schedule("cosine")) == hash(diffusion.get_schedule("cosine"))
  assert jnp.asarray(diffusion.get_schedule("cosine").logsnr(0.5)).shape == ()
