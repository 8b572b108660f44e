"""Where a U-Net's time goes on this CPU: its convolutions against everything else, and XLA's
convolutions against PyTorch's (oneDNN) at the same shapes.

For a stage config (default: the 32 px base of benchmarks/compare_imagen_pytorch.py) it traces
the U-Net's forward pass, collects its convolutions, and times, each as its own compiled program:
- training: every convolution's forward pass and both gradients (jax.vjp), with one JAX device
  per core each running the per-device batch, as `imagen-jax train` runs on a CPU; against the
  U-Net's whole forward and backward pass run the same way;
- sampling: every convolution's forward pass on one device at the sampling batch (guided: two
  U-Net inputs per image), against the U-Net's forward pass.
The convolutions' sum over the whole is their share; FLOPs over time their rate per core. With
torch importable (`--torch`), the same convolutions run through torch.nn.functional.conv2d on all
cores at the global batch. Not part of the package; the test suite checks what it finds and
counts, not its timings; docs/performance.md has its output.

  python benchmarks/conv_share.py [--config configs/demo.py:base --config.x=...] [--torch]
"""

from __future__ import annotations

import argparse
import collections
import json
import os

os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from compare_imagen_pytorch import SIZES  # this folder's; imports no torch
from jax.sharding import Mesh, PartitionSpec

from imagen_jax import hardware
from imagen_jax.perf.bench import load_configs, time_calls
from imagen_jax.stages import ImagenStage

SIZE_32PX = SIZES["32px"]["ours"]  # the comparison's FLOP-matched 32 px base

Conv = collections.namedtuple("Conv", "x w padding")  # shapes NHWC / HWIO, ((lo, hi), (lo, hi))


def _convolutions(jaxpr) -> list[Conv]:
  """The conv_general_dilated equations of a jaxpr and its sub-jaxprs."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      x, w = (v.aval.shape for v in eqn.invars)
      if eqn.params["window_strides"] != (1, 1) or eqn.params["feature_group_count"] != 1:
        raise NotImplementedError(f"only stride-1 ungrouped convolutions are timed: {eqn}")
      found.append(Conv(x, w, tuple(map(tuple, eqn.params["padding"]))))
  for sub in jax.extend.core.subjaxprs(jaxpr):
    found += _convolutions(sub)
  return found


def _conv(x, w, padding):
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _best_seconds(fn, *args, iters: int) -> float:
  return min(time_calls(lambda: fn(*args), warmup=1, iters=iters))


def _on_each_device(fn, mesh):
  """fn run by every device on its own replica, concurrently (the data-parallel step's load)."""
  spec = PartitionSpec()
  return jax.jit(
    jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False),
    compiler_options=hardware.compiler_options("train"),
  )


def _flops(conv: Conv, batch: int) -> float:
  _, h, w, _ = conv.x
  kh, kw, ci, co = conv.w
  (top, bottom), (left, right) = conv.padding
  out_h, out_w = h + top + bottom - kh + 1, w + left + right - kw + 1
  return 2.0 * batch * out_h * out_w * kh * kw * ci * co


def measure_jax(stage, per_device: int, sample_batch: int, iters: int) -> tuple[dict, list]:
  abstract = nn.unbox(stage.abstract_params())
  rng = np.random.default_rng(0)

  def inputs(batch):
    return [
      None if a is None else jnp.asarray(rng.normal(size=a.shape)).astype(a.dtype)
      for a in stage.abstract_inputs(batch)
    ]

  def forward(params, *args):
    return stage.apply(params, *args, train=True, rngs={"dropout": jax.random.key(0)})

  convs = _convolutions(jax.make_jaxpr(forward)(abstract, *inputs(1)).jaxpr)
  key = jax.random.key(1)
  params = jax.tree.map(lambda a: jax.random.normal(key, a.shape, a.dtype) * 0.02, abstract)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  cores = mesh.size
  args = inputs(per_device)
  loss = lambda p, *a: jnp.mean(forward(p, *a) ** 2)
  whole_train = _best_seconds(_on_each_device(jax.grad(loss), mesh), params, *args, iters=iters)
  sample_args = inputs(sample_batch)
  whole_sample = _best_seconds(
    jax.jit(lambda p, *a: stage.apply(p, *a), compiler_options=hardware.compiler_options("sample")),
    params, *sample_args, iters=iters,
  )  # fmt: skip

  rows = []
  for conv, count in collections.Counter(convs).items():
    x = jnp.asarray(rng.normal(size=(per_device, *conv.x[1:])), jnp.float32)
    w = jnp.asarray(rng.normal(size=conv.w) / np.sqrt(np.prod(conv.w[:3])), jnp.float32)

    def fwd_bwd(x, w, padding=conv.padding):
      y, vjp = jax.vjp(lambda x, w: _conv(x, w, padding), x, w)
      return vjp(y)

    train = _best_seconds(_on_each_device(fwd_bwd, mesh), x, w, iters=iters)
    xs = jnp.asarray(rng.normal(size=(sample_batch, *conv.x[1:])), jnp.float32)
    sample = _best_seconds(
      jax.jit(_conv, static_argnums=2, compiler_options=hardware.compiler_options("sample")),
      xs, w, conv.padding, iters=iters,
    )  # fmt: skip
    rows.append({"conv": conv, "count": count, "train_s": train, "sample_s": sample})

  train_convs = sum(r["count"] * r["train_s"] for r in rows)
  sample_convs = sum(r["count"] * r["sample_s"] for r in rows)
  train_flops = sum(r["count"] * 3 * _flops(r["conv"], per_device) for r in rows)
  sample_flops = sum(r["count"] * _flops(r["conv"], sample_batch) for r in rows)
  peak = hardware.measured_cpu_flops() / cores
  report = {
    "devices": cores,
    "per_device_batch": per_device,
    "sample_batch": sample_batch,
    "matmul_gflops_per_core": round(peak / 1e9, 1),
    "train": {
      "unet_fwd_bwd_ms": round(whole_train * 1e3, 1),
      "convs_ms": round(train_convs * 1e3, 1),
      "conv_share": round(train_convs / whole_train, 3),
      "conv_gflops_per_core": round(train_flops / train_convs / 1e9, 1),
    },
    "sample": {
      "unet_fwd_ms": round(whole_sample * 1e3, 1),
      "convs_ms": round(sample_convs * 1e3, 1),
      "conv_share": round(sample_convs / whole_sample, 3),
      "conv_gflops": round(sample_flops / sample_convs / 1e9, 1),
    },
  }
  return report, rows


def measure_torch(rows: list, global_batch: int, sample_batch: int, iters: int) -> dict:
  """The same convolutions through torch (oneDNN on a CPU), NCHW, on all cores."""
  import torch
  import torch.nn.functional as F

  def timings(conv: Conv) -> tuple[float, float]:
    (_, h, w, ci), (kh, kw, _, co), ((top, bottom), (left, right)) = conv
    if (top, left) != (bottom, right):
      raise NotImplementedError(f"only symmetric padding is timed in torch: {conv}")
    weight = torch.randn(co, ci, kh, kw, requires_grad=True)
    x = torch.randn(global_batch, ci, h, w, requires_grad=True)

    def fwd_bwd():
      y = F.conv2d(x, weight, padding=(top, left))
      y.backward(y)

    def forward():
      with torch.no_grad():
        F.conv2d(xs, weight, padding=(top, left))

    xs = torch.randn(sample_batch, ci, h, w)
    return tuple(min(time_calls(f, warmup=1, iters=iters)) for f in (fwd_bwd, forward))

  train = sample = train_flops = sample_flops = 0.0
  for r in rows:
    r["torch_train_s"], r["torch_sample_s"] = timings(r["conv"])
    train += r["count"] * r["torch_train_s"]
    sample += r["count"] * r["torch_sample_s"]
    train_flops += r["count"] * 3 * _flops(r["conv"], global_batch)
    sample_flops += r["count"] * _flops(r["conv"], sample_batch)
  return {
    "threads": torch.get_num_threads(),
    "train_convs_ms": round(train * 1e3, 1),
    "train_conv_gflops_per_core": round(train_flops / train / 1e9 / torch.get_num_threads(), 1),
    "sample_convs_ms": round(sample * 1e3, 1),
    "sample_conv_gflops": round(sample_flops / sample / 1e9, 1),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/demo.py:base")
  parser.add_argument("--batch", type=int, default=32, help="global training batch")
  parser.add_argument("--sample-batch", type=int, default=16, help="U-Net inputs per step")
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--torch", action="store_true", help="also time torch's convolutions")
  parser.add_argument("--out", help="also write the JSON here")
  args, overrides = parser.parse_known_args()
  if args.config == "configs/demo.py:base" and not overrides:
    overrides = SIZE_32PX
  (config,) = load_configs(args.config, overrides)
  stage = ImagenStage.from_config(config)
  per_device = args.batch // jax.device_count()
  report, rows = measure_jax(stage, per_device, args.sample_batch, args.iters)
  if args.torch:
    report["torch"] = measure_torch(rows, args.batch, args.sample_batch, args.iters)
  report["convolutions"] = [
    {
      "x": r["conv"].x[1:],
      "w": r["conv"].w,
      "count": r["count"],
      **{k: round(v * 1e3, 2) for k, v in r.items() if k.endswith("_s")},
    }
    for r in sorted(rows, key=lambda r: -r["count"] * r["train_s"])
  ]
  report["overrides"] = overrides
  text = json.dumps(report, indent=1)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
