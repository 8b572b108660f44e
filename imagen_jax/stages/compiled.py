"""A stage's sampler, compiled: `sample(stage, params, key, text, mask, options=...)`.

It is `jax.jit` of Stage.sample with the stage a static argument and the hardware's compile
options for samplers (hardware.compiler_options). Everything that changes between calls is an
argument, so a stage compiles once per batch shape and static options and is reused across
prompts, seeds, guidance scales and checkpoints. A step callback is an argument of the call too:
the program reports each step to a `Listener` whose tag names the call, so two threads can
sample one stage at once and each hears only of its own steps.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from collections.abc import Callable

import jax
import jax.numpy as jnp

from imagen_jax import hardware
from imagen_jax.diffusion import rng
from imagen_jax.diffusion.progress import Listener
from imagen_jax.stages.inputs import StageInputs
from imagen_jax.stages.options import SampleOptions
from imagen_jax.stages.protocol import Stage

_listeners: dict[int, Callable[[int], None]] = {}
_tags = itertools.count(1)
_lock = threading.Lock()


def _tell(tag, step) -> None:
  """Host side of a Listener: the step to the callback of the call tagged `tag`."""
  on_step = _listeners.get(int(tag))
  if on_step is not None:
    on_step(int(step))


@contextlib.contextmanager
def _listening(on_step: Callable[[int], None]):
  with _lock:
    tag = next(_tags) & 0x7FFFFFFF
    _listeners[tag] = on_step
  try:
    yield Listener(_tell, jnp.int32(tag))
  finally:
    with _lock:
      del _listeners[tag]


def _sample(stage: Stage, params, key, inputs: StageInputs, options: SampleOptions, listener):
  return stage.sample(params, key, inputs, options=options, progress=listener)


@functools.cache
def _compiled():
  # Made on first use: the compile options depend on the backend, which must not start at import.
  return jax.jit(_sample, static_argnums=0, compiler_options=hardware.compiler_options("sample"))


def sample(
  stage: Stage,
  params,
  key,
  inputs: StageInputs,
  *,
  options: SampleOptions,
  on_step: Callable[[int], None] | None = None,
):
  """Images [B, S, S, 3] in [-1, 1] from `stage`'s sampler, compiled (see the module docstring).

  Args:
    stage: any stages.Stage.
    params: its parameters.
    key: one PRNG key or keys [B], typed or legacy.
    inputs: the arrays it reads (StageInputs).
    options: how it samples (SampleOptions).
    on_step: called on the host with each finished step (0-based) while the computation runs;
      the call then returns when the images are ready.

  Returns:
    float32 images [B, S, S, 3] on the devices.
  """
  run = functools.partial(_compiled(), stage, params, rng.typed(key), inputs, options)
  if on_step is None:
    return run(None)
  with _listening(on_step) as listener:
    return run(listener).block_until_ready()
