"""The XLA:CPU compile options: valid for this jaxlib, convolutions kept out of YNNPACK, and the
same numbers as XLA's defaults."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax import hardware


def _conv_net(x, kernels):
  for k in kernels:
    y = jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    x = jax.nn.silu(y)
  return x


def _inputs():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (4, 16, 16, 32))
  kernels = [0.1 * jax.random.normal(k, (3, 3, 32, 32)) for k in keys[1:]]
  return x, kernels


def _ynn_convolutions(compiled_text: str) -> int:
  """Convolutions inside the YNNPACK fusions of a compiled program."""
  fused = set(re.findall(r"calls=%(\S+?),.*__ynn_fusion", compiled_text))
  bodies = re.findall(r"^%(\S+) .*?\{\n(.*?)\n\}", compiled_text, re.S | re.M)
  return sum("convolution(" in body for name, body in bodies if name in fused)


@pytest.mark.parametrize("purpose", ["train", "sample"])
def test_options_compile_and_keep_convolutions_in_xla(purpose):
  options = hardware.compiler_options(purpose)
  assert set(options) <= {"xla_cpu_experimental_ynn_fusion_type"}
  x, kernels = _inputs()
  tuned = jax.jit(_conv_net, compiler_options=options)
  assert _ynn_convolutions(tuned.lower(x, kernels).compile().as_text()) == 0
  if options:  # this XLA hands convolutions to YNNPACK unless told otherwise: what they undo
    assert _ynn_convolutions(jax.jit(_conv_net).lower(x, kernels).compile().as_text()) > 0
  default = jax.jit(_conv_net)(x, kernels)
  np.testing.assert_allclose(tuned(x, kernels), default, rtol=1e-4, atol=1e-5)
  grad = jax.grad(lambda k: jnp.sum(_conv_net(x, k) ** 2))
  tuned_grads = jax.jit(grad, compiler_options=options)(kernels)
  for a, b in zip(tuned_grads, jax.jit(grad)(kernels), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_unknown_purpose_is_an_error():
  with pytest.raises(ValueError, match="purpose"):
    hardware.compiler_options("eval")


def test_the_command_line_says_when_jax_falls_back_to_the_cpu_on_a_gpu_machine():
  # The command line quiets JAX's loggers; JAX's warning that it found an NVIDIA GPU but no
  # CUDA-enabled jaxlib (a `pip install -e .` on a GPU machine) must still be printed, or
  # training runs on the CPU without a word. The GPU is simulated where JAX looks for one.
  code = (
    "import jax._src.hardware_utils as hw; hw.has_visible_nvidia_gpu = lambda: True\n"
    "from imagen_jax import logs; logs.setup()\n"
    "import jax; print(jax.devices()[0].platform)\n"
  )
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # JAX looks when unset
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == "cpu"
  assert "CUDA-enabled jaxlib is not installed. Falling back to cpu" in done.stderr
