"""Device mesh, the one table of logical-axis rules, and sharding helpers.

Modules name their parameter axes logically ("embed", "mlp", "heads", ...); `LOGICAL_AXIS_RULES`
maps those names to the mesh axes ("data", "fsdp", "tensor"). Changing the parallelism means
changing this table or the mesh shape, never a module.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from imagen_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or axes, or None for replicated). The first rule whose mesh axes are
# still free in a PartitionSpec wins, as in flax.linen.logical_to_mesh_axes.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
  ("batch", ("data", "fsdp")),
  # Text encoder (T5) and attention.
  ("vocab", "tensor"),
  ("embed", "fsdp"),
  ("mlp", "tensor"),
  ("heads", "tensor"),
  ("kv", None),
  ("relpos_buckets", None),
  # U-Net: convolution kernels [kh, kw, in, out] shard their input channels over fsdp and their
  # output channels over tensor; the text dimension of conditioning projections over fsdp.
  ("conv_height", None),
  ("conv_width", None),
  ("channels_in", "fsdp"),
  ("channels", "tensor"),
  ("text_embed", "fsdp"),
  ("norm", None),
  ("time_embed", "fsdp"),
)


def make_mesh(
  shape: Mapping[str, int] | Sequence[int], devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """A mesh with axes ("data", "fsdp", "tensor"); one size may be -1 for "all the rest".

  `shape` is a mapping such as {"data": 2, "fsdp": -1, "tensor": 1} or a 3-tuple in axis order.
  Devices are laid out with jax.experimental.mesh_utils so that the innermost axes sit on the
  fastest interconnect.
  """
  devices = list(jax.devices() if devices is None else devices)
  if isinstance(shape, Mapping):
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
      raise ConfigError(f"Unknown mesh axes {sorted(unknown)}; the axes are {MESH_AXES}.")
    sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
  else:
    sizes = [int(s) for s in shape]
    if len(sizes) != len(MESH_AXES):
      raise ConfigError(f"A mesh shape has {len(MESH_AXES)} sizes {MESH_AXES}, got {sizes}.")
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(f"Mesh sizes must be positive, with at most one -1; got {sizes}.")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if len(devices) % known:
      raise ConfigError(f"Mesh sizes {sizes} do not divide the {len(devices)} devices.")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ConfigError(
      f"Mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
      f"{len(devices)} are available; set one size to -1 to use them all."
    )
  try:
    from jax.experimental import mesh_utils

    grid = mesh_utils.create_device_mesh(sizes, devices=devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(sizes)
  return Mesh(grid, MESH_AXES)


def partition_spec(
  logical_names, shape: Sequence[int], mesh_shape: Mapping[str, int], rules=LOGICAL_AXIS_RULES
) -> PartitionSpec:
  """The PartitionSpec of an array of `shape` whose axes carry `logical_names`, on a mesh of
  `mesh_shape` (axis -> size; a Mesh's .shape, or sizes of a mesh that is only planned).

  A mesh axis that does not divide its dimension moves to the largest unsharded dimension it
  divides (so FSDP still splits e.g. a [3, 3, 3, C] kernel), or is dropped (tiny models on many
  devices)."""
  spec = nn.logical_to_mesh_axes(logical_names, rules) if logical_names else PartitionSpec()
  per_dim: list[list[str]] = []
  dropped = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    kept: list[str] = []
    for axis in axes:
      if dim % (math.prod(mesh_shape[a] for a in kept) * mesh_shape[axis]) == 0:
        kept.append(axis)
      else:
        dropped.append(axis)
    per_dim.append(kept)
  for axis in dropped:
    if mesh_shape[axis] == 1:
      continue
    free = [i for i in range(len(shape)) if not per_dim[i] and shape[i] % mesh_shape[axis] == 0]
    if free:
      per_dim[max(free, key=lambda i: shape[i])].append(axis)
    else:
      logging.debug("no dimension of %s is divisible by mesh axis %s: replicated", shape, axis)
  return PartitionSpec(*[tuple(a) if len(a) > 1 else (a[0] if a else None) for a in per_dim])


def tree_specs(abstract_tree, mesh_shape: Mapping[str, int], rules=LOGICAL_AXIS_RULES):
  """PartitionSpecs for a tree of (possibly nn.Partitioned-boxed) abstract arrays: leaves boxed
  by nn.with_logical_partitioning are sharded by their names, plain leaves replicated. The
  result has the structure of the unboxed tree."""

  def one(leaf):
    if isinstance(leaf, nn.LogicallyPartitioned):
      return partition_spec(leaf.names, leaf.value.shape, mesh_shape, rules)
    return PartitionSpec()

  return jax.tree.map(one, abstract_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def tree_shardings(abstract_tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """NamedShardings over `mesh` for a tree of (possibly boxed) abstract arrays (tree_specs)."""
  specs = tree_specs(abstract_tree, mesh.shape, rules)
  return jax.tree.map(
    lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
  )


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


# The batch layout: the leading axis of every batch array is split over the mesh axes of the
# "batch" rule, the other axes are replicated. Everything that places, pads or counts a batch
# goes through these four functions.


def batch_axes(rules=LOGICAL_AXIS_RULES) -> tuple[str, ...]:
  """The mesh axes a batch is split over (the "batch" rule: data and fsdp)."""
  axes = dict(rules)["batch"]
  return (axes,) if isinstance(axes, str) else tuple(axes)


def batch_shards(mesh_shape: Mapping[str, int]) -> int:
  """How many parts a batch is split into on a mesh of `mesh_shape` (a Mesh's .shape)."""
  return math.prod(mesh_shape[axis] for axis in batch_axes())


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """The sharding of a batch array of rank `ndim`: leading axis over the batch axes."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(), *([None] * (ndim - 1))))


def pad_batch(array, mesh: Mesh):
  """`array` [B, ...] (numpy, or a jax.Array padded where it is) with zero rows appended up to a
  multiple of batch_shards (for the text encoder and the samplers, a zero text embedding with an
  empty mask is the null text)."""
  xp = jax.numpy if isinstance(array, jax.Array) else np
  array = xp.asarray(array)
  pad = -array.shape[0] % batch_shards(mesh.shape)
  return xp.pad(array, [(0, pad)] + [(0, 0)] * (array.ndim - 1)) if pad else array


def check_batch(config, mesh_shape: Mapping[str, int]) -> None:
  """Raises ValueError when the config's micro-batch does not split evenly over a mesh of
  `mesh_shape` (a Mesh's .shape)."""
  shards = batch_shards(mesh_shape)
  micro = config.train.batch_size // config.train.grad_accum
  if micro % shards:
    raise ConfigError(
      f"The micro-batch (train.batch_size / train.grad_accum = {micro}) must divide evenly "
      f"over the {shards} batch shards of the mesh ({' x '.join(batch_axes())}): make "
      f"train.batch_size a multiple of {shards * config.train.grad_accum} or use other devices."
    )


def initialize_distributed(config) -> None:
  """jax.distributed.initialize() when config.distributed.initialize is set: with no further
  settings on TPU pods and SLURM/Open MPI clusters (auto-detected), or with an explicit
  coordinator address, process count and id (e.g. two processes on one host for testing)."""
  d = config.distributed
  if not d.initialize or _distributed_is_initialized():
    return
  kwargs = {}
  if d.coordinator_address:
    kwargs = dict(
      coordinator_address=d.coordinator_address,
      num_processes=d.num_processes,
      process_id=d.process_id,
    )
  if d.coordinator_address and "cpu" in (jax.config.jax_platforms or ""):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives
  jax.distributed.initialize(**kwargs)
  logging.info(
    "process %d of %d, %d local and %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def _distributed_is_initialized() -> bool:
  try:
    from jax._src import distributed

    return distributed.global_state.client is not None
  except (ImportError, AttributeError):
    return False


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Per-process numpy batches -> global jax.Arrays sharded over the mesh's batch axes; each
  process contributes its own rows (jax.make_array_from_process_local_data)."""
  return {
    k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
    for k, v in local_batch.items()
  }


def sync(name: str) -> None:
  """A barrier across processes (a no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
