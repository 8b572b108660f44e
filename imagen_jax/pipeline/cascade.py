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
import pathlib
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from imagen_jax import diffusion, parallel
from imagen_jax.diffusion import rng
from imagen_jax.images import antialiased_resize, bicubic_resize, to_float, to_uint8
from imagen_jax.pipeline import export, requests
from imagen_jax.pipeline.loading import LoadedStage, load_pretrained_stage, load_stage, stage_paths
from imagen_jax.text import TextEncoder

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


@dataclasses.dataclass
class StageTiming:
  """`stage` (0-based index) ran `steps` steps in `seconds` of wall-clock time (its first call
  with a new batch shape or options includes compilation)."""

  stage: int
  steps: int
  seconds: float


@dataclasses.dataclass
class ImagenOutput(Sequence):
  """The result of Imagen.sample: `images`, one entry per stage run (in the form output_type
  asked for; with start_image, the start image first), `timings` (StageTiming per stage run),
  and `prompts`, the prompt of each row. It indexes and iterates as `images`."""

  images: list
  timings: list[StageTiming]
  prompts: list[str]

  def __getitem__(self, index):
    return self.images[index]

  def __len__(self) -> int:
    return len(self.images)


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
    """Loads the stages in cascade order (base first) from workdirs, checkpoint dirs or exported
    stage folders; an exported cascade's folder (save_pretrained) or the output folder of
    `imagen-jax demo` stands for all its stages."""
    if isinstance(paths, (str, epath.Path)):
      paths = [paths]
    if not paths:
      raise ValueError("Imagen.load needs the stage directories, base first.")
    paths = stage_paths(paths)
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
    or saved pipeline folders), base first; the first one's T5 encoder serves the cascade. A
    folder written by save_pretrained (or `imagen-jax export`) loads as Imagen.load does.

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
    if len(names) == 1 and export.is_export(names[0]):  # a cascade this package exported
      return cls.load(names, text_encoder=None, mesh=mesh)
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

  def __repr__(self) -> str:
    count = f"{len(self.stages)} stage" + ("s" if len(self.stages) > 1 else "")
    text = f"text encoder {self.text_encoder.name} ({self.text_encoder.max_length} tokens)"
    lines = [f"Imagen({count}, {text}, mesh {dict(self.mesh.shape)})"]
    for i, loaded in enumerate(self.stages):
      stage, size = loaded.stage, loaded.stage.output_size
      kind = f"{size // stage.factor}->{size} px" if stage.super_res else f"{size} px base"
      params = sum(leaf.size for leaf in jax.tree.leaves(loaded.params))
      step = f", step {loaded.step}" if loaded.step >= 0 else ""
      lines.append(f"  stage {i + 1}: {kind}, {params / 1e6:.2f}M parameters{step}: {loaded.path}")
    return "\n".join(lines)

  def save_pretrained(self, folder) -> pathlib.Path:
    """Writes the stages' EMA parameters and configs (and a README card) to a new folder that
    Imagen.from_pretrained(folder) and Imagen.load([folder]) read (pipeline/export.py)."""
    return export.save_stages(self.stages, folder)

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
    prompts: str | Sequence[str] | None = None,
    *,
    key=None,
    seed: int | None = None,
    negative_prompt: str | Sequence[str] | None = None,
    num_images_per_prompt: int = 1,
    prompt_embeds=None,
    prompt_mask=None,
    negative_embeds=None,
    negative_mask=None,
    batch_size: int | None = None,
    output_type: str = "np",
    callback: Callable[[int, int], None] | None = None,
    guidance=None,
    steps=None,
    sampler=None,
    aug_level=None,
    threshold=None,
    sr_strength=None,
    stop_at_stage: int | None = None,
    start_image=None,
    init_image=None,
    strength: float = 1.0,
    mask=None,
    resample: int = 1,
    progress: bool = False,
    on_stage: Callable[[StageOutput], None] | None = None,
  ) -> ImagenOutput:
    """Images for `prompts` (a list of texts, or one text), each stage's: an ImagenOutput
    (`.images`, one entry per stage run, `.timings`, `.prompts`; indexing it indexes `.images`,
    so `out[-1]` is the last stage's).

    Rows are (prompt, image index) pairs, num_images_per_prompt per prompt, prompt-major; each
    row draws from its own key, made from `key` (a jax PRNG key) or `seed` (default 0), the
    prompt's text and the image index (pipeline/requests.py), so a prompt gives the same picture
    alone or anywhere in any batch. `prompt_embeds` [B, L, D] (with `prompt_mask` [B, L],
    default all True) replace the prompts' encoding. The unconditional half of guidance reads
    `negative_prompt` (one text, or one per prompt) or `negative_embeds` / `negative_mask`;
    by default the null text (zeros for self-trained stages, the encoding of "" for DeepFloyd
    IF). `batch_size` caps the rows per device call (the rows are run in chunks).
    `output_type`: "np" (uint8 [N, H, W, 3]), "pil" (lists of PIL images) or "jax" (float
    arrays in [-1, 1], on the devices).

    guidance, steps, sampler, aug_level and sr_strength (SR stages) and threshold take one value
    for all stages or one per stage; None uses each stage's config.sample values. An SR stage
    with sr_strength < 1 starts from its upsampled input noised to that fraction of the schedule
    and runs that fraction of the steps. `stop_at_stage` (1-based) stops early. `start_image`
    (uint8 [H, W, 3] or one per prompt [B, H, W, 3]) replaces the base stage's output: it is
    resized to the base resolution and super-resolved by the later stages (it is then
    images[0]).

    Editing: `init_image` (uint8 [H, W, 3] for all prompts or [B, H, W, 3], any size: resized
    for each stage) is redrawn from `strength` in (0, 1], the fraction of the noise schedule
    the base stage starts from (image-to-image; it runs round(steps x strength) steps), and/or
    inpainted where `mask` (bool or uint8 [H, W] / [B, H, W], nonzero where new content is
    drawn) says: every stage keeps the rest of the picture, at its own resolution, exactly.
    `resample` > 1 adds RePaint's jumps per step for coherent boundaries (that many U-Net calls
    per step). SR stages otherwise super-resolve as usual.

    `progress` shows a bar per stage; `callback(stage, step)` (both 0-based) runs on the host
    after every step; `on_stage` receives each stage's StageOutput as it finishes (once per
    chunk).
    """
    if output_type not in requests.OUTPUT_TYPES:
      raise ValueError(f"output_type must be one of {requests.OUTPUT_TYPES}, got {output_type!r}.")
    n = len(self.stages)
    last = n if stop_at_stage is None else stop_at_stage
    if not 1 <= last <= n:
      raise ValueError(f"stop_at_stage must be between 1 and {n}, got {stop_at_stage}.")
    configs = [s.config.sample for s in self.stages]
    options = {
      "guidance": _per_stage(guidance, n, "guidance", [c.guidance for c in configs]),
      "steps": _per_stage(steps, n, "steps", [c.steps for c in configs]),
      "sampler": _per_stage(sampler, n, "sampler", [c.sampler for c in configs]),
      "aug_level": _per_stage(aug_level, n, "aug_level", [c.aug_level for c in configs]),
      "threshold": _per_stage(threshold, n, "threshold", [c.threshold for c in configs]),
      "sr_strength": _per_stage(
        sr_strength, n, "sr_strength", [getattr(c, "sr_strength", 1.0) for c in configs]
      ),
    }
    if not all(float(w) >= 0.0 for w in options["guidance"]):
      raise ValueError(
        f"guidance must be 0 or more (1 is no guidance, 0 the unconditional model), got {guidance}."
      )
    if not all(isinstance(s, (int, np.integer)) and s >= 1 for s in options["steps"]):
      raise ValueError(f"steps must be positive whole numbers, got {steps}.")
    if not all(0.0 < float(v) <= 1.0 for v in options["sr_strength"]):
      raise ValueError(f"sr_strength must be in (0, 1], got {sr_strength}.")
    cond = requests.conditioning(
      self.text_encoder,
      prompts,
      prompt_embeds=prompt_embeds,
      prompt_mask=prompt_mask,
      negative_prompt=negative_prompt,
      negative_embeds=negative_embeds,
      negative_mask=negative_mask,
      images_per_prompt=num_images_per_prompt,
      null_is_encoded=self.text_encoder.if_style,
    )
    rows = cond.text.shape[0]
    keys = requests.row_keys(
      requests.base_key(key, seed), cond.texts, rows // num_images_per_prompt, num_images_per_prompt
    )
    edit = requests.edit_inputs(
      init_image, mask, strength, prompts=rows // num_images_per_prompt,
      images_per_prompt=num_images_per_prompt,
    )  # fmt: skip
    if edit is not None and start_image is not None:
      raise ValueError("Give start_image (super-resolve it) or init_image (edit it), not both.")
    start = None
    if start_image is not None:
      start = self._start_images(start_image, rows // num_images_per_prompt)
      start = np.repeat(start, num_images_per_prompt, axis=0)
    chunk = rows if batch_size is None else batch_size
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
      raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")

    first = 0 if start is None else 1
    per_stage = {i: [] for i in range(first, last)}
    seconds = dict.fromkeys(per_stage, 0.0)
    for lo in range(0, rows, chunk):
      part = slice(lo, min(rows, lo + chunk))
      low = None if start is None else start[part]
      part_edit = None if edit is None else tuple(None if a is None else a[part] for a in edit)
      edit_options = (part_edit, float(strength), int(resample))
      for i, images, took in self._run_rows(
        cond, keys, part, low, first, last, options, progress, callback, edit_options
      ):
        per_stage[i].append(images)
        seconds[i] += took
        if on_stage is not None:
          on_stage(StageOutput(i, np.asarray(to_uint8(images)), took))
    results = [jnp.concatenate(per_stage[i]) for i in per_stage]
    if start is not None:
      results.insert(0, to_float(jnp.asarray(start)))
    timings = [StageTiming(i, int(options["steps"][i]), seconds[i]) for i in per_stage]
    return ImagenOutput([requests.convert(r, output_type) for r in results], timings, cond.prompts)

  def _run_rows(
    self,
    cond,
    keys,
    part: slice,
    low,
    first: int,
    last: int,
    options,
    progress,
    callback,
    edit_options=(None, 1.0, 1),
  ):
    """Yields (stage index, float images [rows, H, W, 3] on the devices, seconds) for the rows
    `part`, padded to split evenly over the mesh (a padding row repeats the first)."""
    count = part.stop - part.start

    def put_part(array, rank, rows):
      padded = parallel.pad_batch(jnp.asarray(array)[rows], self.mesh)
      return jax.device_put(padded, parallel.batch_sharding(self.mesh, rank))

    def put(array, rank):
      return None if array is None else put_part(array, rank, part)

    text, mask = put(cond.text, 3), put(cond.mask, 2)
    null = {"null_text": put(cond.null_text, 3), "null_mask": put(cond.null_mask, 2)}
    row_keys = keys[part]
    extra = text.shape[0] - count
    row_keys = jnp.concatenate([row_keys, jnp.repeat(row_keys[:1], extra)]) if extra else row_keys
    images = None if low is None else put(to_float(jnp.asarray(low)), 4)
    rows_edit, strength, resample = edit_options
    whole = slice(0, count)  # the edit arrays are this part's rows already
    for i in range(first, last):
      loaded = self.stages[i]
      edit = None
      at_size = requests.edit_at(rows_edit, loaded.stage.output_size)
      sr_strength = options["sr_strength"][i] if i > 0 else 1.0
      # An SR stage with sr_strength < 1 starts from its upsampled input, noised.
      start = None
      if sr_strength < 1.0:
        start = bicubic_resize(images, loaded.stage.output_size)
      if at_size is not None and (i == 0 or at_size[1] is not None):
        source, keep = (put_part(a, 4, whole) if a is not None else None for a in at_size)
        if start is not None:  # kept pixels are pasted from the source, new ones start there
          source = keep * source + (1.0 - keep) * start
        edit = diffusion.Edit(source, strength if i == 0 else sr_strength, keep, resample)
      elif start is not None:
        edit = diffusion.Edit(start, sr_strength)
      t0 = time.perf_counter()
      run = int(options["steps"][i])
      if edit is not None and edit.strength < 1.0:  # the steps it runs, for the progress bar
        run = diffusion.editing.start_steps(run, edit.strength)
      on_step, bar = _step_reporter(i, loaded, run, progress, callback)
      try:
        images = loaded.sampler(
          loaded.params,
          rng.fold_in(row_keys, i),
          text,
          mask,
          steps=int(options["steps"][i]),
          sampler=options["sampler"][i],
          guidance=float(options["guidance"][i]),
          threshold=options["threshold"][i],
          low_res=images,
          aug_level=float(options["aug_level"][i]),
          size=loaded.stage.output_size,
          on_step=on_step,
          edit=edit,
          **null,
        )
        images.block_until_ready()
      finally:
        if bar is not None:
          bar.close()
      yield i, images[:count], time.perf_counter() - t0

  def _start_images(self, start_image, prompts: int) -> np.ndarray:
    """uint8 [prompts, S, S, 3] at the base stage's output size S."""
    if len(self.stages) < 2:
      raise ValueError("start_image needs a cascade with a super-resolution stage after the base.")
    image = np.asarray(start_image)
    if image.ndim == 3:
      image = np.broadcast_to(image, (prompts, *image.shape))
    if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise ValueError(
        f"start_image must be uint8 [H, W, 3] or [B, H, W, 3], got {image.dtype} {image.shape}."
      )
    if image.shape[0] != prompts:
      raise ValueError(f"start_image has {image.shape[0]} images for {prompts} prompts.")
    size = self.stages[0].stage.output_size
    if image.shape[1:3] != (size, size):
      log.info("resizing start_image from %s to %dx%d", image.shape[1:3], size, size)
      image = np.stack([antialiased_resize(im, size) for im in image])
    return image


def _step_reporter(index: int, loaded, steps: int, progress: bool, callback):
  """(on_step for the stage's sampler or None, the tqdm bar or None)."""
  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=steps, desc=f"stage {index + 1} ({loaded.stage.output_size}px)", unit="step")
  if bar is None and callback is None:
    return None, None

  def on_step(step: int) -> None:
    if bar is not None:
      bar.update(1)
    if callback is not None:
      callback(index, step)

  return on_step, bar
