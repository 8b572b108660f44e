"""The train state, its shardings, and its creation directly sharded over the mesh."""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from imagen_jax import parallel


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []: updates applied (skipped non-finite steps count too)
  params: dict
  ema_params: dict
  opt_state: optax.OptState
  bad_steps: jax.Array  # int32 []: non-finite updates in a row
  skipped: jax.Array  # int32 []: non-finite updates skipped in all

  @classmethod
  def abstract(cls, params, opt_state) -> TrainState:
    """ShapeDtypeStructs of a state with these (abstract) parameters and optimizer state."""
    count = jax.ShapeDtypeStruct((), jnp.int32)
    return cls(step=count, params=params, ema_params=params, opt_state=opt_state,
               bad_steps=count, skipped=count)  # fmt: skip


def _paths(tree) -> dict:
  return {
    tuple(str(k) for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def optimizer_layout(abstract_opt_state, abstract_params, param_layout, replicated):
  """The layout (shardings or PartitionSpecs) of the optimizer state: each leaf takes the layout
  of the parameter whose path ends its own path and whose shape it has (Adam's moments);
  anything else (Adafactor's factored statistics, counters) gets `replicated`."""
  params = _paths(abstract_params)
  layouts = _paths(param_layout)

  def one(path, leaf):
    keys = tuple(str(k) for k in path)
    for start in range(len(keys)):
      suffix = keys[start:]
      if suffix in params and params[suffix].shape == leaf.shape:
        return layouts[suffix]
    return replicated

  return jax.tree_util.tree_map_with_path(one, abstract_opt_state)


def state_shardings(stage, optimizer, mesh):
  """(abstract TrainState, TrainState of NamedShardings)."""
  boxed = stage.abstract_params()
  param_shardings = parallel.tree_shardings(boxed, mesh)
  abstract_params = nn.unbox(boxed)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  abstract = TrainState.abstract(abstract_params, abstract_opt)
  replicated = parallel.replicated(mesh)
  shardings = TrainState(
    step=replicated,
    params=param_shardings,
    ema_params=param_shardings,
    opt_state=optimizer_layout(abstract_opt, abstract_params, param_shardings, replicated),
    bad_steps=replicated,
    skipped=replicated,
  )
  return abstract, shardings


def create_state(stage, optimizer, key, shardings) -> TrainState:
  """A fresh TrainState, created by one jitted function directly into `shardings` (no host copy
  of the parameters)."""

  def init(key):
    params = nn.unbox(stage.init_params(key))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(
      step=zero,
      params=params,
      ema_params=params,
      opt_state=optimizer.init(params),
      bad_steps=zero,
      skipped=zero,
    )

  return jax.jit(init, out_shardings=shardings)(key)


@jax.jit
def _soundness(state: TrainState):
  finite = jnp.array(True)
  for leaf in jax.tree.leaves((state.params, state.ema_params)):
    finite &= jnp.all(jnp.isfinite(leaf))
  return finite, state.bad_steps


def unsound_reason(state: TrainState) -> str | None:
  """Why `state` must not be checkpointed, or None when it may: its parameters or EMA hold
  NaN or inf, or it ends a run of non-finite updates (its parameters are those that gave a
  non-finite loss)."""
  finite, bad_steps = jax.device_get(_soundness(state))
  if not finite:
    return "its parameters or EMA are not finite"
  if bad_steps:
    return f"it follows {int(bad_steps)} non-finite update(s) in a row"
  return None
