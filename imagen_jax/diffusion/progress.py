"""Telling the host that a sampler step finished, from inside a scan.

A sampler's `progress` is a host function `progress(step)`, or a `Listener`: `fn(tag, step)` where
`tag` is an array that travels through the computation as an argument. One compiled sampler
then serves any number of callers at once, each call reporting to the listener its own tag names
(a function baked into the program would be one listener for every call, or a recompile per
call).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax


@dataclasses.dataclass(frozen=True)
class Listener:
  """`fn(tag, step)` on the host after every step; `tag` [] (any array) is traced, `fn` static."""

  fn: Callable
  tag: jax.Array


jax.tree_util.register_dataclass(Listener, data_fields=["tag"], meta_fields=["fn"])


def report(progress, step) -> None:
  """Calls `progress` on the host with the step index (int32 []); nothing when it is None."""
  if progress is None:
    return
  if isinstance(progress, Listener):
    jax.debug.callback(progress.fn, progress.tag, step)
  else:
    jax.debug.callback(progress, step)
