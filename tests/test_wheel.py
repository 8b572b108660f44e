"""The built wheel, installed in a fresh virtual environment, runs from any folder: its configs
ship inside the package. The quick demo the cascade tests use is run from this installation
(conftest.quick_demo)."""

import subprocess

import pytest

pytestmark = pytest.mark.xdist_group("cascade")


def test_the_wheel_runs_the_quick_demo_from_a_temporary_folder(wheel_venv, quick_demo, tmp_path):
  venv, own_site = wheel_venv
  out, _ = quick_demo
  assert (out / "samples.png").exists()
  python = venv / "bin" / "python"
  where = subprocess.run(
    [python, "-c", "import imagen_jax; print(imagen_jax.__file__)"],
    cwd=tmp_path,
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  assert where.startswith(own_site)
  config = subprocess.run(
    [
      python,
      "-c",
      "from imagen_jax.configuration import load_config as l; "
      "print(l('sr1024').sample_size, l('configs/demo.py:sr2').image_size)",
    ],
    cwd=tmp_path,
    check=True,
    capture_output=True,
    text=True,
  ).stdout.split()
  assert config == ["1024", "32"]
