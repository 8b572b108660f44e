"""Resuming what users interrupt, break or change: kill -9, SIGTERM and Ctrl-C, damaged
checkpoints, a diverged run, a changed config, a second trainer on the workdir, metrics.jsonl."""

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import STEPS, base_train_args, read_metrics, run_cli, tiny_config

from imagen_jax import Imagen
from imagen_jax.errors import CheckpointError
from imagen_jax.train import checkpoint as checkpoint_lib
from imagen_jax.train import workdir as workdir_lib
from imagen_jax.train.checkpoint import ConfigChangeError, config_differences
from imagen_jax.train.guards import TrainingError
from imagen_jax.train.loop import train_and_evaluate


def _start(args, workdir):
  env = {**os.environ, "XLA_FLAGS": os.environ["IMAGEN_JAX_TEST_XLA_FLAGS"], "JAX_PLATFORMS": "cpu"}
  return subprocess.Popen(
    [sys.executable, "-m", "imagen_jax.cli", *args, "--workdir", str(workdir)],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _wait_for_step(workdir, step, proc):
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    records = read_metrics(workdir) if (workdir / "metrics.jsonl").exists() else []
    if records and records[-1]["step"] >= step:
      return
    time.sleep(0.02)
  raise AssertionError(f"the run did not reach step {step}: {proc.stderr.read()}")


def _saved_steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_kill_9_and_sigterm_then_rerun_resume_and_match_an_uninterrupted_run(tmp_path):
  args = base_train_args(tmp_path)
  run_cli(*args, "--workdir", str(tmp_path / "straight"))
  workdir = tmp_path / "interrupted"
  # 1. kill -9 after step 9: the checkpoint of step 8 (or 4, if 8 was still being written) stays.
  proc = _start(args, workdir)
  _wait_for_step(workdir, 9, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # 2. the same command resumes; SIGTERM makes it checkpoint where it is and stop cleanly.
  proc = _start(args, workdir)
  _wait_for_step(workdir, 17, proc)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 143, proc.stderr.read()  # saved, not done
  last = read_metrics(workdir)[-1]["step"]
  assert last < 30, "the run finished before SIGTERM arrived"
  assert last in _saved_steps(workdir), "SIGTERM should save the step it stopped at"
  # 3. the same command runs to the end; metrics.jsonl holds every step once.
  run_cli(*args, "--workdir", str(workdir))
  straight = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "straight")]
  resumed = [(r["step"], r["loss"]) for r in read_metrics(workdir)]
  assert [s for s, _ in resumed] == list(range(1, 31))
  np.testing.assert_allclose(
    [loss for _, loss in resumed], [loss for _, loss in straight], rtol=1e-5
  )
  # 4. once more: nothing to do, said so; nothing rewritten.
  before = (workdir / "metrics.jsonl").read_text()
  proc = run_cli(*args, "--workdir", str(workdir))
  assert re.search(r"step 30 of 30.*nothing to train", proc.stdout)
  assert (workdir / "metrics.jsonl").read_text() == before


def test_ctrl_c_saves_and_stops_and_a_second_ctrl_c_exits_at_once(tmp_path):
  args = base_train_args(tmp_path)
  workdir = tmp_path / "run"
  proc = _start(args, workdir)
  _wait_for_step(workdir, 5, proc)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err
  assert "Traceback" not in err and re.search(r"Ctrl-C.*saving", err)
  stopped = read_metrics(workdir)[-1]["step"]
  assert stopped in _saved_steps(workdir) and f"step {stopped}" in out
  # Twice (the second once the first is taken, while it saves): out at once, with the
  # interrupted line and no traceback; the checkpoints already saved stay.
  proc = _start(args, workdir)
  _wait_for_step(workdir, stopped + 2, proc)
  proc.send_signal(signal.SIGINT)
  while not re.search(r"Ctrl-C.*saving", proc.stderr.readline()):
    assert proc.poll() is None, "the run ended before it took the first Ctrl-C"
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err
  assert stopped in _saved_steps(workdir)
  summary = train_and_evaluate(
    tiny_config("base", tmp_path, STEPS, "--config.train.checkpoint_every=4"),
    workdir,
    progress=False,
    max_steps=1,
  )
  assert summary["start_step"] >= stopped


def test_killed_before_its_first_checkpoint_the_rerun_rewrites_metrics_from_step_1(tmp_path):
  """metrics.jsonl of a run killed before its first checkpoint, its last line cut mid-write."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  lines = [json.dumps({"step": s, "loss": 1.0}) for s in range(1, 6)]
  (workdir / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 6, "lo')
  config = tiny_config("base", tmp_path, STEPS, "--config.train.checkpoint_every=4")
  train_and_evaluate(config, workdir, progress=False, max_steps=3)
  assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3]
  # Resumed at 3 after a torn line: exactly the records up to the checkpoint, then the new ones.
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"step": 4, "loss": 0.5}\n{"st')
  train_and_evaluate(config, workdir, progress=False, max_steps=2)
  assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A base run of 8 steps with checkpoints at steps 4 and 8."""
  root = tmp_path_factory.mktemp("finished")
  config = tiny_config("base", root, STEPS, "--config.train.checkpoint_every=4")
  train_and_evaluate(config, root / "run", progress=False, max_steps=8)
  return root


def _copy_run(finished_run, tmp_path, *overrides):
  shutil.copytree(finished_run, tmp_path, dirs_exist_ok=True)
  return tiny_config("base", tmp_path, STEPS, "--config.train.checkpoint_every=4", *overrides)


def _damage(step_dir):
  for f in (step_dir / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(b"garbage")


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, finished_run):
  config = _copy_run(finished_run, tmp_path)
  _damage(tmp_path / "run" / "checkpoints" / "8")
  summary = train_and_evaluate(config, tmp_path / "run", progress=False, max_steps=6)
  assert summary["start_step"] == 4 and summary["step"] == 10
  assert list((tmp_path / "run" / "damaged_checkpoints").iterdir())


def test_all_checkpoints_damaged_is_a_short_error_not_a_fresh_start(tmp_path, finished_run):
  config = _copy_run(finished_run, tmp_path)
  _damage(tmp_path / "run" / "checkpoints" / "8")
  shutil.rmtree(tmp_path / "run" / "checkpoints" / "4" / "state")
  with pytest.raises(CheckpointError, match="from scratch") as error:
    train_and_evaluate(config, tmp_path / "run", progress=False)
  lines = str(error.value).splitlines()
  assert len(lines) == 3 and lines[1].startswith("  step 8: ") and lines[2].startswith("  step 4: ")
  assert max(len(line) for line in lines) < 300


def test_sampling_falls_back_from_a_damaged_newest_checkpoint(tmp_path, finished_run, caplog):
  _copy_run(finished_run, tmp_path)
  _damage(tmp_path / "run" / "checkpoints" / "8")
  with caplog.at_level(logging.WARNING):
    imagen = Imagen.load([str(tmp_path / "run")])
  assert imagen.stages[0].step == 4 and "cannot read" in caplog.text
  assert imagen.sample(["a red circle"], steps=2)[0].shape == (1, 16, 16, 3)
  _damage(tmp_path / "run" / "checkpoints" / "4")
  proc = run_cli(
    "sample", "--stages", str(tmp_path / "run"), "--prompt", "a", "--out", "x", check=False
  )
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "No checkpoint" in proc.stderr and len(proc.stderr.splitlines()) < 12


@pytest.mark.parametrize(
  "override, key",
  [
    ("--config.text.encoder=builtin:byt5-tiny", "text.encoder"),
    ("--config.diffusion.logsnr_shift=1.0", "diffusion.logsnr_shift"),
    ("--config.seed=3", "seed"),
    ("--config.train.batch_size=4", "train.batch_size"),
    ("--config.unet.channels=8", "unet.channels"),
    ("--config.data.workers=2", "data.workers"),  # grain cannot restore across worker counts
  ],
)
def test_resuming_with_a_change_of_meaning_is_refused_with_the_differences(
  tmp_path, finished_run, override, key
):
  config = _copy_run(finished_run, tmp_path, override)
  with pytest.raises(ConfigChangeError, match=rf"\b{re.escape(key)}: .* -> "):
    train_and_evaluate(config, tmp_path / "run", progress=False)


def test_another_stage_in_the_same_workdir_is_refused_in_one_sentence(tmp_path, finished_run):
  _copy_run(finished_run, tmp_path)
  sr = tiny_config("sr1", tmp_path)
  with pytest.raises(ConfigChangeError) as refusal:
    train_and_evaluate(sr, tmp_path / "run", progress=False)
  message = str(refusal.value)
  checkpoints = re.escape(str(tmp_path / "run" / "checkpoints"))
  assert re.search(rf"{checkpoints}.*'base'.*16 px.*'sr'.*32 px.*--workdir", message)
  assert "unet." not in message  # the two stages, not a list of their differences


def test_a_refusal_names_at_most_twelve_differences():
  saved = {
    "stage": "base",
    "image_size": 16,
    "seed": 0,
    "unet": {f"k{i:02d}": 1 for i in range(15)},
  }
  current = {**saved, "unet": {f"k{i:02d}": 2 for i in range(15)}}
  with pytest.raises(ConfigChangeError, match=r"unet\.k11: 1 -> 2\b.*\b3 more") as refusal:
    checkpoint_lib._refuse_changes(saved, current, "runs/x")
  assert "unet.k12" not in str(refusal.value)


def test_resuming_with_safe_changes_continues_and_logs_them(tmp_path, finished_run, caplog):
  config = _copy_run(
    finished_run,
    tmp_path,
    "--config.train.steps=40",
    "--config.train.log_every=2",
    "--config.train.learning_rate=1e-3",
    "--config.sample.steps=9",
  )
  with caplog.at_level(logging.INFO):
    summary = train_and_evaluate(config, tmp_path / "run", progress=False, max_steps=2)
  assert summary["start_step"] == 8 and summary["step"] == 10
  assert re.search(r"changed.*train\.steps: 30 -> 40", caplog.text)  # one line lists them
  sample_steps = json.loads((finished_run / "run" / "config.json").read_text())["sample"]["steps"]
  for change in (
    "train.steps: 30 -> 40",
    "train.log_every: 1 -> 2",
    f"sample.steps: {sample_steps} -> 9",
  ):
    assert change in caplog.text


def test_config_fields_missing_from_an_older_checkpoint_count_as_their_defaults():
  current = {"seed": 0, "diffusion": {"logsnr_shift": 0.0, "schedule": "cosine"}}
  assert config_differences({"seed": 0, "diffusion": {"schedule": "cosine"}}, current) == ([], [])
  refused, _ = config_differences(
    {"seed": 0, "diffusion": {"schedule": "cosine"}},
    {"seed": 0, "diffusion": {"logsnr_shift": 1.0, "schedule": "cosine"}},
  )
  assert refused == ["diffusion.logsnr_shift: 0.0 -> 1.0"]
  # A U-Net field added since (attn_impl) counts as the module's default; how the U-Net computes
  # (remat, attention kernels) may change on resume.
  current = {"unet": {"type": "adm", "channels": 8, "attn_impl": "auto", "remat": "full"}}
  refused, allowed = config_differences({"unet": {"type": "adm", "channels": 8}}, current)
  assert refused == [] and allowed == ["unet.remat: 'none' -> 'full'"]


def _params_of(step_dir):
  restored = ocp.PyTreeCheckpointer().restore(step_dir / "state")
  return jax.tree.leaves((restored["params"], restored["ema_params"]))


def test_a_diverged_run_saves_no_non_finite_state_and_resumes_from_the_last_good_one(
  tmp_path, finished_run
):
  # lr 1e39 is inf in float32: the first update makes every parameter NaN.
  config = tiny_config(
    "base",
    tmp_path / "nan",
    STEPS,
    "--config.train.learning_rate=1e39",
    "--config.train.checkpoint_every=1",
    "--config.train.max_bad_steps=2",
  )
  with pytest.raises(TrainingError, match="No good checkpoint"):
    train_and_evaluate(config, tmp_path / "nan" / "run", progress=False)
  checkpoints = tmp_path / "nan" / "run" / "checkpoints"
  assert not [p for p in checkpoints.iterdir() if p.name.isdigit()]

  # lr 1e30 from the good state of step 8: step 9's parameters are finite but about 1e30, and
  # every loss after it is not finite. That checkpoint is set aside; step 8 is named.
  config = _copy_run(
    finished_run,
    tmp_path,
    "--config.train.learning_rate=1e30",
    "--config.train.checkpoint_every=1",
    "--config.train.max_bad_steps=2",
  )
  workdir = tmp_path / "run"
  with pytest.raises(TrainingError, match=r"good checkpoint.*step 8\b") as error:
    train_and_evaluate(config, workdir, progress=False)
  assert re.search(r"\[9\].*diverged_checkpoints", str(error.value))  # set aside, and where
  assert _saved_steps(workdir) == [4, 8]
  assert [p.name.split("_")[0] for p in (workdir / "diverged_checkpoints").iterdir()] == ["9"]
  for step in (4, 8):
    assert all(
      np.isfinite(leaf).all() and np.abs(leaf).max() < 1e3
      for leaf in _params_of(workdir / "checkpoints" / str(step))
    )
  # With a sane learning rate the same workdir resumes from step 8 and trains on.
  config = tiny_config("base", tmp_path, STEPS, "--config.train.checkpoint_every=4")
  summary = train_and_evaluate(config, workdir, progress=False, max_steps=4)
  assert summary["start_step"] == 8 and np.isfinite(summary["loss"])
  assert [r["step"] for r in read_metrics(workdir)] == list(range(1, 13))


def test_a_second_trainer_on_the_workdir_is_refused_in_one_line(tmp_path):
  workdir = tmp_path / "run"
  with workdir_lib.WorkdirLock(workdir_lib.prepare(workdir)):
    proc = run_cli(*base_train_args(tmp_path), "--workdir", str(workdir), check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert re.search(rf"pid {os.getpid()}\b", proc.stderr)
  assert not (workdir / "metrics.jsonl").exists()


def test_a_lock_left_by_a_killed_process_does_not_block_the_next_run(tmp_path):
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import sys, time; from imagen_jax.train.workdir import WorkdirLock; "
      f"lock = WorkdirLock({str(tmp_path)!r}); lock.acquire(); print('held', flush=True); "
      "time.sleep(600)",
    ],
    stdout=subprocess.PIPE,
    text=True,
  )
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(workdir_lib.WorkdirBusyError, match=f"pid {holder.pid} on"):
    workdir_lib.WorkdirLock(tmp_path).acquire()
  holder.kill()
  holder.wait()
  with workdir_lib.WorkdirLock(tmp_path):
    pass


def test_object_store_lease_blocks_while_renewed_and_is_taken_over_when_stale(tmp_path):
  lock_file = tmp_path / workdir_lib.LOCK_NAME
  live = {"host": "other-host", "pid": 1, "started": "then", "renewed": time.time()}
  lock_file.write_text(json.dumps(live))
  with pytest.raises(workdir_lib.WorkdirBusyError, match="pid 1 on other-host"):
    workdir_lib.WorkdirLock(tmp_path, lease=True).acquire()
  lock_file.write_text(json.dumps({**live, "renewed": time.time() - 2 * workdir_lib.LEASE_SECONDS}))
  with workdir_lib.WorkdirLock(tmp_path, lease=True):
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
  assert not lock_file.exists()
  # A holder of this host whose process is gone does not wait out the lease.
  dead = subprocess.run(
    [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
  )
  mine = {**live, "host": socket.gethostname(), "pid": int(dead.stdout)}
  lock_file.write_text(json.dumps(mine))
  with workdir_lib.WorkdirLock(tmp_path, lease=True):
    pass


def test_in_a_notebook_a_second_ctrl_c_interrupts_the_call_and_keeps_the_kernel(monkeypatch):
  from imagen_jax.train import guards

  monkeypatch.setattr(guards, "_interactive", lambda: True)
  with guards.StopRequests() as requests:
    requests._interrupt(signal.SIGINT, None)
    assert requests.check(0) and requests.reason == "Ctrl-C"
    with pytest.raises(KeyboardInterrupt):
      requests._interrupt(signal.SIGINT, None)
