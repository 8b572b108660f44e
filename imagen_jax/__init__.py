"""imagen_jax: Imagen (Saharia et al. 2022) in JAX/Flax, built to train on TPU pods and GPUs.

from imagen_jax import Imagen
images = Imagen.load(["runs/base", "runs/sr1", "runs/sr2"]).sample(["a red circle"])
"""

__version__ = "0.1.0"
__all__ = ["Imagen", "__version__"]


def __getattr__(name):
  # Imported on first use, so that `import imagen_jax` (and the CLI's --help) stay light.
  if name == "Imagen":
    from imagen_jax.pipeline import Imagen

    return Imagen
  raise AttributeError(f"module 'imagen_jax' has no attribute {name!r}")
