"""imagen_jax: Imagen (Saharia et al. 2022) in JAX/Flax, built to train on TPU pods and GPUs."""

__version__ = "0.1.0"
