"""Sharing a trained cascade: each stage's EMA parameters and config in a folder a fraction of its
workdir's size (no optimizer state, no other checkpoints, no logs), loadable by
`Imagen.from_pretrained(folder)` and `Imagen.load([folder])`.

    folder/
      imagen_jax.json          {"format": "imagen_jax.cascade", "version": 1, "stages": [...]}
      README.md                what it is, how it was trained, how to load it
      stage_1/config.json      the stage's training config
      stage_1/params.safetensors   EMA parameters, float32, named by their paths ("a/b/kernel")
      stage_2/...

The text encoder is named in each config (`text.encoder`: a hub id, a folder or a builtin
encoder); its weights are not copied.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import tempfile

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from imagen_jax import parallel, paths
from imagen_jax.errors import DataError, InputError, PathExists
from imagen_jax.models.safetensors_io import SafetensorsFile, save_file
from imagen_jax.stages import ImagenStage

log = logging.getLogger(__name__)

INDEX = "imagen_jax.json"
FORMAT = "imagen_jax.cascade"
PARAMS = "params.safetensors"


def is_export(path) -> bool:
  """Whether `path` is an exported cascade's folder (it holds imagen_jax.json)."""
  return (pathlib.Path(path) / INDEX).exists()


def is_exported_stage(path) -> bool:
  """Whether `path` is one exported stage's folder (params.safetensors and config.json)."""
  path = pathlib.Path(path)
  return (path / PARAMS).exists() and (path / "config.json").exists()


def stage_dirs(folder) -> list[pathlib.Path]:
  """The stage folders of an exported cascade, base first.

  Args:
    folder: an exported cascade's folder.

  Returns:
    The paths of its stage folders, in the order of its index.

  Raises:
    InputError: its imagen_jax.json is not an imagen_jax cascade export's index.
  """
  folder = pathlib.Path(folder)
  index = json.loads((folder / INDEX).read_text())
  if index.get("format") != FORMAT:
    raise InputError(f"{folder / INDEX} is not an imagen_jax cascade export.")
  return [folder / name for name in index["stages"]]


def save_stages(stages, folder) -> pathlib.Path:
  """Writes LoadedStages as an export folder, or none of it (written beside, then renamed).

  Args:
    stages: LoadedStages of this package (self-trained), base first.
    folder: the folder to create (absent or empty); its parents are created as needed.

  Returns:
    The folder's absolute path.

  Raises:
    PathExists: `folder` exists and is not empty.
    InputError: an imported stage (DeepFloyd IF's): share the pipeline folder it came from.
  """
  folder = pathlib.Path(paths.absolute(folder))
  if is_export(folder) or (folder.exists() and any(folder.iterdir())):
    raise PathExists(f"{folder} exists and is not empty: export into a new folder.")
  for loaded in stages:
    if not isinstance(loaded.stage, ImagenStage):
      raise InputError(
        f"{loaded.path} is an imported stage; share it as the pipeline folder it came from."
      )
  folder.parent.mkdir(parents=True, exist_ok=True)
  # Written beside it and renamed when complete: an interrupted export leaves no half folder.
  partial = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
  try:
    _write(stages, partial)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  if folder.exists():
    folder.rmdir()  # empty (checked above)
  partial.rename(folder)
  return folder


def _write(stages, folder: pathlib.Path) -> None:
  names = []
  for i, loaded in enumerate(stages, 1):
    name = f"stage_{i}"
    (folder / name).mkdir()
    config = loaded.config.to_dict()
    (folder / name / "config.json").write_text(json.dumps(config, indent=1, default=list) + "\n")
    flat = {
      "/".join(path): np.asarray(jax.device_get(value))
      for path, value in flatten_dict(loaded.params).items()
    }
    save_file(folder / name / PARAMS, flat, {"source": loaded.path, "step": loaded.step})
    names.append(name)
  index = {"format": FORMAT, "version": 1, "stages": names}
  (folder / INDEX).write_text(json.dumps(index, indent=1) + "\n")
  (folder / "README.md").write_text(_card(stages, names))


def load_exported_stage(path, mesh=None):
  """Reads an exported stage folder.

  Args:
    path: an exported stage's folder (config.json and params.safetensors).
    mesh: where the parameters are replicated.

  Returns:
    (ImagenStage, EMA parameters replicated over `mesh`, config, training step; -1 when the
    file does not say).

  Raises:
    InputError: the parameters' names or shapes do not fit config.json.
  """
  path = pathlib.Path(path)
  config = ml_collections.ConfigDict(json.loads((path / "config.json").read_text()))
  stage = ImagenStage.from_config(config)
  file = SafetensorsFile(path / PARAMS)
  params = unflatten_dict({tuple(name.split("/")): file.get(name) for name in file.names()})
  expected = {k: a.shape for k, a in flatten_dict(nn.unbox(stage.abstract_params())).items()}
  got = {k: v.shape for k, v in flatten_dict(params).items()}
  if got != expected:
    missing = sorted("/".join(k) for k in set(expected) - set(got))[:5]
    wrong = sorted("/".join(k) for k in set(expected) & set(got) if expected[k] != got[k])[:5]
    raise DataError(
      f"{path / PARAMS} does not fit its config.json (missing e.g. {missing}; other shapes e.g. "
      f"{wrong})."
    )
  params = jax.device_put(jax.tree.map(np.asarray, params), parallel.replicated(mesh))
  return stage, params, config, int(file.metadata.get("step", -1))


def _card(stages, names) -> str:
  from imagen_jax.models.unet_factory import count_params

  rows = []
  for name, loaded in zip(names, stages):
    stage = loaded.stage
    kind = "super-resolution" if stage.super_res else "base"
    size = (
      f"{stage.output_size // stage.factor} -> {stage.output_size} px"
      if stage.super_res
      else f"{stage.output_size} px"
    )
    rows.append(
      f"| {name} | {kind} | {size} | {count_params(loaded.params):,} | {loaded.step} | "
      f"`{loaded.path}` |"
    )
  text = stages[0].config.text
  return (
    "# An imagen_jax cascade\n\n"
    "Text-to-image stages trained with imagen_jax (Imagen in JAX/Flax): each stage's EMA "
    "parameters and training config, exported by `imagen-jax export`.\n\n"
    "| stage | kind | resolution | parameters | trained steps | from |\n"
    "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
    f"Text encoder: `{text.encoder}` ({text.max_length} tokens of width {text.dim}); its weights "
    "are not in this folder (a hub id is downloaded on first use, a builtin encoder needs "
    "nothing).\n\n"
    "```python\nfrom imagen_jax import Imagen\n\n"
    'imagen = Imagen.from_pretrained("path/to/this/folder")\n'
    'images = imagen.sample(["a prompt"], seed=0)[-1]\n```\n\n'
    "or `imagen-jax sample --stages path/to/this/folder --prompt ... --out grid.png`.\n"
  )
