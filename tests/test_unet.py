"""U-Nets: paper sizes, shapes, text masking, null text, overfitting, sharding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import moved
from jax.sharding import PartitionSpec as P

from imagen_jax import models, parallel
from imagen_jax.configuration import load_config
from imagen_jax.errors import ConfigError, InputError
from imagen_jax.models import EfficientUNet, UNet
from imagen_jax.models.layers import GroupNorm, attention, attention_impl, group_norm

TEXT_LEN, TEXT_DIM = 6, 16
TINY_BASE = dict(
  channels=16,
  channel_mult=(1, 2),
  num_res_blocks=1,
  attn_resolutions=(4,),
  image_size=8,
  head_dim=8,
  text_cond_dim=16,
)
TINY_SR = dict(
  channels=(16, 32),
  num_res_blocks=(1, 1),
  strides=(2, 2),
  attention=(None, "self"),
  attn_heads=2,
  text_cond_dim=16,
)


def inputs(key, batch, size, super_res, text_len=TEXT_LEN):
  ks = jax.random.split(key, 5)
  z = jax.random.normal(ks[0], (batch, size, size, 3))
  t = jax.random.uniform(ks[1], (batch,))
  text = jax.random.normal(ks[2], (batch, text_len, TEXT_DIM))
  mask = jnp.arange(text_len)[None] < jnp.array([text_len, 3, 1, 4][:batch])[:, None]
  cond = jax.random.normal(ks[3], z.shape) if super_res else None
  aug = jax.random.uniform(ks[4], (batch,)) if super_res else None
  return z, t, text, mask, cond, aug


@pytest.mark.parametrize(
  "path,target",
  [("configs/base64.py", 2.0e9), ("configs/sr256.py", 600e6), ("configs/sr1024.py", 400e6)],
)
def test_paper_configs_have_the_papers_sizes(path, target):
  config = load_config(path)
  sr = config.stage == "sr"
  model = models.build_unet(config.unet, super_res=sr)
  params = models.abstract_unet_params(
    model, size=config.image_size, text_len=8, text_dim=config.text.dim, super_res=sr
  )
  assert abs(models.count_params(params) / target - 1) < 0.15


@pytest.mark.parametrize("path", ["configs/base64.py", "configs/sr256.py", "configs/sr1024.py"])
def test_paper_configs_produce_images_of_their_size(path):
  config = load_config(path)
  sr = config.stage == "sr"
  model = models.build_unet(config.unet, super_res=sr)
  args = models.unet_inputs(
    2, size=config.image_size, text_len=8, text_dim=config.text.dim, super_res=sr
  )
  out = jax.eval_shape(lambda *a: model.init_with_output(jax.random.key(0), *a)[0], *args)
  assert out.shape == (2, config.image_size, config.image_size, 3)


def test_sr1024_model_trained_on_256_crops_runs_on_a_1024_input():
  config = load_config("configs/sr1024.py")
  model = models.build_unet(config.unet, super_res=True)
  args = models.unet_inputs(
    1, size=config.image_size, text_len=8, text_dim=config.text.dim, super_res=True
  )
  variables = jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a), *args)
  big = models.unet_inputs(
    1, size=config.sample_size, text_len=8, text_dim=config.text.dim, super_res=True
  )
  out = jax.eval_shape(lambda v, *a: model.apply(v, *a), variables, *big)
  assert out.shape == (1, 1024, 1024, 3)


@pytest.mark.parametrize("stage", ["base", "sr1", "sr2"])
def test_demo_stages_produce_images_of_their_size(stage):
  config = load_config(f"configs/demo.py:{stage}")
  sr = config.stage == "sr"
  model = models.build_unet(config.unet, super_res=sr)
  args = inputs(jax.random.key(0), 2, config.image_size, sr)
  text = jnp.zeros((2, 5, config.text.dim))
  args = (*args[:2], text, jnp.ones((2, 5), bool), *args[4:])
  out, _ = jax.jit(model.init_with_output)(jax.random.key(1), *args)
  assert out.shape == (2, config.image_size, config.image_size, 3) and out.dtype == jnp.float32


def test_sr_model_built_for_64_to_256_runs_on_256_to_1024_inputs():
  """An SR model trained at 4x on small inputs runs at 4x on inputs 4 times larger."""
  model = EfficientUNet(**TINY_SR)
  variables = jax.jit(model.init)(jax.random.key(0), *inputs(jax.random.key(1), 2, 16, True))
  out = jax.jit(model.apply)(variables, *inputs(jax.random.key(2), 2, 64, True))
  assert out.shape == (2, 64, 64, 3) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize(
  "cls,kwargs,sr",
  [
    (UNet, TINY_BASE, False),
    (EfficientUNet, TINY_SR, True),
    (EfficientUNet, {**TINY_SR, "attention": (None, "cross")}, True),
  ],
)
def test_padded_text_positions_do_not_change_the_output(cls, kwargs, sr):
  model = cls(**kwargs)
  z, t, text, mask, cond, aug = inputs(jax.random.key(3), 4, 8 if not sr else 16, sr)
  variables = jax.jit(model.init)(jax.random.key(0), z, t, text, mask, cond, aug)
  # Nudge the zero-initialised output layers so the test sees the whole network.
  variables = jax.tree.map(lambda p: p + 0.01, variables)
  apply = jax.jit(model.apply)
  out = apply(variables, z, t, text, mask, cond, aug)
  noise = 100.0 * jax.random.normal(jax.random.key(4), text.shape)
  out2 = apply(variables, z, t, jnp.where(mask[..., None], text, noise), mask, cond, aug)
  np.testing.assert_allclose(out, out2, atol=1e-5)
  changed = apply(variables, z, t, text.at[:, 0].multiply(-2.0), mask, cond, aug)
  assert float(jnp.abs(changed - out).max()) > 1e-4  # real tokens matter


def test_null_text_is_well_defined_and_differs_from_the_condition():
  model = UNet(**TINY_BASE)
  z, t, text, mask, _, _ = inputs(jax.random.key(5), 4, 8, False)
  init = jax.jit(model.init)(jax.random.key(0), z, t, text, mask)
  variables = jax.tree.map(lambda p: p + 0.01, init)
  apply = jax.jit(model.apply)
  null = apply(variables, z, t, jnp.zeros_like(text), jnp.zeros_like(mask))
  cond = apply(variables, z, t, text, mask)
  assert bool(jnp.all(jnp.isfinite(null)))
  assert float(jnp.abs(null - cond).max()) > 1e-4


def _reference_attention(q, k, v, mask):
  """Textbook masked softmax attention in float64 numpy: [B, Lq, H, D] x [B, Lk, H, D]."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  s = np.where(np.asarray(mask)[:, None, None, :], s, -np.inf)
  w = np.exp(s - s.max(-1, keepdims=True))
  return np.einsum("bhqk,bkhd->bqhd", w / w.sum(-1, keepdims=True), v)


@pytest.mark.parametrize(
  "chunk_size, impl", [(1024, "chunked"), (4, "chunked"), (4, "dot_product")]
)
def test_attention_matches_a_textbook_softmax_with_masks_and_query_chunks(chunk_size, impl):
  ks = jax.random.split(jax.random.key(0), 3)
  q = 3 * jax.random.normal(ks[0], (2, 8, 2, 4))
  k, v = (jax.random.normal(key, (2, 5, 2, 4)) for key in ks[1:])
  mask = jnp.array([[True] * 5, [True, False, True, False, False]])
  out = attention(q, k, v, mask, chunk_size=chunk_size, impl=impl)
  np.testing.assert_allclose(out, _reference_attention(q, k, v, mask), rtol=1e-5, atol=1e-6)

  def plain(q, k, v):  # the same maths through jax.nn.softmax, for gradients
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    s = s + jnp.where(mask, 0.0, -1e30)[:, None, None]
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s), v)

  probe = jax.random.normal(jax.random.key(1), out.shape)
  grads = jax.grad(
    lambda *a: jnp.sum(attention(*a, mask, chunk_size=chunk_size, impl=impl) * probe), (0, 1, 2)
  )
  expected = jax.grad(lambda *a: jnp.sum(plain(*a) * probe), (0, 1, 2))(q, k, v)
  for got, want in zip(grads(q, k, v), expected):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_jax_attention_pads_odd_lengths_exactly():
  # cuDNN takes even lengths only: odd ones are padded with a hidden key and a dropped query.
  ks = jax.random.split(jax.random.key(3), 3)
  q = jax.random.normal(ks[0], (2, 7, 2, 8))
  k, v = (jax.random.normal(key, (2, 9, 2, 8)) for key in ks[1:])
  mask = jnp.arange(9)[None] < jnp.array([[9], [4]])
  got = attention(q, k, v, mask, impl="dot_product")
  assert got.shape == (2, 7, 2, 8)
  np.testing.assert_allclose(got, _reference_attention(q, k, v, mask), rtol=1e-5, atol=1e-6)


def test_auto_attention_takes_cudnn_only_on_gpu_in_half_precision_with_its_head_sizes():
  assert attention_impl("auto", jnp.bfloat16, 64, "gpu") == "cudnn"
  assert attention_impl("auto", jnp.float16, 128, "gpu") == "cudnn"
  for args in ((jnp.float32, 64, "gpu"), (jnp.bfloat16, 12, "gpu"), (jnp.bfloat16, 256, "gpu")):
    assert attention_impl("auto", *args) == "chunked"
  for backend in ("cpu", "tpu"):
    assert attention_impl("auto", jnp.bfloat16, 64, backend) == "chunked"
  assert attention_impl("dot_product", jnp.float32, 12, "cpu") == "dot_product"
  with pytest.raises(ConfigError, match="attn_impl"):
    attention_impl("flash", jnp.float32, 64)


@pytest.mark.parametrize(
  "cls, kwargs, super_res", [(UNet, TINY_BASE, False), (EfficientUNet, TINY_SR, True)]
)
def test_unets_compute_the_same_through_jax_dot_product_attention(cls, kwargs, super_res):
  batch = inputs(jax.random.key(0), 2, 8, super_res)
  ours = cls(**kwargs, attn_impl="chunked", super_res=super_res)
  params = moved(jax.jit(ours.init)(jax.random.key(1), *batch), 0.2)
  want = jax.jit(ours.apply)(params, *batch)
  assert np.abs(want).mean() > 0.1
  theirs = cls(**kwargs, attn_impl="dot_product", super_res=super_res)
  got = jax.jit(theirs.apply)(params, *batch)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "shape, groups", [((3, 5, 6, 64), 32), ((2, 4, 4, 96), 32), ((2, 7, 12), 4)]
)
def test_group_norm_matches_a_float64_reference_and_flax_gradients(shape, groups):
  ks = jax.random.split(jax.random.key(0), 4)
  x = 2.0 + 1.5 * jax.random.normal(ks[0], shape)
  c = shape[-1]
  scale, bias = 1.0 + 0.3 * jax.random.normal(ks[1], (c,)), 0.3 * jax.random.normal(ks[2], (c,))
  out = group_norm(x, scale, bias, groups)
  xg = np.asarray(x, np.float64).reshape(shape[0], -1, groups, c // groups)
  mean, var = xg.mean((1, 3), keepdims=True), xg.var((1, 3), keepdims=True)
  want = ((xg - mean) / np.sqrt(var + 1e-6)).reshape(shape) * np.asarray(scale) + np.asarray(bias)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=2e-5)

  flax_gn = nn.GroupNorm(num_groups=groups)
  probe = jax.random.normal(ks[3], shape)
  got = jax.grad(lambda *a: jnp.sum(group_norm(*a, groups) * probe), (0, 1, 2))(x, scale, bias)
  want = jax.grad(
    lambda x, s, b: jnp.sum(flax_gn.apply({"params": {"scale": s, "bias": b}}, x) * probe),
    (0, 1, 2),
  )(x, scale, bias)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
  with pytest.raises(ConfigError, match="groups"):
    group_norm(x, scale, bias, groups + 1)


def test_group_norm_module_keeps_flax_parameters_and_the_input_dtype_of_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 64), jnp.bfloat16)
  ours = nn.unbox(GroupNorm(dtype=jnp.bfloat16).init(jax.random.key(1), x))
  flax_gn = nn.GroupNorm(num_groups=32).init(jax.random.key(1), x)
  # Checkpoints name and shape the parameters as flax's GroupNorm does.
  assert jax.tree.map(jnp.shape, ours["params"]["norm"]) == jax.tree.map(
    jnp.shape, flax_gn["params"]
  )
  y = GroupNorm(dtype=jnp.bfloat16).apply(ours, x)
  assert y.dtype == jnp.bfloat16
  dx = jax.grad(
    lambda x: jnp.sum(GroupNorm(dtype=jnp.bfloat16).apply(ours, x).astype(jnp.float32))
  )(x)
  assert dx.dtype == jnp.bfloat16


def test_wrong_inputs_are_clear_errors():
  model = EfficientUNet(**TINY_SR)
  z, t, text, mask, cond, aug = inputs(jax.random.key(0), 2, 16, True)
  with pytest.raises(InputError, match="cond_image"):
    model.init(jax.random.key(0), z, t, text, mask)
  with pytest.raises(InputError, match="divisible"):
    model.init(jax.random.key(0), z[:, :6, :6], t, text, mask, cond[:, :6, :6], aug)
  with pytest.raises(ConfigError, match="num_res_blocks"):
    EfficientUNet(channels=(8, 16), num_res_blocks=(1,), strides=(2, 2), attention=(None, None))


def overfit(model, batch, steps=100, lr=3e-3):
  """Fits a fixed batch (fixed t and noise) with Adam; returns (first loss, last loss)."""
  z, t, text, mask, cond, aug = batch
  target = jax.random.normal(jax.random.key(9), z.shape)
  params = jax.jit(model.init)(jax.random.key(0), *batch)["params"]
  opt = optax.adam(lr)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    def loss_fn(p):
      out = model.apply({"params": p}, z, t, text, mask, cond, aug)
      return jnp.mean(jnp.square(out - target))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for _ in range(steps):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  return losses[0], min(losses[-10:])


def test_tiny_base_unet_overfits_a_handful_of_images():
  first, last = overfit(UNet(**TINY_BASE), inputs(jax.random.key(6), 4, 8, False))
  assert last < first / 10


def test_tiny_sr_unet_overfits_a_handful_of_images():
  first, last = overfit(EfficientUNet(**TINY_SR), inputs(jax.random.key(7), 4, 16, True))
  assert last < first / 10


@pytest.mark.parametrize(
  "cls,kwargs,sr,size", [(UNet, TINY_BASE, False, 8), (EfficientUNet, TINY_SR, True, 16)]
)
def test_sharded_forward_and_backward_equal_single_device(cls, kwargs, sr, size):
  model = cls(**kwargs)
  batch = inputs(jax.random.key(8), 4, size, sr)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *batch))["params"]
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), *batch)["params"])

  def loss(p, batch):
    out = model.apply({"params": p}, *batch)
    return jnp.mean(jnp.square(out - 0.1)), out

  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (ref_loss, ref_out), ref_grads = grad_fn(params, batch)

  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  shardings = parallel.tree_shardings(boxed, mesh)
  sharded_params = jax.device_put(params, shardings)
  batch_sh = jax.tree.map(lambda x: jax.device_put(x, parallel.batch_sharding(mesh, x.ndim)), batch)
  (loss_s, out_s), grads_s = grad_fn(sharded_params, batch_sh)
  np.testing.assert_allclose(out_s, ref_out, atol=1e-5)
  np.testing.assert_allclose(loss_s, ref_loss, rtol=1e-5, atol=1e-7)
  for g, r in zip(jax.tree.leaves(grads_s), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4)


def test_parameters_carry_the_partition_specs_of_the_rules():
  config = load_config("configs/base64.py")
  model = models.build_unet(config.unet, super_res=False)
  boxed = models.abstract_unet_params(
    model, size=64, text_len=8, text_dim=config.text.dim, super_res=False
  )
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  shardings = parallel.tree_shardings(boxed, mesh)
  conv = shardings["down_1_res_0"]["conv_0"]["kernel"].spec
  assert conv == P(None, None, "fsdp", "tensor")
  assert shardings["down_1_res_0"]["conv_1"]["kernel"].spec == P(None, None, "tensor", "fsdp")
  assert shardings["down_1_attn_0"]["query"]["kernel"].spec == P("fsdp", "tensor")
  assert shardings["down_1_attn_0"]["out"]["kernel"].spec == P("tensor", "fsdp")
  assert shardings["cond"]["text_proj"]["dense"]["kernel"].spec == P("fsdp", "tensor")
  assert shardings["out_norm"]["norm"]["scale"].spec == P(None)
