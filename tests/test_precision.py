"""bfloat16 compute (the default on GPU and TPU), checked on CPU against float32: a train step
and a sampler stay finite and close; parameters and the optimizer's state stay float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config, train_batch

from imagen_jax import parallel
from imagen_jax.models import Stage
from imagen_jax.train.optim import make_optimizer
from imagen_jax.train.state import create_state, state_shardings
from imagen_jax.train.step import make_train_step


def _moved(params, scale):
  """params with every leaf moved off its init (zero-initialised output layers would make the
  two precisions agree trivially)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  return tree.unflatten([p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


@pytest.mark.parametrize("stage_name", ["base", "sr1"])
def test_a_bfloat16_train_step_stays_finite_and_close_to_float32(tmp_path, stage_name):
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  results = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(
      stage_name, tmp_path, f"--config.train.compute_dtype={dtype}", "--config.train.warmup_steps=0"
    )
    stage = Stage.from_config(config)
    optimizer = make_optimizer(config.train)
    _, shardings = state_shardings(stage, optimizer, mesh)
    state = create_state(stage, optimizer, jax.random.key(0), shardings)
    state = state.replace(params=_moved(state.params, 0.1))
    step = jax.jit(make_train_step(stage, config, optimizer))
    new_state, metrics = step(state, train_batch(config), jax.random.key(1), None)
    results[dtype] = jax.device_get((metrics, new_state, state.params))
  (m32, s32, p0), (m16, s16, _) = results["float32"], results["bfloat16"]
  for leaf in jax.tree.leaves((s16.params, s16.ema_params, s16.opt_state)):
    if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == np.float32 and np.all(np.isfinite(leaf))
  np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=0.005)
  np.testing.assert_allclose(m16["grad_norm"], m32["grad_norm"], rtol=0.03)
  # The update itself: the two steps move the parameters the same way.
  before = jax.tree.leaves(p0)
  d32, d16 = (
    np.concatenate([np.ravel(b - a) for a, b in zip(before, jax.tree.leaves(s.params))])
    for s in (s32, s16)
  )
  assert d32 @ d16 / (np.linalg.norm(d32) * np.linalg.norm(d16)) > 0.9


@pytest.mark.parametrize("stage_name", ["base", "sr1"])
def test_a_bfloat16_sampler_stays_finite_and_close_to_float32(tmp_path, stage_name):
  config = tiny_config(stage_name, tmp_path)
  stage32 = Stage.from_config(config, dtype=jnp.float32)
  stage16 = Stage.from_config(config, dtype=jnp.bfloat16)
  # Moved less than for the train step: with guidance 3, bigger random weights make a model that
  # amplifies any rounding difference from step to step, as no trained one does.
  params = _moved(stage32.init_params(jax.random.key(0)), 0.03)
  b, length = 4, 5
  rng = np.random.default_rng(1)
  text = jnp.asarray(rng.normal(size=(b, length, config.text.dim)), jnp.float32)
  mask = jnp.arange(length)[None] < jnp.array([[5], [3], [1], [4]])
  low = config.low_res_size
  low_res = jnp.asarray(rng.uniform(-1, 1, (b, low, low, 3)), jnp.float32) if low else None
  kwargs = dict(steps=16, guided=True, guidance=3.0, threshold="static", low_res=low_res)

  def sample(stage, key):
    return np.asarray(jax.jit(lambda p: stage.sample(p, key, text, mask, **kwargs))(params))

  x32, x16 = sample(stage32, jax.random.key(2)), sample(stage16, jax.random.key(2))
  other = sample(stage32, jax.random.key(3))  # how far apart two different samples are
  assert np.all(np.isfinite(x16))
  gap, spread = np.abs(x16 - x32).mean(), np.abs(other - x32).mean()
  assert gap < 0.03 and gap < spread / 20, (gap, spread)
