"""Placing checkpoint tensors onto devices as a model's parameters, one tensor at a time.

Used by the importers of T5 (models.t5_weights) and of diffusers' U-Nets (pretrained): each maps
its parameter paths to the names a checkpoint stores and a conversion of the stored layout. Host
memory holds one tensor (a view of a memory-mapped file) at a time; with a mesh, each device
reads only its own slice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.sharding import NamedSharding

from imagen_jax import parallel
from imagen_jax.errors import DataError

# our parameter path -> (names the checkpoint may use, conversion of the stored tensor)
NameMap = Mapping[tuple[str, ...], tuple[tuple[str, ...], Callable]]


def _listed(names: list[str]) -> str:
  return f"{names[:8]}{' ...' if len(names) > 8 else ''}"


def load_mapped(
  tensors: Mapping,
  boxed,
  mapping: NameMap,
  *,
  description: str,
  ignored_prefixes: tuple[str, ...] = (),
  mesh=None,
):
  """Parameters shaped as `boxed` (a tree of logically partitioned ShapeDtypeStructs) from
  `tensors` (checkpoint name -> a reader with .shape(name) and .get(name)).

  With `mesh`, every parameter is created sharded by parallel.LOGICAL_AXIS_RULES; without, it
  lands on the default device. Raises ValueError naming every missing, unexpected or wrongly
  shaped tensor, prefixed by `description` (what the checkpoint should fit).
  """
  boxed = flatten_dict(boxed)
  missing, bad_shapes, found = [], [], {}
  for path, leaf in boxed.items():
    names, convert = mapping[path]
    name = next((n for n in names if n in tensors), None)
    if name is None:
      missing.append(names[0])
      continue
    expected = nn.unbox(leaf).shape
    stored = tensors[name].shape(name)
    got = convert(np.empty(stored, np.bool_)).shape
    if got != expected:
      bad_shapes.append(f"{name}: checkpoint {stored}, the config needs {expected}")
    found[path] = name
  used = {n for path in found for n in mapping[path][0]}
  unexpected = sorted(n for n in tensors if n not in used and not n.startswith(ignored_prefixes))
  problems = []
  if missing:
    problems.append(f"missing tensors: {_listed(missing)}")
  if unexpected:
    problems.append(f"unexpected tensors: {_listed(unexpected)}")
  if bad_shapes:
    problems.append("shape mismatches: " + "; ".join(bad_shapes[:8]))
  if problems:
    raise DataError(f"{description}: " + " | ".join(problems))

  params = {}
  for path, leaf in boxed.items():
    name = found[path]
    host = mapping[path][1](tensors[name].get(name))  # a view of the memory map
    dtype = nn.unbox(leaf).dtype
    if mesh is None:
      params[path] = jax.device_put(np.asarray(host, dtype))
    else:
      sharding = NamedSharding(mesh, parallel.partition_spec(leaf.names, host.shape, mesh.shape))
      params[path] = jax.make_array_from_callback(
        host.shape, sharding, lambda idx, host=host, dtype=dtype: np.asarray(host[idx], dtype)
      )
  return unflatten_dict(params)
