"""The Imagen pipeline: text -> 64x64 base image -> super-resolution stages.

    from imagen_jax import Imagen
    imagen = Imagen.load(["runs/base", "runs/sr1", "runs/sr2"])
    images = imagen.sample(["a red circle at the top left"], seed=0)  # uint8 NHWC per stage

Each stage is restored from a training workdir (or one of its checkpoint directories) as its EMA
parameters and its config. The prompts are encoded once for all stages, the batch is split over
the local devices, and every stage compiles once per (batch, steps, options) and is reused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from PIL import Image as PILImage

from imagen_jax import parallel, paths, sampling
from imagen_jax.errors import short_error
from imagen_jax.stage import Stage, to_float, to_uint8
from imagen_jax.text import TextEncoder, check_texts

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadedStage:
  stage: Stage
  params: dict  # EMA parameters
  config: ml_collections.ConfigDict
  path: str
  step: int


def _checkpoints(path) -> list[epath.Path]:
  """The checkpoint step directories of a workdir (newest first), or [path] for one checkpoint."""
  path = epath.Path(paths.absolute(path))
  if not path.exists():
    raise FileNotFoundError(f"Stage directory {path} does not exist.")
  if not path.is_dir():
    raise ValueError(
      f"{path} is a file; a stage is a training --workdir or one of its checkpoints/N folders."
    )
  if (path / "state").exists() and (path / "config").exists():
    return [path]
  root = path / "checkpoints" if (path / "checkpoints").exists() else path
  steps = sorted((int(p.name) for p in root.iterdir() if p.name.isdigit()), reverse=True)
  if not steps:
    raise FileNotFoundError(
      f"No checkpoints in {path}: pass a training --workdir (or one of its checkpoints/N "
      "directories) of a run that saved at least one checkpoint."
    )
  return [root / str(step) for step in steps]


def _restore_ema(step_dir: epath.Path, mesh) -> tuple[Stage, dict, ml_collections.ConfigDict]:
  config_file = step_dir / "config" / "metadata"
  if not config_file.exists():
    raise FileNotFoundError(f"{step_dir} has no saved config; it is not an imagen_jax checkpoint.")
  config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
  stage = Stage.from_config(config)
  replicated = parallel.replicated(mesh)
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
    nn.unbox(stage.abstract_params()),
  )
  item = {"ema_params": abstract}
  restored = ocp.PyTreeCheckpointer().restore(
    step_dir / "state",
    args=ocp.args.PyTreeRestore(
      item=item,
      restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      partial_restore=True,
    ),
  )
  return stage, restored["ema_params"], config


def load_stage(path, *, mesh=None) -> LoadedStage:
  """A stage's EMA parameters (replicated over `mesh`, default: all local devices) and config,
  from the newest checkpoint of a workdir that can be read (older ones are tried, with a
  warning, when newer ones are damaged) or from one given checkpoint directory."""
  mesh = mesh or parallel.make_mesh({"data": -1})
  candidates = _checkpoints(path)
  errors = []
  for step_dir in candidates:
    try:
      stage, params, config = _restore_ema(step_dir, mesh)
    except Exception as e:  # orbax and tensorstore raise many types for damaged files
      errors.append(f"{step_dir}: {short_error(e)}")
      if len(candidates) > 1:
        log.warning("cannot read the checkpoint %s; trying an older one", errors[-1])
      continue
    if errors:
      log.warning("%s: sampling from the checkpoint of step %s", path, step_dir.name)
    step = int(step_dir.name) if step_dir.name.isdigit() else -1
    return LoadedStage(stage, params, config, str(path), step)
  raise RuntimeError(f"No checkpoint of {path} can be read:\n  " + "\n  ".join(errors))


def _per_stage(value, n: int, name: str, default: list) -> list:
  if value is None:
    return list(default)
  if isinstance(value, (list, tuple)):
    if len(value) != n:
      raise ValueError(f"{name} has {len(value)} values for {n} stages: give one per stage.")
    return list(value)
  return [value] * n


class _ProgressRouter:
  """One callable for every compiled sampler (a new one would recompile) that forwards step
  callbacks to the current progress bar."""

  def __init__(self):
    self.bar = None

  def __call__(self, step):
    if self.bar is not None:
      self.bar.update(1)


_PROGRESS = _ProgressRouter()


class Imagen:
  """A cascade of trained stages and their shared text encoder."""

  def __init__(self, stages: Sequence[LoadedStage], text_encoder: TextEncoder, mesh=None):
    if not stages:
      raise ValueError("An Imagen cascade needs at least one stage.")
    self.stages = list(stages)
    self.text_encoder = text_encoder
    self.mesh = mesh or parallel.make_mesh({"data": -1})
    self.last_timings: list[float] = []  # seconds per stage of the last sample() call
    self._check_chain()

  @classmethod
  def load(
    cls, paths: Sequence[str], *, text_encoder: TextEncoder | None = None, mesh=None
  ) -> Imagen:
    """Loads the stages in cascade order (base first) from workdirs or checkpoint dirs."""
    if isinstance(paths, (str, epath.Path)):
      paths = [paths]
    if not paths:
      raise ValueError("Imagen.load needs the stage directories, base first.")
    mesh = mesh or parallel.make_mesh({"data": -1})
    stages = [load_stage(p, mesh=mesh) for p in paths]
    text = stages[0].config.text
    for s in stages[1:]:
      other = s.config.text
      if (other.encoder, other.max_length, other.dim) != (text.encoder, text.max_length, text.dim):
        raise ValueError(
          f"Stage {s.path} was trained with the text encoder {other.encoder} "
          f"(length {other.max_length}) but {stages[0].path} with {text.encoder} "
          f"(length {text.max_length}); a cascade shares one encoder."
        )
    if text_encoder is None:
      text_encoder = TextEncoder.from_pretrained(
        text.encoder, max_length=text.max_length, mesh=mesh
      )
    return cls(stages, text_encoder, mesh)

  def _check_chain(self) -> None:
    first = self.stages[0]
    if first.stage.super_res:
      raise ValueError(f"The first stage ({first.path}) must be a base (text-to-image) stage.")
    for prev, cur in zip(self.stages, self.stages[1:]):
      if not cur.stage.super_res:
        raise ValueError(
          f"Stage {cur.path} follows {prev.path} but is not a super-resolution stage."
        )
      needs = cur.stage.output_size // cur.stage.factor
      if prev.stage.output_size != needs:
        raise ValueError(
          f"The stages do not chain: {prev.path} makes {prev.stage.output_size}x"
          f"{prev.stage.output_size} images but {cur.path} upsamples {needs}x{needs} inputs "
          f"to {cur.stage.output_size}x{cur.stage.output_size}."
        )

  @property
  def resolutions(self) -> list[int]:
    return [s.stage.output_size for s in self.stages]

  def sample(
    self,
    prompts: Sequence[str],
    *,
    seed: int = 0,
    guidance=None,
    steps=None,
    sampler=None,
    aug_level=None,
    threshold=None,
    stop_at_stage: int | None = None,
    start_image=None,
    progress: bool = False,
  ) -> list[np.ndarray]:
    """Images for `prompts`: a list with one uint8 array [B, H, W, 3] per stage run.

    guidance, steps, sampler, aug_level (SR stages) and threshold take one value for all stages
    or one per stage; None uses each stage's config.sample values. `stop_at_stage` (1-based)
    stops early. `start_image` (uint8 [H, W, 3] or [B, H, W, 3]) replaces the base stage's output:
    it is resized to the base resolution and super-resolved by the later stages.
    """
    prompts = check_texts(prompts)
    n = len(self.stages)
    last = n if stop_at_stage is None else stop_at_stage
    if not 1 <= last <= n:
      raise ValueError(f"stop_at_stage must be between 1 and {n}, got {stop_at_stage}.")
    configs = [s.config.sample for s in self.stages]
    guidance = _per_stage(guidance, n, "guidance", [c.guidance for c in configs])
    steps = _per_stage(steps, n, "steps", [c.steps for c in configs])
    sampler = _per_stage(sampler, n, "sampler", [c.sampler for c in configs])
    aug_level = _per_stage(aug_level, n, "aug_level", [c.aug_level for c in configs])
    threshold = _per_stage(threshold, n, "threshold", [c.threshold for c in configs])

    batch = len(prompts)
    shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    padded = batch + (-batch % shards)
    texts = prompts + [""] * (padded - batch)
    emb, mask = self.text_encoder(texts)
    sharding = parallel.batch_sharding(self.mesh, 3)
    emb = jax.device_put(jnp.asarray(emb, jnp.float32), sharding)
    mask = jax.device_put(mask, parallel.batch_sharding(self.mesh, 2))
    key = jax.random.key(seed)

    outputs, images = [], None
    self.last_timings = []
    first = 0
    if start_image is not None:
      images = self._start_images(start_image, batch, padded)
      outputs.append(np.asarray(to_uint8(images))[:batch])
      first = 1
    for i in range(first, last):
      loaded = self.stages[i]
      t0 = time.perf_counter()
      bar = None
      if progress:
        from tqdm import tqdm

        bar = tqdm(
          total=steps[i], desc=f"stage {i + 1} ({loaded.stage.output_size}px)", unit="step"
        )
      _PROGRESS.bar = bar
      images = sampling.sample_stage(
        loaded.stage,
        loaded.params,
        emb,
        mask,
        jax.random.fold_in(key, i),
        steps=int(steps[i]),
        sampler=sampler[i],
        guidance=float(guidance[i]),
        threshold=threshold[i],
        low_res=images,
        aug_level=float(aug_level[i]),
        size=loaded.stage.output_size,
        progress=_PROGRESS if progress else None,
      )
      outputs.append(np.asarray(to_uint8(images))[:batch])
      self.last_timings.append(time.perf_counter() - t0)
      if bar is not None:
        bar.close()
      _PROGRESS.bar = None
    return outputs

  def _start_images(self, start_image, batch: int, padded: int):
    if len(self.stages) < 2:
      raise ValueError("start_image needs a cascade with a super-resolution stage after the base.")
    image = np.asarray(start_image)
    if image.ndim == 3:
      image = np.broadcast_to(image, (batch, *image.shape))
    if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise ValueError(
        f"start_image must be uint8 [H, W, 3] or [B, H, W, 3], got {image.dtype} {image.shape}."
      )
    if image.shape[0] != batch:
      raise ValueError(f"start_image has {image.shape[0]} images for {batch} prompts.")
    size = self.stages[0].stage.output_size
    if image.shape[1:3] != (size, size):
      log.info("resizing start_image from %s to %dx%d", image.shape[1:3], size, size)
      image = np.stack(
        [np.asarray(PILImage.fromarray(im).resize((size, size), PILImage.BICUBIC)) for im in image]
      )
    image = np.concatenate([image, np.repeat(image[:1], padded - batch, axis=0)])
    return jax.device_put(to_float(jnp.asarray(image)), parallel.batch_sharding(self.mesh, 4))
