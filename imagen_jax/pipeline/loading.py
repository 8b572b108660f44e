"""Loading a stage for sampling: a trained stage's config and EMA parameters from a workdir, one
of its checkpoints (read through train.checkpoint, the format's owner) or an exported folder;
DeepFloyd IF's from a hub id or a saved pipeline."""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import flax.linen as nn
import jax
import ml_collections

from imagen_jax import hardware, parallel
from imagen_jax.errors import MissingPath, short_error
from imagen_jax.pipeline import export
from imagen_jax.stages import ImagenStage, Stage
from imagen_jax.train import checkpoint

log = logging.getLogger(__name__)
DEMO_SUMMARY = "summary.json"  # written by `imagen-jax demo` beside its stages base/, sr1/, sr2/


@dataclasses.dataclass
class LoadedStage:
  """A stage ready to sample: any stages.Stage (stages.ImagenStage, pretrained.IFStage, ...),
  its parameters (the EMA ones of a trained stage), its config (whose `sample` section holds its
  default options), where it came from, and its training step (-1: not known)."""

  stage: Stage
  params: dict
  config: ml_collections.ConfigDict
  path: str
  step: int


def _restore(step_dir, mesh) -> tuple[ImagenStage, dict, ml_collections.ConfigDict]:
  config = ml_collections.ConfigDict(checkpoint.read_config(step_dir))
  stage = ImagenStage.from_config(config)
  replicated = parallel.replicated(mesh)
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
    nn.unbox(stage.abstract_params()),
  )
  return stage, checkpoint.restore_ema(step_dir, abstract), config


def load_pretrained_stage(
  name: str, *, first: bool, mesh=None, dtype=None, param_dtype=None, variant="fp16"
) -> tuple[LoadedStage, pathlib.Path]:
  """A DeepFloyd IF stage from a hub id or a saved pipeline folder (its parameters sharded over
  `mesh` as they are read), and the folder it was read from."""
  from imagen_jax.pretrained import if_pipeline

  directory = if_pipeline.pipeline_directory(name, variant=variant, text_encoder=first)
  dtype = dtype or hardware.default_compute_dtype()
  stage, params, defaults = if_pipeline.load_if_stage(
    directory, dtype=dtype, param_dtype=param_dtype, mesh=mesh, variant=None
  )
  config = ml_collections.ConfigDict(
    {
      "pretrained": name,
      "sample": defaults,
      "text": {"encoder": name, "max_length": stage.text_len, "dim": stage.text_dim},
    }
  )
  return LoadedStage(stage=stage, params=params, config=config, path=name, step=-1), directory


def stage_paths(paths) -> list[str]:
  """The stage folders that `paths` stand for, in order.

  Args:
    paths: one path or a list. Each stands for an exported cascade's stages (save_pretrained,
      `imagen-jax export`), a demo output folder's (its summary.json names the stages it trained,
      base first), or else itself.

  Returns:
    The stage folders as strings, base first.

  Raises:
    MissingPath: a folder that holds no stages of its own but a demo cascade in a subfolder
      (the message names it).
    InputError: a folder whose imagen_jax.json is not an imagen_jax cascade export's index.
  """
  out = []
  for path in [paths] if isinstance(paths, (str, pathlib.Path)) else paths:
    summary = pathlib.Path(path) / DEMO_SUMMARY
    stages = json.loads(summary.read_text()).get("stages") if summary.is_file() else None
    if export.is_export(path):
      out += [str(p) for p in export.stage_dirs(path)]
    elif isinstance(stages, dict):
      out += [str(pathlib.Path(path) / name) for name in stages]
    else:
      demos = sorted(p.parent for p in pathlib.Path(path).glob(f"*/{DEMO_SUMMARY}"))
      if demos and not (pathlib.Path(path) / "checkpoints").exists():  # e.g. imagen_demo/quick
        raise MissingPath(
          f"{path} holds no stages of its own but the demo cascade {demos[0]}: pass that."
        )
      out.append(str(path))
  return out


def load_stage(path, *, mesh=None) -> LoadedStage:
  """Loads one stage of this package for sampling: its EMA parameters and its config.

  Args:
    path: a training workdir (its newest checkpoint that can be read; older ones are tried, with
      a warning, when newer ones are damaged), one checkpoint directory of it, or an exported
      stage folder (pipeline/export.py).
    mesh: where the parameters are replicated (default: all local devices).

  Returns:
    A LoadedStage: the ImagenStage, its EMA parameters, its config (whose `sample` section holds
    its default options), `path`, and the training step (-1 when not known).

  Raises:
    MissingPath: `path` is not there, holds no checkpoints, or none of them can be read (the
      message names each one's error).
    InputError: `path` is a file, or an exported stage's parameters do not fit its config.
  """
  mesh = mesh or parallel.make_mesh({"data": -1})
  if export.is_exported_stage(path):
    stage, params, config, step = export.load_exported_stage(path, mesh)
    return LoadedStage(stage=stage, params=params, config=config, path=str(path), step=step)
  candidates = checkpoint.checkpoint_dirs(path)
  errors = []
  for step_dir in candidates:
    try:
      stage, params, config = _restore(step_dir, mesh)
    except Exception as e:  # orbax and tensorstore raise many types for damaged files
      errors.append(f"{step_dir}: {short_error(e)}")
      if len(candidates) > 1:
        log.warning("cannot read the checkpoint %s; trying an older one", errors[-1])
      continue
    if errors:
      log.warning("%s: sampling from the checkpoint of step %s", path, step_dir.name)
    step = int(step_dir.name) if step_dir.name.isdigit() else -1
    return LoadedStage(stage=stage, params=params, config=config, path=str(path), step=step)
  raise MissingPath(f"No checkpoint of {path} can be read:\n  " + "\n  ".join(errors))
