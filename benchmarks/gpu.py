"""Every accelerator figure in one run: the paper stages' train speed and MFU in bfloat16,
their sampling time per image, and DeepFloyd IF-I-XL sampling when its weights are on disk.

  python benchmarks/gpu.py --out runs/gpu                 # on a GPU (or TPU) machine
  python benchmarks/gpu.py --dry --out /tmp/gpu_dry       # the same run on CPU at tiny sizes

Each figure comes from its own `imagen-jax bench` process (a failure or an out-of-memory stops
only that figure; memory is released between them), written as JSON into --out; the last step
prints a table (also summary.json) next to the published JAX-Toolbox Imagen figures on A100-80G.
IF-I-XL (+ IF-II-L) sampling needs local diffusers folders: --if-stages DIR_I DIR_II (the dry
run uses the test suite's tiny IF cascade). Not part of the package.

Per-device train batches default to 32, sized for an 80 GB-class GPU with the configs' full
remat (the base's train state is 24 GiB by `imagen-jax inspect`; not yet run on one);
--base-batch and --sr-batch change them, and a figure that runs out of memory says so in its
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
# NVIDIA JAX-Toolbox's Imagen (paxml) on A100-80G, bfloat16: the published training throughput.
JAX_TOOLBOX_A100 = {"base64": 27.4, "sr256": 84.0}  # images/s per GPU: base 2B, SR 600M
# Tiny stand-ins for the dry run: the paper configs' structure at a size a CPU compiles and runs
# in seconds (16 px base, 8 -> 32 px SR, text of width 16, 8 tokens).
TINY = {
  "base64": [
    "--config.image_size=16",
    "--config.unet.image_size=16",
    "--config.unet.channels=16",
    "--config.unet.channel_mult=(1, 2)",
    "--config.unet.num_res_blocks=1",
    "--config.unet.attn_resolutions=(8,)",
    "--config.unet.head_dim=8",
  ],
  "sr256": [
    "--config.image_size=32",
    "--config.low_res_size=8",
    "--config.sample_size=32",
    "--config.unet.channels=(8, 16)",
    "--config.unet.num_res_blocks=(1, 1)",
    "--config.unet.strides=(2, 2)",
    "--config.unet.attention=('none', 'self')",
    "--config.unet.attn_heads=2",
  ],
}
TINY_TEXT = ["--config.unet.text_cond_dim=16", "--config.text.dim=16", "--config.text.max_length=8"]


def _bench(name: str, what: str, batch: int, out: pathlib.Path, args, extra=()) -> dict:
  """One `imagen-jax bench` process; its JSON report, or {"error": ...} if it failed."""
  path = out / f"{name}_{what}.json"
  iters = args.iters if what == "train" else min(args.iters, 2)  # a sampling call takes seconds
  overrides = ["--config.train.compute_dtype=bfloat16"]
  if args.dry:
    overrides += TINY[name] + TINY_TEXT
  config = str(ROOT / "configs" / f"{name}.py")
  cmd = [
    sys.executable, "-m", "imagen_jax.cli", "bench", "--config", config,
    "--what", what, "--batch-size", str(batch), "--iters", str(iters),
    "--json", str(path), *extra, *overrides,
  ]  # fmt: skip
  print(f"[{time.strftime('%H:%M:%S')}] {name} {what}, batch {batch}", flush=True)
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
  if proc.returncode != 0:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    report = {"error": " | ".join(tail)}
    path.write_text(json.dumps(report) + "\n")
  else:
    report = json.loads(path.read_text())
  report["wall_seconds"] = round(time.perf_counter() - t0, 1)
  print(f"  {report.get('error') or summary(report)}  ({report['wall_seconds']} s)", flush=True)
  return report


def summary(report: dict) -> str:
  if report["what"] == "train":
    if "skipped" in report:
      return f"compiled only: {report['skipped']}"
    return (
      f"{report['images_per_s_per_device']:.2f} images/s per device, MFU {report['mfu']:.1%}, "
      f"compile {report['compile_seconds']:.0f} s"
    )
  seconds = report.get("seconds_per_image", report.get("cascade_seconds_per_image"))
  return f"{seconds:.3f} s per image"


def if_sampling(stages: list[str], args) -> dict:
  """Seconds per image of a DeepFloyd IF cascade at IF's defaults (100 + 50 DDPM steps,
  guidance 7 and 4), after a first call that compiles; 4 prompts."""
  import jax

  from imagen_jax import Imagen

  prompts = ["an owl", "a red circle", "a photo of a corgi", "a blue square"]
  imagen = Imagen.from_pretrained(stages)
  steps = [4] * len(stages) if args.dry else None
  imagen.sample(prompts, seed=0, steps=steps)  # compiles
  t0 = time.perf_counter()
  out = imagen.sample(prompts, seed=1, steps=steps)
  jax.block_until_ready(out.images[-1])
  seconds = time.perf_counter() - t0
  return {
    "what": "if_sample",
    "stages": stages,
    "batch": len(prompts),
    "seconds_per_image": round(seconds / len(prompts), 4),
    "stage_seconds": [round(t.seconds, 3) for t in out.timings],
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="folder for the JSON reports")
  parser.add_argument("--dry", action="store_true", help="tiny sizes on CPU (a test of this run)")
  parser.add_argument("--base-batch", type=int, default=32, help="base64 train batch per device")
  parser.add_argument("--sr-batch", type=int, default=32, help="sr256 train batch per device")
  parser.add_argument("--sample-batch", type=int, default=8, help="sampling batch per device")
  parser.add_argument("--iters", type=int, default=5, help="timed calls per figure")
  parser.add_argument("--if-stages", nargs="+", help="IF-I-XL (and IF-II-L) diffusers folders")
  parser.add_argument("--timeout", type=int, default=600, help="seconds per figure")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out).resolve()
  out.mkdir(parents=True, exist_ok=True)
  if args.dry:
    os.environ["JAX_PLATFORMS"] = "cpu"
    # One CPU device; other XLA flags stay (the test suite's fast-compile flag among them).
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join([*flags, "--xla_force_host_platform_device_count=1"])
    args.base_batch = args.sr_batch = args.sample_batch = 2
    args.iters = 1
  import jax

  devices = jax.device_count()
  print(f"{devices} x {jax.devices()[0].device_kind} ({jax.default_backend()})", flush=True)
  reports = {
    "base64_train": _bench("base64", "train", args.base_batch * devices, out, args),
    "sr256_train": _bench("sr256", "train", args.sr_batch * devices, out, args),
  }
  sample_steps = ["--steps", "4"] if args.dry else []
  for name in ("base64", "sr256"):
    reports[f"{name}_sample"] = _bench(
      name, "sample", args.sample_batch * devices, out, args, sample_steps
    )
  stages = args.if_stages
  if args.dry and not stages:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import if_pipelines

    shutil.rmtree(out / "if_tiny", ignore_errors=True)
    stages = [str(p) for p in if_pipelines(out / "if_tiny")]
  if stages:
    print(f"[{time.strftime('%H:%M:%S')}] IF sampling: {' + '.join(stages)}", flush=True)
    try:
      reports["if_sample"] = if_sampling(stages, args)
      print(f"  {summary(reports['if_sample'])}", flush=True)
    except Exception as e:  # one figure's failure keeps the others
      reports["if_sample"] = {"error": f"{type(e).__name__}: {e}"}
      print(f"  {reports['if_sample']['error']}", flush=True)
  else:
    reports["if_sample"] = {"skipped": "no --if-stages given (IF-I-XL weights are gated)"}
  table = _table(reports, devices)
  print(table)
  (out / "summary.json").write_text(json.dumps(reports, indent=1) + "\n")
  failed = [k for k, r in reports.items() if "error" in r]
  if failed:
    print(f"failed: {', '.join(failed)} (their JSON holds the error)", file=sys.stderr)
  return 1 if failed else 0


def _table(reports: dict, devices: int) -> str:
  rows = ["| figure | value | JAX-Toolbox A100-80G |", "| --- | --- | --- |"]
  for name in ("base64", "sr256"):
    r = reports[f"{name}_train"]
    value = r.get("error") or summary(r)
    rows.append(f"| {name} train | {value} | {JAX_TOOLBOX_A100[name]} images/s per GPU |")
  for key in ("base64_sample", "sr256_sample", "if_sample"):
    r = reports[key]
    value = r.get("error") or r.get("skipped") or summary(r)
    rows.append(f"| {key.replace('_', ' ')} | {value} | |")
  return "\n".join(rows)


if __name__ == "__main__":
  sys.exit(main())
