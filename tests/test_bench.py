"""`imagen-jax bench`: the figures it reports are consistent with each other and with the batch."""

import json
import pathlib
import re
import subprocess
import sys

import jax
import pytest
from helpers import run_cli, tiny_config, tiny_overrides

from imagen_jax.perf import bench

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _check_train(report, batch):
  assert report["what"] == "train" and report["batch"] == batch
  assert report["devices"] == jax.device_count() and report["compile_seconds"] > 0
  assert report["step_seconds"] > 0
  assert report["images_per_s"] == pytest.approx(batch / report["step_seconds"], rel=1e-3)
  assert report["images_per_s_per_device"] == pytest.approx(
    report["images_per_s"] / jax.device_count(), rel=1e-3
  )
  assert 0 < report["mfu"] < 1
  assert report["compiled_bytes_per_device"] > 0


def test_bench_train_flops_follow_the_batch(tmp_path):
  config = tiny_config("base", tmp_path)
  devices = jax.device_count()
  one = bench.bench_train(config, batch=devices, iters=2, warmup=1)
  two = bench.bench_train(config, batch=2 * devices, iters=2, warmup=1)
  _check_train(one, devices)
  _check_train(two, 2 * devices)
  # XLA's cost analysis of the step: twice the images per device, about twice the FLOPs (the
  # optimizer update, a small part, does not grow).
  ratio = two["flops_per_call_per_device"] / one["flops_per_call_per_device"]
  assert 1.8 < ratio <= 2.0
  assert "images/s/device" in bench.summary_line(one)


def test_bench_train_compiles_but_does_not_run_a_step_that_would_not_fit(tmp_path, monkeypatch):
  """On a machine too small for the step (the 2B base on a CPU host), the report has the compiled
  figures and says why nothing ran, instead of exhausting the host's memory."""
  monkeypatch.setattr(bench, "_available_bytes", lambda: 2**20)
  report = bench.bench_train(tiny_config("base", tmp_path), batch=jax.device_count(), iters=1)
  need = report["compiled_bytes_per_device"] / 2**30
  assert re.search(rf"{re.escape(f'{need:.1f}')} GiB.*0\.0 GiB", report["skipped"])  # need, free
  assert report["flops_per_call_per_device"] > 0 and "step_seconds" not in report
  assert report["skipped"] in bench.summary_line(report)


def test_bench_sample_reports_each_stage_and_the_cascade(tmp_path):
  configs = [tiny_config("base", tmp_path), tiny_config("sr1", tmp_path)]
  batch = jax.device_count()
  report = bench.bench_sample(configs, batch=batch, steps=[3, 2], sampler="ddim", iters=1)
  assert [s["output_size"] for s in report["stages"]] == [16, 32]
  assert [s["steps"] for s in report["stages"]] == [3, 2]
  for s in report["stages"]:
    assert s["sampler"] == "ddim" and s["compile_seconds"] >= 0
    assert s["seconds_per_image"] == pytest.approx(s["seconds"] / batch, rel=1e-2)
    assert s["seconds_per_step"] == pytest.approx(s["seconds"] / s["steps"], rel=1e-2)
  total = sum(s["seconds"] for s in report["stages"]) / batch
  assert report["cascade_seconds_per_image"] == pytest.approx(total, rel=1e-2)
  assert "cascade" in bench.summary_line(report)


def test_bench_cli_writes_json_and_a_summary_line(tmp_path):
  out = tmp_path / "bench.json"
  proc = run_cli(
    "bench",
    "--config",
    "configs/demo.py:sr1",
    "--what",
    "train",
    "--batch-size",
    "2",
    "--iters",
    "1",
    "--json",
    str(out),
    *tiny_overrides("sr1", tmp_path),
  )
  report = json.loads(out.read_text())
  assert report == json.loads(proc.stdout)
  assert report["what"] == "train" and report["batch"] == 2 and report["devices"] == 1
  assert report["flops_per_call_per_device"] > 0 and report["step_seconds"] > 0
  assert "train on 1 x" in proc.stderr and "MFU" in proc.stderr


def test_the_gpu_benchmark_runs_end_to_end_in_its_dry_mode(tmp_path):
  """benchmarks/gpu.py --dry: every figure of the accelerator run, at tiny sizes on the CPU."""
  proc = subprocess.run(
    [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry", "--out", str(tmp_path)],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
  summary = json.loads((tmp_path / "summary.json").read_text())
  for name in ("base64_train", "sr256_train"):
    report = summary[name]
    assert report["compute_dtype"] == "bfloat16" and report["images_per_s_per_device"] > 0
    assert 0 < report["mfu"] < 1
  for name in ("base64_sample", "sr256_sample"):
    assert summary[name]["cascade_seconds_per_image"] > 0
  assert summary["if_sample"]["seconds_per_image"] > 0
  assert "| base64 train |" in proc.stdout and "27.4 images/s per GPU" in proc.stdout


def test_the_input_pipeline_benchmark_runs_each_paper_stage(tmp_path):
  """benchmarks/data_throughput.py at a tiny size: a figure per stage and worker count."""
  command = [sys.executable, str(ROOT / "benchmarks" / "data_throughput.py"), "--out"]
  small = ["--images", "4", "--source-size", "48", "--build-size", "48", "--workers", "0", "1"]
  small += ["--batch", "2", "--batches", "1", "--json", str(tmp_path / "r.json")]
  proc = subprocess.run(
    [*command, str(tmp_path), *small], capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
  report = json.loads((tmp_path / "r.json").read_text())
  assert set(report["stages"]) == {"base64", "sr256", "sr1024"}
  for stage in report["stages"].values():
    assert set(stage["examples_per_s"]) == {"0", "1"}
    assert all(rate > 0 for rate in stage["examples_per_s"].values())


def test_conv_share_finds_every_convolution_and_its_flops(monkeypatch):
  """benchmarks/conv_share.py times the U-Net's convolutions one by one: it must find each conv
  layer of the model once, and their FLOPs must be most of XLA's count of the forward pass."""
  import importlib.util

  import flax.linen as nn

  from imagen_jax.perf.inspection import inspect_config
  from imagen_jax.stages import ImagenStage

  monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
  spec = importlib.util.spec_from_file_location("conv_share", ROOT / "benchmarks" / "conv_share.py")
  conv_share = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(conv_share)
  (config,) = bench.load_configs("configs/demo.py:base", [])
  stage = ImagenStage.from_config(config)
  params = nn.unbox(stage.abstract_params())
  args = stage.abstract_inputs(1)
  jaxpr = jax.make_jaxpr(lambda p, *a: stage.apply(p, *a))(params, *args).jaxpr
  convs = conv_share._convolutions(jaxpr)
  kernels = [k for k in jax.tree.leaves(params) if k.ndim == 4]
  assert len(convs) == len(kernels)
  assert sorted(c.w for c in convs) == sorted(k.shape for k in kernels)
  # XLA's count leaves out the taps that fall on padding, which _flops counts (they run too),
  # and includes the other layers: the two agree within a few percent at the demo's size.
  forward = inspect_config(config, devices=1)["flops_per_image"]["unet_forward"]
  conv_flops = sum(conv_share._flops(c, 1) for c in convs)
  assert 0.8 * forward < conv_flops < 1.05 * forward


@pytest.mark.parametrize("spec, stages", [("demo", 3), ("configs/demo.py", 3), ("demo:sr1", 1)])
def test_the_demo_config_without_a_stage_is_its_cascade_in_either_form(spec, stages):
  configs = bench.load_configs(spec, [])
  assert [c.stage for c in configs] == (["base", "sr", "sr"] if stages == 3 else ["sr"])
