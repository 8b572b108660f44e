"""Training: the loss falls for every stage, sharded and multi-process steps equal the
single-device step, accumulation, the in-step NaN guard. (Resuming: test_resume.py.)"""

import json
import os
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from helpers import STEPS, base_train_args, read_metrics, run_cli, tiny_config, train_batch

from imagen_jax import parallel
from imagen_jax.errors import ConfigError
from imagen_jax.stages import ImagenStage
from imagen_jax.train import step as step_lib
from imagen_jax.train.guards import TrainingError, check_finite
from imagen_jax.train.loop import train_and_evaluate
from imagen_jax.train.optim import clip_by_global_norm, make_optimizer
from imagen_jax.train.state import TrainState, create_state, state_shardings
from imagen_jax.train.step import make_train_step


@pytest.mark.parametrize("stage", ["base", "sr1", "sr2"])
def test_each_demo_stage_trains_and_the_loss_falls(tmp_path, stage):
  config = tiny_config(
    stage,
    tmp_path,
    STEPS,
    "--config.train.checkpoint_every=15",
    "--config.train.sample_every=15",
    "--config.sample.steps=4",
    # Unweighted: over 30 steps a min-SNR-weighted loss (the demo's SR stages) moves more with
    # each batch's noise levels than it falls.
    "--config.diffusion.min_snr_gamma=0",
  )
  summary = train_and_evaluate(config, tmp_path / "run", progress=False)
  records = read_metrics(tmp_path / "run")
  assert [r["step"] for r in records] == list(range(1, 31))
  losses = np.array([r["loss"] for r in records])
  assert losses[-5:].mean() < losses[:5].mean() - 0.05
  assert {"grad_norm", "learning_rate", "steps_per_s", "images_per_s", "mfu"} <= set(records[-1])
  assert summary["compile_seconds"] > 0 and summary["flops_per_step_per_device"] > 0
  (events,) = (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*")
  # Two sample grids (steps 15 and 30): PNG images under the tag "samples", with their captions;
  # the base stage draws config.sample.prompts. The config as text and hparams.
  data = events.read_bytes()
  assert data.count(b"\x89PNG") == 2 and b"samples/captions" in data
  if stage == "base":
    assert config.sample.prompts[0].encode() in data
  assert b"hparams" in data and b"train.learning_rate" in data
  assert json.loads((tmp_path / "run" / "config.json").read_text())["stage"] == config.stage
  grid_records = [r for r in records if r["step"] in (15, 30)]  # each reports its grid's time
  assert all(r["grid_s"] > 0 for r in grid_records) and records[0]["grid_s"] == 0


def test_an_sr_grid_shows_the_upsampled_input_the_sample_and_the_target_per_row(tmp_path):
  from imagen_jax.images import bicubic_resize, to_float, to_uint8
  from imagen_jax.train.grids import GridSampler

  config = tiny_config("sr1", tmp_path, "--config.sample.steps=2")
  stage = ImagenStage.from_config(config)
  batch = {k: v[:3] for k, v in train_batch(config).items()}
  params = nn.unbox(jax.jit(stage.init_params)(jax.random.key(0)))
  sampler = GridSampler(stage, config, batch)
  picture = sampler(params, jax.random.key(1))
  s = stage.image_size
  cells = [  # [row][column] of 3 rows x 3 columns, 2 px gaps
    [
      picture[2 + r * (s + 2) : 2 + r * (s + 2) + s, 2 + c * (s + 2) : 2 + c * (s + 2) + s]
      for c in range(3)
    ]
    for r in range(3)
  ]
  upsampled = np.asarray(to_uint8(bicubic_resize(to_float(batch["low_res"]), s)))
  for r in range(3):
    np.testing.assert_array_equal(cells[r][0], upsampled[r])
    np.testing.assert_array_equal(cells[r][2], batch["image"][r])
  again = sampler(params, jax.random.key(1))  # the fixed inputs are reused: the same picture
  np.testing.assert_array_equal(again, picture)
  assert not np.array_equal(sampler(params, jax.random.key(2)), picture)


def test_records_give_window_means_and_reach_a_hook(tmp_path):
  """A record logged every 3 steps holds the mean loss and gradient norm of its 3 steps (those
  of a run logging every step), and on_metrics receives every record as it is written."""
  runs = {}
  for every in (1, 3):
    seen = []
    config = tiny_config("base", tmp_path, STEPS, f"--config.train.log_every={every}")
    train_and_evaluate(
      config,
      tmp_path / f"every{every}",
      progress=False,
      max_steps=6,
      on_metrics=lambda step, record, seen=seen: seen.append((step, record)),
    )
    runs[every] = read_metrics(tmp_path / f"every{every}")
    assert [r for _, r in seen] == runs[every]
  single, windowed = runs[1], runs[3]
  assert [r["step"] for r in windowed] == [3, 6]
  for record, first in zip(windowed, (0, 3)):
    for key in ("loss", "grad_norm"):
      expected = np.mean([r[key] for r in single[first : first + 3]])
      np.testing.assert_allclose(record[key], expected, rtol=1e-5)
    assert record["window_steps"] == 3 and record["time"] > 1.7e9
    assert {"checkpoint_s", "grid_s", "steps_per_s"} <= set(record)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _state_and_batch(config, mesh, key=0):
  stage = ImagenStage.from_config(config)
  optimizer = make_optimizer(config.train)
  _, shardings = state_shardings(stage, optimizer, mesh)
  state = create_state(stage, optimizer, jax.random.key(key), shardings)
  return stage, optimizer, shardings, state, train_batch(config)


@pytest.mark.parametrize("stage_name", ["base", "sr1"])
def test_sharded_train_step_equals_the_single_device_step(tmp_path, stage_name):
  config = tiny_config(stage_name, tmp_path, "--config.train.batch_size=8")
  results = []
  for shape, devices in (((1, 1, 1), jax.devices()[:1]), ((2, 2, 2), jax.devices()[:8])):
    mesh = parallel.make_mesh(shape, devices)
    stage, optimizer, shardings, state, batch = _state_and_batch(config, mesh)
    step = jax.jit(make_train_step(stage, config, optimizer), out_shardings=(shardings, None))
    batch = {k: jax.device_put(v, parallel.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
    state, metrics = step(state, batch, jax.random.key(1), None)
    results.append((jax.device_get(metrics), jax.device_get(state.params)))
  (m1, p1), (m8, p8) = results
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("unroll", [True, False], ids=["unrolled (CPU)", "loop (accelerators)"])
def test_gradient_accumulation_equals_one_large_batch(tmp_path, monkeypatch, unroll):
  monkeypatch.setattr(step_lib, "unroll_micro_batches", lambda: unroll)
  results, loops = [], []
  for accum in (1, 4):
    config = tiny_config("base", tmp_path, f"--config.train.grad_accum={accum}")
    mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
    stage, optimizer, _, state, batch = _state_and_batch(config, mesh)
    step = jax.jit(make_train_step(stage, config, optimizer))
    loops.append(step.lower(state, batch, jax.random.key(1), None).as_text().count("while"))
    state, metrics = step(state, batch, jax.random.key(1), None)
    results.append((jax.device_get(metrics), jax.device_get(state.params)))
  # The micro-batches run in a loop of their own, or one after the other without one (the
  # random bits' rounds are loops either way).
  assert loops[1] == loops[0] + (not unroll)
  (m1, p1), (m4, p4) = results
  np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p4), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_non_finite_update_is_skipped_and_counted(tmp_path):
  config = tiny_config("base", tmp_path)
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  stage, optimizer, _, state, batch = _state_and_batch(config, mesh)
  batch["text_emb"][0, 0, 0] = np.nan
  before = jax.device_get(state.params)
  step = jax.jit(make_train_step(stage, config, optimizer))
  state, metrics = step(state, batch, jax.random.key(1), None)
  state, metrics = step(state, batch, jax.random.key(1), None)
  assert not bool(metrics["finite"]) and int(metrics["bad_steps"]) == 2
  assert int(state.skipped) == 2 and int(state.step) == 2
  for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(before)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(TrainingError, match="non-finite"):
    check_finite(jax.device_get(metrics), 2, 2)


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clipping_given_the_norm_equals_optax_clip_by_global_norm(max_norm):
  grads = {"a": np.arange(4.0, dtype=np.float32), "b": np.full((2, 3), -2.0, np.float32)}
  want, _ = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
  ours = clip_by_global_norm(max_norm)
  for kwargs in ({}, {"grad_norm": optax.global_norm(grads)}):
    got, state = ours.update(grads, ours.init(grads), **kwargs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-6)
  # The same (empty) state as optax's: checkpoints hold the same tree.
  assert jax.tree.structure(state) == jax.tree.structure(optax.EmptyState())


def test_state_is_created_sharded_by_the_rules(tmp_path):
  config = tiny_config("base", tmp_path)
  mesh = parallel.make_mesh((2, 2, 2))
  _stage, _, _shardings, state, _ = _state_and_batch(config, mesh)
  kernel = state.params["down_1_res_0"]["conv_0"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, "fsdp", "tensor")
  mu = state.opt_state[1][0].mu["down_1_res_0"]["conv_0"]["kernel"]  # Adam's first moment
  assert mu.sharding.spec == kernel.sharding.spec
  assert isinstance(state, TrainState) and not isinstance(kernel, nn.Partitioned)


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
  args = base_train_args(tmp_path, "--max-steps", "4")
  run_cli(
    *args,
    "--workdir",
    str(tmp_path / "single"),
    env={
      "XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
      + os.environ["IMAGEN_JAX_TEST_XLA_FLAGS"]
    },
  )
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": os.environ["IMAGEN_JAX_TEST_XLA_FLAGS"], "JAX_PLATFORMS": "cpu"}
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "imagen_jax.cli",
        *args,
        "--workdir",
        str(tmp_path / "multi"),
        "--config.distributed.initialize=true",
        f"--config.distributed.coordinator_address=127.0.0.1:{port}",
        "--config.distributed.num_processes=2",
        f"--config.distributed.process_id={i}",
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs
  assert "process 1 of 2" in outs[1] or "process 1 of 2" in outs[0]
  single = [r["loss"] for r in read_metrics(tmp_path / "single")]
  multi = [r["loss"] for r in read_metrics(tmp_path / "multi")]
  assert len(multi) == 4
  np.testing.assert_allclose(multi, single, rtol=1e-5)


def test_a_held_out_loss_is_recorded_every_eval_every_steps(tmp_path):
  config = tiny_config(
    "base",
    tmp_path,
    STEPS,
    "--config.train.log_every=3",
    "--config.train.eval_every=3",
    "--config.train.eval_batches=2",
    "--config.data.split=train[:75%]",
    "--config.data.eval_split=train[75%:]",
  )
  train_and_evaluate(config, tmp_path / "run", progress=False, max_steps=6)
  records = read_metrics(tmp_path / "run")
  assert [r["step"] for r in records] == [3, 6]
  assert all(np.isfinite(r["eval_loss"]) and r["eval_s"] > 0 for r in records)
  with pytest.raises(ConfigError, match=r"train\.eval_every.*data\.eval_split"):
    tiny_config("base", tmp_path, "--config.train.eval_every=3")
