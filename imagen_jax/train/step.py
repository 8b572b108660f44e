"""The train step: a pure function (state, batch, key, text_params) -> (state, metrics), jitted
once with the state donated. The key is folded with the step inside, so a restart reproduces.

Per example: t ~ U(0, 1), eps ~ N(0, I), z_t = alpha x + sigma eps; the text is dropped (zero
embeddings, empty mask) with probability cond_drop_prob for classifier-free guidance; SR stages
upsample the low-res image and noise-augment it at aug_level ~ U(0, aug_max_level). The loss is
the eps-MSE (or the configured objective). Gradients are accumulated over `grad_accum`
micro-batches; all per-example randomness is drawn for the whole batch first, so accumulation
gives the same update as one large batch. A non-finite loss or gradient skips the update.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from imagen_jax import diffusion
from imagen_jax.images import bicubic_resize, to_float
from imagen_jax.models.t5 import T5Encoder
from imagen_jax.stages import ImagenStage
from imagen_jax.train.optim import ema_decay, learning_rate_schedule
from imagen_jax.train.state import TrainState


def _micro(x, k: int):
  """[B, ...] -> [k, B / k, ...], micro-batch i holding rows i, i + k, ... (so each device keeps
  its rows local when the batch axis is sharded)."""
  return jnp.swapaxes(x.reshape((x.shape[0] // k, k, *x.shape[1:])), 0, 1)


def text_condition(batch, text_encoder: T5Encoder | None, text_params):
  """(embeddings [B, L, D] float32, mask [B, L]) from stored embeddings or the frozen encoder."""
  mask = batch["text_mask"]
  if "text_emb" in batch:
    emb = batch["text_emb"].astype(jnp.float32)
  else:
    emb = text_encoder.apply({"params": text_params}, batch["input_ids"], mask)
    emb = jax.lax.stop_gradient(emb.astype(jnp.float32))
  return jnp.where(mask[..., None], emb, 0.0), mask


def _draw_inputs(stage: ImagenStage, dc, batch, key, text_encoder, text_params):
  """(the per-example inputs of the loss, the dropout key): t, eps, the text (dropped with
  probability cond_drop_prob) and, for SR stages, the noise-augmented low-res image."""
  k_t, k_eps, k_drop, k_aug, k_aug_eps, k_dropout = jax.random.split(key, 6)
  x = to_float(batch["image"])
  b = x.shape[0]
  text, mask = text_condition(batch, text_encoder, text_params)
  drop = jax.random.uniform(k_drop, (b,)) < dc.cond_drop_prob
  inputs = {
    "x": x,
    "t": jax.random.uniform(k_t, (b,)),
    "eps": jax.random.normal(k_eps, x.shape),
    "text": jnp.where(drop[:, None, None], 0.0, text),
    "mask": mask & ~drop[:, None],
  }
  if stage.super_res:
    aug = jax.random.uniform(k_aug, (b,), maxval=dc.aug_max_level)
    up = bicubic_resize(to_float(batch["low_res"]), x.shape[1])
    inputs["cond"], inputs["aug"] = diffusion.noise_augment(
      up, aug_level=aug, schedule=stage.schedule, noise=jax.random.normal(k_aug_eps, up.shape)
    )
  return inputs, k_dropout


def _loss(stage: ImagenStage, dc, params, mb, key, *, train: bool):
  logsnr = stage.schedule.logsnr(mb["t"])
  z = diffusion.q_sample(x=mb["x"], eps=mb["eps"], logsnr=logsnr)
  pred = stage.apply(
    params,
    z,
    mb["t"],
    mb["text"],
    mb["mask"],
    mb.get("cond"),
    mb.get("aug"),
    train=train,
    rngs={"dropout": key} if train else None,
  )
  loss = diffusion.diffusion_loss(
    pred,
    x=mb["x"],
    eps=mb["eps"],
    logsnr=logsnr,
    objective=stage.objective,
    min_snr_gamma=dc.min_snr_gamma or None,
  )
  return jnp.mean(loss)


def make_eval_loss(stage: ImagenStage, config, *, text_encoder: T5Encoder | None = None):
  """A pure (params, batch, key, text_params) -> the batch's mean loss, drawn as the train step
  draws it, without dropout: the held-out loss (with a fixed key, comparable across steps)."""
  dc = config.diffusion

  def eval_loss(params, batch, key, text_params):
    inputs, _ = _draw_inputs(stage, dc, batch, key, text_encoder, text_params)
    return _loss(stage, dc, params, inputs, None, train=False)

  return eval_loss


def unroll_micro_batches() -> bool:
  """Whether gradient accumulation unrolls its loop over micro-batches: on a CPU, where XLA
  computes convolutions' kernel gradients inside a loop body tens of times slower than outside
  one (jax-ml/jax#12868; docs/performance.md). Accelerators keep the loop (one compiled body,
  however many micro-batches)."""
  return jax.default_backend() == "cpu"


def make_train_step(
  stage: ImagenStage, config, optimizer, *, text_encoder: T5Encoder | None = None
):
  """The train step `step(state, batch, key, text_params) -> (state, metrics)`, to jit with the
  state donated: the key is folded with the step inside, so a resumed run draws as an unbroken
  one; a step whose loss or gradient norm is not finite changes no weight."""
  tc, dc = config.train, config.diffusion
  optimizer = optax.with_extra_args_support(optimizer)  # it is given grad_norm=
  lr_schedule = learning_rate_schedule(tc)
  loss_and_grads = _loss_and_grads(stage, dc, tc.grad_accum)

  def step(state: TrainState, batch, key, text_params):
    key = jax.random.fold_in(key, state.step)
    inputs, k_dropout = _draw_inputs(stage, dc, batch, key, text_encoder, text_params)
    loss, grads = loss_and_grads(state.params, inputs, k_dropout)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(weights):
      params, ema_params, opt_state = weights
      updates, opt_state = optimizer.update(grads, opt_state, params, grad_norm=grad_norm)
      params = optax.apply_updates(params, updates)
      decay = ema_decay(state.step, tc)
      ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)
      return params, ema_params, opt_state

    # A cond rather than a select per leaf: the donated buffers are updated in place (a select
    # keeps the old values alive, and XLA copies every leaf of the state).
    params, ema, opt_state = jax.lax.cond(
      finite, update, lambda weights: weights, (state.params, state.ema_params, state.opt_state)
    )
    new_state = TrainState(
      step=state.step + 1,
      params=params,
      ema_params=ema,
      opt_state=opt_state,
      bad_steps=jnp.where(finite, 0, state.bad_steps + 1),
      skipped=state.skipped + (~finite).astype(jnp.int32),
    )
    lr = lr_schedule(state.step)
    return new_state, _metrics(new_state, loss=loss, grad_norm=grad_norm, finite=finite, lr=lr)

  return step


def _loss_and_grads(stage: ImagenStage, dc, accum: int):
  """fn(params, inputs, key) -> (loss, grads), averaged over `accum` micro-batches of inputs."""
  grad_fn = jax.value_and_grad(
    lambda params, mb, key: _loss(stage, dc, params, mb, key, train=True)
  )
  if accum == 1:
    return grad_fn

  def accumulated(params, inputs, key):
    micro = jax.tree.map(lambda v: _micro(v, accum), inputs)

    def body(carry, xs):
      i, mb = xs
      loss, grads = grad_fn(params, mb, jax.random.fold_in(key, i))
      return jax.tree.map(jnp.add, carry, (loss, grads)), None

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (loss, grads), _ = jax.lax.scan(
      body, zeros, (jnp.arange(accum), micro), unroll=unroll_micro_batches()
    )
    return jax.tree.map(lambda v: v / accum, (loss, grads))

  return accumulated


def _metrics(state: TrainState, *, loss, grad_norm, finite, lr) -> dict:
  return {
    "loss": loss,
    "grad_norm": grad_norm,
    "learning_rate": lr,
    "finite": finite,
    "bad_steps": state.bad_steps,
    "skipped": state.skipped,
    # Summed over the steps between two logged records, for their means (skipped steps, whose
    # loss may not be finite, count for nothing).
    "window": jnp.stack(
      [jnp.where(finite, loss, 0.0), jnp.where(finite, grad_norm, 0.0), finite.astype(loss.dtype)]
    ),
  }
