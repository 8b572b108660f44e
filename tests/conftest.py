"""Test setup: 8 virtual CPU devices for the sharding tests, and no network."""

import atexit
import os
import shutil
import tempfile

from imagen_jax.cli import FAST_COMPILE_FLAGS as FAST_COMPILE

# Tests run a few steps of many small programs: compiling fast matters more than running fast,
# and the older elemental emitters compile the tiny models' fusions faster than the fusion
# emitters (figures: docs/performance.md, "The test suite's time").
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
# Commands run in subprocesses on one CPU device, whatever the host's core count.
os.environ.setdefault(
  "IMAGEN_JAX_TEST_XLA_FLAGS", f"--xla_force_host_platform_device_count=1 {FAST_COMPILE}"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Compiled programs are shared between the tests of one run (xdist workers inherit the
# controller's environment) and the subprocesses they start. A new folder per run, so that every
# run, here or on a fresh CI machine, starts cold and takes the same time.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="imagen_jax_test_xla_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
# Every program, however quick to compile: the subprocesses' startup programs are reused too
# (docs/performance.md, "The test suite's time").
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


import pytest


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory):
  """A fresh virtual environment with the package installed from its built wheel (no source
  tree on the path): (venv folder, its site-packages)."""
  from helpers import install_wheel

  return install_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory, wheel_venv):
  """The README's `imagen-jax demo --quick`, typed in a fresh working directory, with the
  package installed from its wheel (so the run also proves the wheel carries all it needs):
  (its output dir ./imagen_demo/quick, stdout). Tests that use it share the xdist group
  "cascade", so it runs once."""
  from helpers import run_cli

  venv, _ = wheel_venv
  cwd = tmp_path_factory.mktemp("newcomer")
  proc = run_cli("demo", "--quick", cwd=cwd, command=[str(venv / "bin" / "imagen-jax")])
  return cwd / "imagen_demo" / "quick", proc.stdout
