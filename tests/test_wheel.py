"""The built wheel, installed in a fresh virtual environment, runs from any folder: its configs
ship inside the package. Offline: the wheel is built without build isolation and installed
without dependencies; the test environment's packages stand in for them."""

import pathlib
import site
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "-q"]


@pytest.mark.xdist_group("wheel")
def test_the_wheel_runs_the_quick_demo_from_a_temporary_folder(tmp_path):
  subprocess.run(
    [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", REPO], check=True
  )
  (wheel,) = (tmp_path / "dist").glob("imagen_jax-*.whl")
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = venv / "bin" / "python"
  own_site = subprocess.run(
    [python, "-c", "import site; print(site.getsitepackages()[0])"],
    check=True,
    capture_output=True,
    text=True,
  ).stdout.strip()
  # The dependencies come from this environment's site-packages (a .pth line adds the folder
  # without running its .pth files, so the editable install of the source tree stays out).
  (pathlib.Path(own_site) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
  subprocess.run(
    [*PIP, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True
  )
  work = tmp_path / "work"
  work.mkdir()
  where = subprocess.run(
    [python, "-c", "import imagen_jax; print(imagen_jax.__file__)"],
    cwd=work,
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  assert where.startswith(own_site)
  proc = subprocess.run(
    [venv / "bin" / "imagen-jax", "demo", "--quick"], cwd=work, capture_output=True, text=True
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (work / "imagen_demo" / "quick" / "samples.png").exists()
  config = subprocess.run(
    [
      python,
      "-c",
      "from imagen_jax.configuration import load_config as l; "
      "print(l('sr1024').sample_size, l('configs/demo.py:sr2').image_size)",
    ],
    cwd=work,
    check=True,
    capture_output=True,
    text=True,
  ).stdout.split()
  assert config == ["1024", "32"]
