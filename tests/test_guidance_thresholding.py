import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax import diffusion
from imagen_jax.errors import InputError


def test_guidance_scale_one_is_the_conditional_and_zero_the_unconditional():
  c, u = jnp.ones((2, 3)), jnp.zeros((2, 3))
  np.testing.assert_allclose(diffusion.combine_guidance(c, u, 1.0), c)
  np.testing.assert_allclose(diffusion.combine_guidance(c, u, 0.0), u)
  np.testing.assert_allclose(diffusion.combine_guidance(c, u, 5.0), 5 * c - 4 * u)


def test_guided_model_makes_one_batched_call():
  calls = []

  def model_fn(z, t, cond):
    calls.append(z.shape[0])
    return z * cond["scale"][:, None]

  fn = diffusion.guided_model(model_fn, 3.0)
  z, t = jnp.ones((4, 2)), jnp.zeros((4,))
  out = fn(z, t, ({"scale": jnp.full((4,), 2.0)}, {"scale": jnp.zeros((4,))}))
  assert calls == [8]
  np.testing.assert_allclose(out, 3.0 * 2.0 * z)


def test_static_threshold_clips_to_unit_range():
  x = jnp.array([[-3.0, -0.5, 0.5, 3.0]])
  np.testing.assert_allclose(diffusion.static_threshold(x), [[-1.0, -0.5, 0.5, 1.0]])


def test_dynamic_threshold_is_identity_inside_the_unit_range():
  x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 3), minval=-1, maxval=1)
  np.testing.assert_allclose(diffusion.dynamic_threshold(x), x)


def test_dynamic_threshold_is_per_sample():
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-0.9, maxval=0.9)
  loud = x.at[1].multiply(5.0)
  out = diffusion.dynamic_threshold(loud, percentile=99.5)
  np.testing.assert_allclose(out[0], x[0])  # the quiet sample is untouched
  s = np.percentile(np.abs(np.asarray(loud[1])), 99.5)
  np.testing.assert_allclose(out[1], np.clip(loud[1], -s, s) / s, rtol=1e-5)
  assert float(jnp.max(jnp.abs(out[1]))) <= 1.0 + 1e-6


def test_unknown_thresholding_is_a_clear_error():
  with pytest.raises(InputError, match=r"'soft'.*'dynamic'"):
    diffusion.threshold(jnp.zeros((1, 2)), method="soft")


def test_noise_augment_level_zero_leaves_the_image_and_one_destroys_it():
  low = jax.random.uniform(jax.random.key(2), (2, 8, 8, 3), minval=-1, maxval=1)
  sched = diffusion.get_schedule("cosine")
  out, level = diffusion.noise_augment(
    low, aug_level=jnp.array([0.0, 1.0]), key=jax.random.key(7), schedule=sched
  )
  np.testing.assert_allclose(out[0], low[0])
  np.testing.assert_allclose(level, [0.0, 1.0])
  assert abs(float(jnp.corrcoef(out[1].ravel(), low[1].ravel())[0, 1])) < 0.2


def test_noise_augment_follows_the_forward_process():
  sched = diffusion.get_schedule("cosine")
  low = jnp.full((4000, 1, 1, 1), 0.5)
  out, _ = diffusion.noise_augment(low, aug_level=0.5, key=jax.random.key(3), schedule=sched)
  alpha, sigma = sched.alpha_sigma(0.5)
  assert abs(float(out.mean()) - 0.5 * float(alpha)) < 0.05
  assert abs(float(out.std()) - float(sigma)) < 0.05
