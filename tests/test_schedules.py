import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax import diffusion
from imagen_jax.configuration import load_config
from imagen_jax.errors import ConfigError, InputError
from imagen_jax.stages import ImagenStage

T = np.linspace(0.0, 1.0, 10001)
SCHEDULES = [("cosine", 0.0), ("linear", 0.0), ("cosine", 2 * np.log(4.0))]


@pytest.mark.parametrize("name,shift", SCHEDULES)
def test_alpha_squared_plus_sigma_squared_is_one(name, shift):
  alpha, sigma = diffusion.get_schedule(name, shift=shift).alpha_sigma(T)
  np.testing.assert_allclose(np.square(alpha) + np.square(sigma), 1.0, atol=1e-6)


@pytest.mark.parametrize("name,shift", SCHEDULES)
def test_logsnr_is_finite_and_strictly_decreasing(name, shift):
  lam = np.asarray(diffusion.get_schedule(name, shift=shift).logsnr(T))
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


def test_shifted_cosine_is_simple_diffusions_resolution_shift():
  # "simple diffusion" (Hoogeboom et al. 2023, eq. 4): the 64 px cosine schedule carried to 16 px
  # multiplies the SNR by (64 / 16)^2 at every t.
  t = np.linspace(0.01, 0.99, 99)
  a, s = diffusion.get_schedule("cosine").alpha_sigma(t)
  a16, s16 = diffusion.get_schedule("cosine", shift=2 * np.log(64 / 16)).alpha_sigma(t)
  snr, snr16 = (
    np.square(np.asarray(x, np.float64) / np.asarray(y)) for x, y in ((a, s), (a16, s16))
  )
  np.testing.assert_allclose(snr16 / snr, 16.0, rtol=1e-4)
  assert diffusion.get_schedule("cosine", shift=0.0) == diffusion.get_schedule("cosine")


def test_a_stage_takes_the_shift_from_its_config():
  config = load_config("configs/demo.py:base", [])
  stage = ImagenStage.from_config(config)
  want = diffusion.get_schedule("cosine").logsnr(0.5) + 2 * np.log(4.0)
  np.testing.assert_allclose(stage.schedule.logsnr(0.5), want, rtol=1e-6)
  config.diffusion.logsnr_shift = 0.0
  assert ImagenStage.from_config(config).schedule == diffusion.get_schedule("cosine")
  with pytest.raises(ConfigError, match=r"diffusion\.logsnr_shift"):
    load_config("configs/demo.py:base", ["--config.diffusion.logsnr_shift=50"])


def test_unknown_schedule_is_a_clear_error():
  with pytest.raises(InputError, match=r"schedule.*'sigmoid'"):
    diffusion.get_schedule("sigmoid")


def test_schedules_are_hashable_for_jit_caching():
  assert hash(diffusion.get_schedule("cosine")) == hash(diffusion.get_schedule("cosine"))
  shifted = diffusion.get_schedule("cosine", shift=1.0)
  assert hash(shifted) == hash(diffusion.get_schedule("cosine", shift=1.0))
  assert jnp.asarray(diffusion.get_schedule("cosine").logsnr(0.5)).shape == ()
