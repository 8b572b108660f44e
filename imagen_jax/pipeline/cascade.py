"""The Imagen pipeline: text -> 64x64 base image -> super-resolution stages.

    from imagen_jax import Imagen
    imagen = Imagen.load(["runs/base", "runs/sr1", "runs/sr2"])
    images = imagen.sample(["a red circle at the top left"], seed=0)  # uint8 NHWC per stage

A call runs as its steps: the options of every stage resolved and checked (pipeline/options.py),
the prompts encoded once for all stages (pipeline/conditioning.py), the rows planned with one key
each (pipeline/rows.py), each stage's compiled sampler run over them (stages/compiled.py), and
the pictures converted (pipeline/outputs.py). Each stage compiles once per batch shape and static
options and is reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from imagen_jax import parallel
from imagen_jax.diffusion import rng
from imagen_jax.errors import ConfigError, InputError
from imagen_jax.images import antialiased_resize, to_float, to_uint8
from imagen_jax.pipeline import export
from imagen_jax.pipeline.conditioning import conditioning
from imagen_jax.pipeline.edit_request import EditRequest
from imagen_jax.pipeline.keys import base_key
from imagen_jax.pipeline.loading import LoadedStage, load_pretrained_stage, load_stage, stage_paths
from imagen_jax.pipeline.options import cascade_options
from imagen_jax.pipeline.outputs import (
  ImagenOutput,
  StageOutput,
  StageTiming,
  check_output_type,
  convert,
)
from imagen_jax.pipeline.rows import Chunk, Rows, place, put
from imagen_jax.stages import SampleOptions, StageInputs, compiled
from imagen_jax.text import TextEncoder

log = logging.getLogger(__name__)


class Imagen:
  """A cascade of trained stages and their shared text encoder.

  Made by Imagen.load (this package's stages) or Imagen.from_pretrained (DeepFloyd IF's, or an
  exported cascade); the constructor takes stages already loaded.

  Args:
    stages: LoadedStages in cascade order: a base (text-to-image) stage first, then
      super-resolution stages, each upsampling the previous one's output size.
    text_encoder: the TextEncoder that encodes the prompts once for every stage.
    mesh: where the parameters live and the batch is split (default: every local device on the
      "data" axis).

  Attributes:
    stages: the list of LoadedStages (`.stage`, `.params`, `.config`, `.path`, `.step`).
    text_encoder: the shared TextEncoder.
    mesh: the jax.sharding.Mesh.

  Raises:
    InputError: no stages, or stages that do not chain (the first is not a base stage, a later
      one is not a super-resolution stage, or its input size is not the previous output size).
  """

  def __init__(self, stages: Sequence[LoadedStage], text_encoder: TextEncoder, mesh=None):
    if not stages:
      raise InputError("An Imagen cascade needs at least one stage.")
    self.stages = list(stages)
    self.text_encoder = text_encoder
    self.mesh = mesh or parallel.make_mesh({"data": -1})
    self._check_chain()

  @classmethod
  def load(
    cls, paths: Sequence[str], *, text_encoder: TextEncoder | None = None, mesh=None
  ) -> Imagen:
    """Loads this package's stages in cascade order, base first.

    Each stage loads as its EMA parameters and its training config, whose `sample` section
    holds its default sampling options (pipeline.load_stage).

    Args:
      paths: one path or a list, base first: workdirs (the newest checkpoint that can be read),
        checkpoint dirs or exported stage folders; an exported cascade's folder
        (save_pretrained) or the output folder of `imagen-jax demo` stands for all its stages.
      text_encoder: replaces the encoder that the stages' configs name (default: that one,
        from TextEncoder.from_pretrained).
      mesh: where the parameters are replicated and the batch is split (default: every local
        device on the "data" axis).

    Returns:
      An Imagen of those stages.

    Raises:
      InputError: no paths, a file where a stage folder is needed, an exported stage whose
        parameters do not fit its config, or stages that do not chain.
      MissingPath: a path that is not there or holds no checkpoint that can be read (a folder
        holding a demo cascade: the message names it).
      ConfigError: stages trained with different text encoders (encoder, length or width); a
        cascade shares one.
    """
    if isinstance(paths, (str, epath.Path)):
      paths = [paths]
    if not paths:
      raise InputError("Imagen.load needs the stage directories, base first.")
    paths = stage_paths(paths)
    mesh = mesh or parallel.make_mesh({"data": -1})
    stages = [load_stage(p, mesh=mesh) for p in paths]
    text = stages[0].config.text
    for s in stages[1:]:
      other = s.config.text
      if (other.encoder, other.max_length, other.dim) != (text.encoder, text.max_length, text.dim):
        raise ConfigError(
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
    """Loads DeepFloyd IF's stages, base first; the first one's T5 encoder serves the cascade.

    A folder written by save_pretrained (or `imagen-jax export`) loads as Imagen.load does.

    Args:
      names: one or a list of hub ids such as "DeepFloyd/IF-I-XL-v1.0" (downloaded on request)
        or saved pipeline folders, base first; or one exported cascade's folder.
      mesh: parameters are created sharded over it as they are read (default: every local
        device on "fsdp", so IF-I-XL and T5-XXL in bfloat16, 18 GB, take 2.3 GB on each chip of
        a v5e-8); the batch is split over it too.
      dtype: the compute dtype (default: bfloat16 on accelerators, float32 on CPU); the T5
        encoder computes in the first stage's.
      param_dtype: the dtype of the stored parameters (default: dtype).
      variant: picks the hub files ("fp16" halves the download; None for float32); local folders
        use what they hold.

    Returns:
      An Imagen of those stages and IF's T5 encoder.

    Raises:
      InputError: no names, stages that do not chain, or a scheduler or U-Net config this
        package does not compute.
      MissingPath: a name that is neither a pipeline folder nor a hub id, a hub id not on the
        hub, or a folder without what IF needs (model_index.json, safetensors weights, the
        first stage's text_encoder/).
      DataError: weights that do not fit their config.json.
      AccessDenied: a gated hub repository whose license the logged-in account has not accepted.
      Unreachable: the hub cannot be reached and its cache holds no copy.
    """
    if isinstance(names, (str, epath.Path)):
      names = [names]
    if not names:
      raise InputError("Imagen.from_pretrained needs the IF stages, base first.")
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
    """Writes the stages' EMA parameters and configs (and a README card) to `folder`, a new
    folder that Imagen.from_pretrained(folder) and Imagen.load([folder]) read, and returns its
    absolute path; arguments and errors as pipeline.export.save_stages.
    """
    return export.save_stages(self.stages, folder)

  def _check_chain(self) -> None:
    first = self.stages[0]
    if first.stage.super_res:
      raise InputError(f"The first stage ({first.path}) must be a base (text-to-image) stage.")
    for prev, cur in zip(self.stages, self.stages[1:]):
      if not cur.stage.super_res:
        raise InputError(
          f"Stage {cur.path} follows {prev.path} but is not a super-resolution stage."
        )
      needs = cur.stage.output_size // cur.stage.factor
      if prev.stage.output_size != needs:
        raise InputError(
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
    """Pictures for `prompts`, every stage's.

    Rows are (prompt, image index) pairs, num_images_per_prompt per prompt, prompt-major; each
    row draws from its own key, made from `key` or `seed`, the prompt's text and the image
    index (pipeline/keys.py), so a prompt gives the same picture alone or anywhere in any batch.

    Args:
      prompts: one text or a list of texts (or None with prompt_embeds).
      key: the call's PRNG key (typed or legacy); `seed` makes one (default 0). Not both.
      negative_prompt: what guidance steers away from (one text, or one per prompt); default:
        the null text (zeros for this package's stages, the encoding of "" for DeepFloyd IF).
      num_images_per_prompt: pictures per prompt.
      prompt_embeds: text embeddings [B, L, D] that replace the prompts' encoding, with
        `prompt_mask` [B, L] (default all True).
      prompt_mask: see prompt_embeds.
      negative_embeds: the null text as embeddings [B or 1, L, D], with `negative_mask`.
      negative_mask: see negative_embeds.
      batch_size: the most rows one device call runs (default: all).
      output_type: "np" (uint8 [N, H, W, 3]), "pil" (lists of PIL images) or "jax" (float
        arrays in [-1, 1], on the devices).
      callback: callback(stage, step), both 0-based, on the host after every step.
      guidance: the guidance scale w (1: none). This and steps, sampler, aug_level, threshold
        and sr_strength take one value for every stage or one per stage; None uses each
        stage's config.sample (stages.SampleOptions says what each means).
      steps: sampling steps.
      sampler: "ddpm", "ddim" or "dpm++2m".
      aug_level: the noise level of a super-resolution stage's input.
      threshold: "none", "static" or "dynamic".
      sr_strength: below 1, a super-resolution stage starts from its upsampled input noised
        to that fraction of the schedule and runs that fraction of the steps.
      stop_at_stage: run only the first K stages (1-based).
      start_image: uint8 [H, W, 3] or one per prompt [P, H, W, 3] that replaces the base
        stage's output (resized to its resolution) and is super-resolved by the later stages;
        it is then images[0].
      init_image: a picture to edit, uint8 [H, W, 3] or [P, H, W, 3], any size: redrawn from
        `strength` and/or inpainted where `mask` says; every stage keeps the rest at its own
        resolution, exactly.
      strength: in (0, 1], the fraction of the base stage's schedule an edit starts from
        (round(steps x strength) steps).
      mask: bool or uint8 [H, W] or [P, H, W], nonzero where new content is drawn.
      resample: RePaint's jumps per step when inpainting (1: none).
      progress: a progress bar per stage.
      on_stage: receives each stage's StageOutput as it finishes (once per chunk).

    Returns:
      An ImagenOutput: `.images` (one entry per stage run), `.timings`, `.prompts` (one per
      row); indexing it indexes `.images`, so `out[-1]` is the last stage's.

    Raises:
      InputError: an argument that cannot be used (the message says which and why).
    """
    check_output_type(output_type)
    last = self._last_stage(stop_at_stage)
    options = cascade_options(
      self.stages, strength=strength, resample=resample, steps=steps, sampler=sampler,
      guidance=guidance, threshold=threshold, aug_level=aug_level, sr_strength=sr_strength,
    )[:last]  # fmt: skip
    cond = conditioning(
      self.text_encoder, prompts, prompt_embeds=prompt_embeds, prompt_mask=prompt_mask,
      negative_prompt=negative_prompt, negative_embeds=negative_embeds,
      negative_mask=negative_mask, images_per_prompt=num_images_per_prompt,
      null_is_encoded=self.text_encoder.if_style,
    )  # fmt: skip
    count = cond.text.shape[0] // num_images_per_prompt
    edit = EditRequest.make(init_image, mask, strength, resample, prompts=count)
    if edit is not None and start_image is not None:
      raise InputError("Give start_image (super-resolve it) or init_image (edit it), not both.")
    start = None if start_image is None else self._start_images(start_image, count)
    rows = Rows.plan(
      cond, key=base_key(key, seed), images_per_prompt=num_images_per_prompt,
      batch_size=batch_size, start=start,
    )  # fmt: skip
    run = _Run(self, options, edit, _Reporter(progress, callback, on_stage))
    images, timings = run.all(rows, first=0 if start is None else 1)
    return ImagenOutput([convert(i, output_type) for i in images], timings, cond.prompts)

  def _last_stage(self, stop_at_stage: int | None) -> int:
    count = len(self.stages)
    last = count if stop_at_stage is None else stop_at_stage
    if not isinstance(last, (int, np.integer)) or not 1 <= last <= count:
      raise InputError(f"stop_at_stage must be between 1 and {count}, got {stop_at_stage}.")
    return int(last)

  def _start_images(self, start_image, prompts: int) -> np.ndarray:
    """uint8 [prompts, S, S, 3] at the base stage's output size S."""
    if len(self.stages) < 2:
      raise InputError("start_image needs a cascade with a super-resolution stage after the base.")
    image = np.asarray(start_image)
    if image.ndim == 3:
      image = np.broadcast_to(image, (prompts, *image.shape))
    if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise InputError(
        f"start_image must be uint8 [H, W, 3] or [B, H, W, 3], got {image.dtype} {image.shape}."
      )
    if image.shape[0] != prompts:
      raise InputError(f"start_image has {image.shape[0]} images for {prompts} prompts.")
    size = self.stages[0].stage.output_size
    if image.shape[1:3] != (size, size):
      log.info("resizing start_image from %s to %dx%d", image.shape[1:3], size, size)
      image = np.stack([antialiased_resize(im, size) for im in image])
    return image


@dataclasses.dataclass(frozen=True)
class _Run:
  """One Imagen.sample call's stages over its rows."""

  imagen: Imagen
  options: list[SampleOptions]
  edit: EditRequest | None
  reporter: _Reporter

  def all(self, rows: Rows, *, first: int) -> tuple[list, list[StageTiming]]:
    """(float images [N, H, W, 3] per stage run, on the devices; their timings); with start
    images (first = 1) those come first."""
    stages = range(first, len(self.options))
    done = {i: [] for i in stages}
    seconds = dict.fromkeys(stages, 0.0)
    for part in rows.chunks():
      chunk = place(rows, part, self.imagen.mesh)
      for i, images, took in self.chunk(chunk, stages):
        done[i].append(images)
        seconds[i] += took
        self.reporter.stage_done(i, images, took)
    results = [jnp.concatenate(done[i]) for i in stages]
    if rows.start is not None:
      results.insert(0, to_float(jnp.asarray(rows.start)))
    timings = [StageTiming(i, self.options[i].steps, seconds[i]) for i in stages]
    return results, timings

  def chunk(self, chunk: Chunk, stages: range):
    """Yields (stage index, float images [count, H, W, 3] on the devices, seconds)."""
    images = chunk.start
    for i in stages:
      loaded, options = self.imagen.stages[i], self.options[i]
      source, keep = self._edit_inputs(i, loaded.stage.output_size, chunk.prompt_index)
      t0 = time.perf_counter()
      with self.reporter.steps(i, loaded.stage.output_size, options.steps_run) as on_step:
        inputs = StageInputs(
          chunk.text, chunk.mask, low_res=images, null_text=chunk.null_text,
          null_mask=chunk.null_mask, source=source, keep=keep,
        )  # fmt: skip
        images = compiled.sample(
          loaded.stage, loaded.params, rng.fold_in(chunk.keys, i), inputs, options=options,
          on_step=on_step,
        ).block_until_ready()  # fmt: skip
      yield i, images[: chunk.count], time.perf_counter() - t0

  def _edit_inputs(self, index: int, size: int, prompt_index: np.ndarray):
    """(source, keep) on the devices for stage `index`: the base stage edits the picture, the
    super-resolution stages inpaint it (nothing without a mask)."""
    if self.edit is None or (index > 0 and self.edit.keep is None):
      return None, None
    source, keep = self.edit.at_size(prompt_index, size)
    return put(source, self.imagen.mesh, 4), put(keep, self.imagen.mesh, 4)


class _Reporter:
  """Progress bars, the per-step callback and the per-stage callback of one call."""

  def __init__(self, progress: bool, callback, on_stage):
    self.progress, self.callback, self.on_stage = progress, callback, on_stage

  @contextlib.contextmanager
  def steps(self, index: int, size: int, steps: int):
    """Yields on_step for stage `index`'s sampler (None when nobody listens)."""
    bar = None
    if self.progress:
      from tqdm import tqdm

      bar = tqdm(total=steps, desc=f"stage {index + 1} ({size}px)", unit="step")
    if bar is None and self.callback is None:
      yield None
      return

    def on_step(step: int) -> None:
      if bar is not None:
        bar.update(1)
      if self.callback is not None:
        self.callback(index, step)

    try:
      yield on_step
    finally:
      if bar is not None:
        bar.close()

  def stage_done(self, index: int, images, seconds: float) -> None:
    if self.on_stage is not None:
      self.on_stage(StageOutput(index, np.asarray(to_uint8(images)), seconds))
