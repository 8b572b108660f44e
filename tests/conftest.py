"""Test setup: 8 virtual CPU devices for the sharding tests, and no network."""

import os
import tempfile

# Tests run a few steps of many small programs: compiling fast matters more than running fast.
FAST_COMPILE = "--xla_backend_optimization_level=0"
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
# Compiled programs are shared between tests and the subprocesses they start.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "imagen_jax_test_xla_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
  """The README's `imagen-jax demo --quick` as written, from a fresh working directory, run once
  per test worker: (its output dir ./imagen_demo/quick, stdout). Tests that use it share the
  xdist group "cascade", so it runs once."""
  from helpers import run_cli

  cwd = tmp_path_factory.mktemp("newcomer")
  proc = run_cli("demo", "--quick", cwd=cwd, script=True)
  return cwd / "imagen_demo" / "quick", proc.stdout
