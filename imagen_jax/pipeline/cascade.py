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
import logging
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from imagen_jax import parallel
from imagen_jax.images import antialiased_resize, to_float, to_uint8
from imagen_jax.pipeline.loading import LoadedStage, load_pretrained_stage, load_stage
from imagen_jax.text import TextEncoder, check_texts

log = logging.getLogger(__name__)


def _per_stage(value, n: int, name: str, default: list) -> list:
  if value is None:
    return list(default)
  if isinstance(value, (list, tuple)):
    if len(value) != n:
      raise ValueError(f"{name} has {len(value)} values for {n} stages: give one per stage.")
    return list(value)
  return [value] * n


@dataclasses.dataclass
class StageOutput:
  """One stage's images in a cascade run: `index` (0-based), uint8 `images` [B, H, W, 3], and the
  wall-clock `seconds` it took (its first call includes compilation)."""

  index: int
  images: np.ndarray
  seconds: float


class Imagen:
  """A cascade of trained stages and their shared text encoder."""

  def __init__(self, stages: Sequence[LoadedStage], text_encoder: TextEncoder, mesh=None):
    if not stages:
      raise ValueError("An Imagen cascade needs at least one stage.")
    self.stages = list(stages)
    self.text_encoder = text_encoder
    self.mesh = mesh or parallel.make_mesh({"data": -1})
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

  @classmethod
  def from_pretrained(
    cls,
    names: Sequence[str],
    *,
    mesh=None,
    dtype=None,
    param_dtype=None,
    variant: str | None = "fp16",
  ) -> Imagen:
    """DeepFloyd IF's stages (hub ids such as "DeepFloyd/IF-I-XL-v1.0", downloaded on request,
    or saved pipeline folders), base first; the first one's T5 encoder serves the cascade.

    `dtype` is the compute dtype (default: bfloat16 on accelerators, float32 on CPU) and
    `param_dtype` that of the stored parameters (default: dtype). Parameters are created sharded
    over `mesh` as they are read (default: every local device on "fsdp", so IF-I-XL and T5-XXL
    in bfloat16, 18 GB, take 2.3 GB on each chip of a v5e-8; the batch is split over it too).
    `variant` picks the hub files ("fp16" halves the download; None for float32); local folders
    use what they hold."""
    if isinstance(names, (str, epath.Path)):
      names = [names]
    if not names:
      raise ValueError("Imagen.from_pretrained needs the IF stages, base first.")
    mesh = mesh or parallel.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    stages, first_dir = [], None
    for i, name in enumerate(names):
      loaded, directory = load_pretrained_stage(
        str(name), first=i == 0, mesh=mesh, dtype=dtype, param_dtype=param_dtype, variant=variant
      )
      stages.append(loaded)
      first_dir = first_dir or directory
    from imagen_jax.pretrained.if_pipeline import load_if_text_encoder

    compute = stages[0].stage.model.dtype  # T5-XXL in float32 would not fit a v5e-8
    text_encoder = load_if_text_encoder(
      first_dir, dtype=compute, param_dtype=param_dtype or compute, mesh=mesh
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
    on_stage: Callable[[StageOutput], None] | None = None,
  ) -> list[np.ndarray]:
    """Images for `prompts`: a list with one uint8 array [B, H, W, 3] per stage run.

    guidance, steps, sampler, aug_level (SR stages) and threshold take one value for all stages
    or one per stage; None uses each stage's config.sample values. `stop_at_stage` (1-based)
    stops early. `start_image` (uint8 [H, W, 3] or [B, H, W, 3]) replaces the base stage's output:
    it is resized to the base resolution and super-resolved by the later stages. `progress`
    shows a progress bar per stage; `on_stage` is called with the StageOutput (images and
    seconds) of each stage it runs, as the stage finishes.
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

    # The batch is padded to split evenly over the devices; a padding row is the null text.
    batch = len(prompts)
    emb, mask = self.text_encoder(prompts)
    emb = parallel.pad_batch(emb.astype(jnp.float32), self.mesh)
    mask = parallel.pad_batch(mask, self.mesh)
    emb = jax.device_put(emb, parallel.batch_sharding(self.mesh, 3))
    mask = jax.device_put(mask, parallel.batch_sharding(self.mesh, 2))
    null = {}
    if self.text_encoder.if_style:  # IF's null text is the encoding of "", not zeros
      null_emb, null_mask = self.text_encoder([""] * emb.shape[0])
      null["null_text"] = jax.device_put(
        null_emb.astype(jnp.float32), parallel.batch_sharding(self.mesh, 3)
      )
      null["null_mask"] = jax.device_put(null_mask, parallel.batch_sharding(self.mesh, 2))
    key = jax.random.key(seed)

    outputs, images, first = [], None, 0
    if start_image is not None:
      images = self._start_images(start_image, batch, emb.shape[0])
      outputs.append(StageOutput(0, np.asarray(to_uint8(images))[:batch], 0.0))
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
      try:
        images = loaded.sampler(
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
          progress_bar=bar,
          **null,
        )
        out = np.asarray(to_uint8(images))[:batch]
      finally:
        if bar is not None:
          bar.close()
      outputs.append(StageOutput(i, out, time.perf_counter() - t0))
      if on_stage is not None:
        on_stage(outputs[-1])
    return [o.images for o in outputs]

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
      image = np.stack([antialiased_resize(im, size) for im in image])
    image = np.concatenate([image, np.repeat(image[:1], padded - batch, axis=0)])
    return jax.device_put(to_float(jnp.asarray(image)), parallel.batch_sharding(self.mesh, 4))
