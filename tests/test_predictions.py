import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax import diffusion
from imagen_jax.errors import InputError

KEYS = jax.random.split(jax.random.key(0), 3)
X = jax.random.uniform(KEYS[0], (4, 8, 8, 3), minval=-1, maxval=1)
EPS = jax.random.normal(KEYS[1], X.shape)
LAM = jnp.array([-8.0, -1.0, 2.0, 9.0])


def test_q_sample_is_alpha_x_plus_sigma_eps():
  z = diffusion.q_sample(x=X, eps=EPS, logsnr=LAM)
  alpha, sigma = diffusion.alpha_sigma_from_logsnr(LAM)
  np.testing.assert_allclose(
    z, alpha[:, None, None, None] * X + sigma[:, None, None, None] * EPS, atol=1e-6
  )


@pytest.mark.parametrize("objective", diffusion.OBJECTIVES)
def test_every_objective_recovers_x_and_eps(objective):
  z = diffusion.q_sample(x=X, eps=EPS, logsnr=LAM)
  target = {"eps": EPS, "x": X, "v": diffusion.predict_v_from_x_and_eps(x=X, eps=EPS, logsnr=LAM)}[
    objective
  ]
  x_hat, eps_hat = diffusion.x_and_eps_from_prediction(target, z=z, logsnr=LAM, objective=objective)
  np.testing.assert_allclose(x_hat, X, atol=2e-3)
  np.testing.assert_allclose(eps_hat, EPS, atol=2e-3)


@pytest.mark.parametrize("objective", diffusion.OBJECTIVES)
def test_loss_is_zero_for_the_exact_target_and_positive_otherwise(objective):
  target = {"eps": EPS, "x": X, "v": diffusion.predict_v_from_x_and_eps(x=X, eps=EPS, logsnr=LAM)}[
    objective
  ]
  kw = dict(x=X, eps=EPS, logsnr=LAM, objective=objective)
  np.testing.assert_allclose(diffusion.diffusion_loss(target, **kw), 0.0, atol=1e-10)
  assert np.all(diffusion.diffusion_loss(target + 0.1, **kw) > 0)


def test_min_snr_weighting_equals_x_space_weighting():
  # min(snr, gamma) * |x_hat - x|^2 for every objective (Hang et al. 2023).
  z = diffusion.q_sample(x=X, eps=EPS, logsnr=LAM)
  x_hat = X + 0.05 * jax.random.normal(KEYS[2], X.shape)
  eps_hat = diffusion.predict_eps_from_x(z=z, x=x_hat, logsnr=LAM)
  v_hat = diffusion.predict_v_from_x_and_eps(x=x_hat, eps=eps_hat, logsnr=LAM)
  x_mse = jnp.mean(jnp.square(x_hat - X), axis=(1, 2, 3))
  expected = jnp.minimum(jnp.exp(LAM), 5.0) * x_mse
  for objective, pred in (("eps", eps_hat), ("x", x_hat), ("v", v_hat)):
    got = diffusion.diffusion_loss(
      pred, x=X, eps=EPS, logsnr=LAM, objective=objective, min_snr_gamma=5.0
    )
    np.testing.assert_allclose(got, expected, rtol=2e-2)


def test_unknown_objective_is_a_clear_error():
  with pytest.raises(InputError, match=r"objective.*'score'"):
    diffusion.diffusion_loss(X, x=X, eps=EPS, logsnr=LAM, objective="score")
