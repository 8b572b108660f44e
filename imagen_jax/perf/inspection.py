"""`imagen-jax inspect`: what a stage config costs, without allocating it.

Parameter counts come from jax.eval_shape; FLOPs from XLA's cost analysis of the lowered (not
compiled) forward pass and train step at one image; state memory per device from the exact
parameter and optimizer-state shapes and the shardings that parallel.LOGICAL_AXIS_RULES gives
them on the config's mesh for a chosen device count. With `compile_memory`, the train step is
also compiled on the local backend for the per-device batch, and XLA's memory analysis gives the
activation (temporary) memory.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from imagen_jax import hardware, parallel, text
from imagen_jax.errors import ConfigError, MissingPath
from imagen_jax.models import t5
from imagen_jax.models.layers import REMAT_POLICIES
from imagen_jax.stages import ImagenStage
from imagen_jax.train import aot
from imagen_jax.train.optim import make_optimizer
from imagen_jax.train.state import TrainState, optimizer_layout
from imagen_jax.train.step import make_train_step

GIB = 2**30
KNOWN_ENCODERS = {
  "google/t5-v1_1-xxl": t5.T5_V1_1_XXL,
  **{name: text.TINY_CONFIG for name in text.BUILTIN_TOKENIZERS},
}


def _mesh_sizes(config, devices: int) -> dict[str, int]:
  sizes = {axis: int(config.mesh[axis]) for axis in parallel.MESH_AXES}
  known = math.prod(v for v in sizes.values() if v != -1)
  for axis, v in sizes.items():
    if v == -1:
      sizes[axis] = devices // known
  if math.prod(sizes.values()) != devices:
    raise ConfigError(f"The mesh {dict(config.mesh)} does not fit {devices} devices.")
  return sizes


def _sharded_bytes(abstract, spec: PartitionSpec, sizes: dict[str, int], itemsize=None) -> int:
  """Bytes on one device of an array laid out by `spec` on a mesh of `sizes`."""
  shards = 1
  for axes in spec:
    for axis in (axes,) if isinstance(axes, str) else (axes or ()):
      shards *= sizes[axis]
  itemsize = itemsize or np.dtype(abstract.dtype).itemsize
  return math.prod(abstract.shape) * itemsize // shards


def _bytes_per_device(boxed_tree, sizes: dict[str, int], dtype_bytes: int | None = None) -> int:
  """Bytes on one device of a tree of boxed ShapeDtypeStructs sharded by the rules."""
  specs = parallel.tree_specs(boxed_tree, sizes)
  leaves = jax.tree.leaves(nn.unbox(boxed_tree))
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
  return sum(_sharded_bytes(a, spec, sizes, dtype_bytes) for a, spec in zip(leaves, spec_leaves))


def _optimizer_bytes(optimizer, boxed_params, sizes) -> int:
  """Optimizer state per device, laid out as the train state lays it out (train.state)."""
  params = nn.unbox(boxed_params)
  opt = jax.eval_shape(optimizer.init, params)
  layout = optimizer_layout(opt, params, parallel.tree_specs(boxed_params, sizes), PartitionSpec())
  spec_leaves = jax.tree.leaves(layout, is_leaf=lambda x: isinstance(x, PartitionSpec))
  return sum(_sharded_bytes(a, spec, sizes) for a, spec in zip(jax.tree.leaves(opt), spec_leaves))


def inspect_config(
  config, *, devices: int | None = None, compile_memory: bool = False, activations: bool = False
) -> dict:
  """The JSON report of `imagen-jax inspect` (see module docstring). `activations` adds the
  activations saved for the backward pass per device under each remat policy
  (saved_activation_bytes)."""
  devices = devices or jax.device_count()
  sizes = _mesh_sizes(config, devices)
  parallel.check_batch(config, sizes)  # as train would, before any tracing
  dtype = jnp.bfloat16 if config.train.compute_dtype in ("auto", "bfloat16") else jnp.float32
  stage = ImagenStage.from_config(config, dtype=dtype)
  boxed = stage.abstract_params()
  params = nn.unbox(boxed)
  by_part = _params_by_part(params)
  one = config.copy_and_resolve_references()
  one.train.grad_accum = 1
  optimizer = make_optimizer(one.train)
  state, batch = _abstract_train_inputs(stage, optimizer, params)
  # FLOPs per image: the U-Net forward, and the train step with stored text embeddings.
  args = stage.abstract_inputs(1)
  forward = aot.flops(jax.jit(stage.apply).lower(params, *args))
  step = make_train_step(stage, one, optimizer)
  train_flops = aot.flops(jax.jit(step).lower(state, batch, jax.random.key(0), None))
  param_bytes = _bytes_per_device(boxed, sizes)
  report = {
    "config_stage": config.stage,
    "image_size": config.image_size,
    "params": sum(by_part.values()),
    "params_by_part": by_part,
    "flops_per_image": {"unet_forward": forward, "train_step": train_flops},
    "global_batch": config.train.batch_size,
    "memory_per_device": {
      "devices": devices,
      "mesh": sizes,
      "params_bytes": param_bytes,
      "ema_bytes": param_bytes,
      "gradients_bytes": param_bytes,
      "optimizer_bytes": _optimizer_bytes(optimizer, boxed, sizes),
    },
  }
  _add_text_encoder(report, config, sizes, dtype)
  mem = report["memory_per_device"]
  micro = config.train.batch_size // config.train.grad_accum
  per_device = mem["batch_per_device"] = micro // parallel.batch_shards(sizes)
  if activations:
    mem["saved_activations_bytes"] = {
      policy: saved_activation_bytes(config, policy, per_device) for policy in REMAT_POLICIES
    }
  if compile_memory:
    mem["activations_bytes"] = _activation_bytes(stage, one, optimizer, state, batch, per_device)
  state_bytes = sum(v for k, v in mem.items() if k.endswith("_bytes") and isinstance(v, int))
  mem["total_gib"] = round(state_bytes / GIB, 2)
  return report


def _params_by_part(params) -> dict[str, int]:
  """Parameter counts by the first word of each top-level module's name."""
  by_part: dict[str, int] = {}
  for name, sub in jax.tree.map(lambda x: math.prod(x.shape), params).items():
    part = name.split("_")[0]
    by_part[part] = by_part.get(part, 0) + sum(jax.tree.leaves(sub))
  return by_part


def _abstract_train_inputs(stage, optimizer, params):
  """(train state, batch of one example with stored text embeddings), as ShapeDtypeStructs."""
  state = TrainState.abstract(params, jax.eval_shape(optimizer.init, params))
  batch = {
    "image": jax.ShapeDtypeStruct((1, stage.image_size, stage.image_size, 3), jnp.uint8),
    "text_emb": jax.ShapeDtypeStruct((1, stage.text_len, stage.text_dim), jnp.bfloat16),
    "text_mask": jax.ShapeDtypeStruct((1, stage.text_len), jnp.bool_),
  }
  if stage.super_res:
    low = stage.low_res_size
    batch["low_res"] = jax.ShapeDtypeStruct((1, low, low, 3), jnp.uint8)
  return state, batch


def _add_text_encoder(report: dict, config, sizes, dtype) -> None:
  """The T5 encoder's parameter counts and, when it runs in the train step (no text store),
  its FLOPs per image and its bfloat16 weights per device."""
  encoder = _encoder_config(config)
  if encoder is None:
    return
  report["text_encoder"] = {**t5.count_params(encoder)}
  if config.text.store:
    return
  ids = jax.ShapeDtypeStruct((1, config.text.max_length), jnp.int32)
  mask = jax.ShapeDtypeStruct((1, config.text.max_length), jnp.bool_)
  abstract_t5 = jax.eval_shape(t5.T5Encoder(encoder).init, jax.random.key(0), ids, mask)
  t5_params = nn.unbox(abstract_t5["params"])
  report["flops_per_image"]["text_encoder_forward"] = aot.flops(
    jax.jit(t5.T5Encoder(encoder, dtype=dtype).apply).lower({"params": t5_params}, ids, mask)
  )
  # Frozen and stored in bfloat16 for training.
  report["memory_per_device"]["text_encoder_bytes"] = _bytes_per_device(
    abstract_t5["params"], sizes, dtype_bytes=2
  )


def saved_activation_bytes(config, remat: str, per_device: int) -> int:
  """Bytes of the activations that the U-Net's forward pass keeps for its backward pass, for
  `per_device` images under remat policy `remat`: the residuals of the loss's linearisation
  (jax's saved_residuals) that are not its inputs. Traced, not compiled, so the figure is the
  program's and the same on every backend (XLA:CPU's memory analysis does not show remat's
  savings: its schedule is not memory-driven). In the compute dtype; the largest part of the
  step's activation memory at paper sizes."""
  from jax._src.ad_checkpoint import saved_residuals  # public as print_saved_residuals only

  config = config.copy_and_resolve_references()
  config.unet.remat = remat
  dtype = jnp.bfloat16 if config.train.compute_dtype in ("auto", "bfloat16") else jnp.float32
  stage = ImagenStage.from_config(config, dtype=dtype)
  params = nn.unbox(stage.abstract_params())
  args = stage.abstract_inputs(per_device)

  def loss(params, *args):
    out = stage.apply(params, *args, train=True, rngs={"dropout": jax.random.key(0)})
    return jnp.sum(out.astype(jnp.float32))

  residuals = saved_residuals(loss, params, *args)
  return sum(
    math.prod(aval.shape) * aval.dtype.itemsize
    for aval, source in residuals
    if not source.startswith("from the argument")
  )


def _encoder_config(config):
  name = config.text.encoder
  if name in KNOWN_ENCODERS:
    return KNOWN_ENCODERS[name]
  try:
    from imagen_jax.models.t5_weights import read_config

    return read_config(name)
  except (FileNotFoundError, ValueError):
    return None  # a hub id not known here: nothing is downloaded by inspect


def _activation_bytes(stage, config, optimizer, state, batch, per_device: int) -> int:
  """Temporary memory of the train step compiled for `per_device` images on one local device."""
  batch = {k: jax.ShapeDtypeStruct((per_device, *v.shape[1:]), v.dtype) for k, v in batch.items()}
  step = make_train_step(stage, config, optimizer)
  compiled = (
    jax.jit(step, donate_argnums=0, compiler_options=hardware.compiler_options("train"))
    .lower(state, batch, jax.random.key(0), None)
    .compile()
  )
  analysis = aot.memory(compiled)
  return int(analysis.temp_size_in_bytes) if analysis is not None else -1


# Memory per chip (GiB) for the planning line of `inspect --pretrained --chip`.
CHIP_MEMORY_GIB = {
  "v4": 32,
  "v5e": 16,
  "v5p": 95,
  "v6e": 32,
  "a100-40gb": 40,
  "a100-80gb": 80,
  "h100": 80,
  "h200": 141,
}


def _pretrained_config(name: str) -> tuple[dict, str, float | None]:
  """(U-Net config, its source, the published parameter count) of a known IF model, a U-Net
  config.json, or a U-Net / pipeline folder."""
  import json
  import pathlib

  from imagen_jax.pretrained import known

  if name in known.UNETS:
    return known.UNETS[name]
  path = pathlib.Path(name).expanduser()
  for candidate in (path, path / "config.json", path / "unet" / "config.json"):
    if candidate.is_file():
      return json.loads(candidate.read_text()), str(candidate), None
  raise MissingPath(
    f"{name} is not a known IF model ({', '.join(known.UNETS)}) nor a U-Net config.json or "
    "folder; nothing is downloaded to inspect."
  )


def inspect_pretrained(
  name: str, *, devices: int, mesh: dict[str, int], dtype: str = "bfloat16", chip: str | None = None
) -> dict:
  """Parameters, FLOPs and weight memory per device of an imported IF stage (and, for a first
  stage, the T5 v1.1 XXL encoder it brings), sharded by parallel.LOGICAL_AXIS_RULES on `mesh`
  over `devices` devices. Nothing is allocated or downloaded."""
  from imagen_jax.pretrained import unet as pretrained_unet
  from imagen_jax.pretrained.unet_config import unet_from_config

  config, source, published = _pretrained_config(name)
  compute = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}[dtype]
  itemsize = np.dtype(compute).itemsize
  module = unet_from_config(config, dtype=compute, source=source)
  in_channels, text_dim = int(config["in_channels"]), pretrained_unet.text_dim(config)
  boxed = pretrained_unet.abstract_params(module, in_channels, text_dim, compute)
  params = nn.unbox(boxed)
  by_part: dict[str, int] = {}
  for part, sub in params.items():
    key = part.split("_")[0]
    by_part[key] = by_part.get(key, 0) + sum(math.prod(x.shape) for x in jax.tree.leaves(sub))
  total = sum(by_part.values())

  sizes = {axis: int(mesh.get(axis, 1)) for axis in parallel.MESH_AXES}
  known_size = math.prod(v for v in sizes.values() if v != -1)
  sizes = {a: devices // known_size if v == -1 else v for a, v in sizes.items()}
  if math.prod(sizes.values()) != devices:
    raise ConfigError(f"The mesh {mesh} does not fit {devices} devices.")

  size = int(config.get("sample_size") or 64)
  args = pretrained_unet.abstract_inputs(
    module, in_channels=in_channels, text_dim=text_dim, size=size, text_len=77
  )
  forward = aot.flops(jax.jit(module.apply).lower({"params": params}, *args))
  memory = {
    "devices": devices,
    "mesh": sizes,
    "dtype": dtype,
    "unet_params_bytes": _bytes_per_device(boxed, sizes, itemsize),
  }
  report = {
    "model": name,
    "config_source": source,
    "image_size": size,
    "params": total,
    "params_by_part": by_part,
    "flops_per_image": {"unet_forward": forward, "per_guided_step": 2 * forward},
    "memory_per_device": memory,
  }
  if published:
    report["published_params"] = int(published)
    report["params_vs_published"] = round(total / published - 1, 4)
  if in_channels == 3:  # a first stage brings the cascade's T5 v1.1 XXL encoder
    ids = jax.ShapeDtypeStruct((1, 77), jnp.int32)
    abstract_t5 = jax.eval_shape(
      t5.T5Encoder(t5.T5_V1_1_XXL).init, jax.random.key(0), ids, ids.update(dtype=jnp.bool_)
    )["params"]
    report["text_encoder"] = t5.count_params(t5.T5_V1_1_XXL)
    memory["text_encoder_bytes"] = _bytes_per_device(abstract_t5, sizes, itemsize)
  weights = sum(v for k, v in memory.items() if k.endswith("_bytes"))
  memory["total_gib"] = round(weights / GIB, 2)
  if chip is not None:
    if chip not in CHIP_MEMORY_GIB:
      raise ConfigError(f"Unknown chip {chip!r}; choose one of {sorted(CHIP_MEMORY_GIB)}.")
    memory["chip"] = chip
    memory["chip_memory_gib"] = CHIP_MEMORY_GIB[chip]
    # Weights must leave room for activations and XLA's buffers: a quarter of the chip.
    memory["fits"] = weights / GIB <= 0.75 * CHIP_MEMORY_GIB[chip]
  return report
