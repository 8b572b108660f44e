"""Stage configs: the defaults every config starts from, loading `path.py[:arg]` files, and
`--config.a.b=value` overrides.

A config file defines `get_config()` or `get_config(arg)` returning an ml_collections.ConfigDict;
`configs/demo.py:base` calls get_config("base").
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib.resources
import importlib.util
import math
import pathlib
import sys
import traceback

import ml_collections

from imagen_jax import paths
from imagen_jax.errors import ConfigError, InputError, MissingPath

STAGES = ("base", "sr")


def stage_defaults() -> ml_collections.ConfigDict:
  """Fields shared by every stage config, with the paper's defaults where it gives them.

  A config file starts from it, sets `unet` from unet_defaults, and changes what differs.

  Returns:
    A new ConfigDict with every section but `unet` filled (stage, text, diffusion, data, train,
    sample, mesh, distributed); `unet` is empty.
  """
  c = ml_collections.ConfigDict()
  c.stage = "base"  # "base" (text -> image) or "sr" (text + low-res -> image)
  c.seed = 0
  c.image_size = 64  # training resolution of this stage's output
  c.low_res_size = 0  # SR: training resolution of the low-res input
  c.sample_size = 0  # SR: output size when sampling the cascade (0: image_size)

  c.text = ml_collections.ConfigDict()
  c.text.encoder = "builtin:byt5-tiny"  # hub id, local directory, or the offline demo encoder
  c.text.dim = 64
  c.text.max_length = 128
  c.text.store = ""  # precomputed embedding store (imagen-jax encode-text); "" = encode in step

  c.unet = ml_collections.ConfigDict()

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "cosine"
  # logsnr(t) + logsnr_shift: 2 log(64 / image_size) carries the cosine schedule, made for 64 px,
  # to another resolution (diffusion.ShiftedSchedule).
  c.diffusion.logsnr_shift = 0.0
  c.diffusion.objective = "eps"  # eps-prediction with eps-MSE, as in the paper
  c.diffusion.min_snr_gamma = 0.0  # > 0 enables min-SNR weighting
  c.diffusion.cond_drop_prob = 0.1  # text zeroed for classifier-free guidance
  c.diffusion.aug_max_level = 1.0  # SR: training aug levels ~ U(0, aug_max_level)

  c.data = ml_collections.ConfigDict()
  c.data.name = "imagen_shapes"  # or "image_text_folder", or any TFDS image-caption dataset
  c.data.path = ""  # image_text_folder: the folder of images and captions
  c.data.data_dir = ""  # TFDS data_dir ("" = ~/tensorflow_datasets)
  c.data.split = "train"
  # A held-out split for train.eval_every, e.g. "test", or a slice held out of a single split
  # ("train[:98%]" for data.split and "train[98%:]" here).
  c.data.eval_split = ""
  c.data.image_key = "image"
  c.data.text_key = "caption"
  c.data.num_examples = 20_000  # imagen_shapes: examples to generate
  # imagen_shapes: the resolution stored (0: the stage's largest size); image_text_folder: the
  # largest short side stored (0: as they are)
  c.data.build_size = 0
  c.data.crop = "center"  # "center" or "random" crop after the shortest-side resize
  c.data.crop_from = 0  # SR crops: resize to this size, then crop image_size (0 = no crop)
  c.data.min_size = 0  # image_text_folder: skip images smaller than this
  c.data.flip = False  # captions say left and right: no flips by default
  c.data.workers = 0  # grain worker processes (0 = in the main process)
  c.data.shuffle = True

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  c.train.batch_size = 64  # global batch
  c.train.grad_accum = 1  # micro-batches per step (batch_size must divide by it)
  c.train.optimizer = "adam"  # "adam" or "adafactor"
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 100
  c.train.decay_steps = 0  # cosine decay to 0 over this many steps (0 = train.steps)
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.eps = 1e-8
  c.train.weight_decay = 0.0
  c.train.clip_norm = 1.0
  c.train.ema_decay = 0.9999
  c.train.ema_warmup = True  # decay min(ema_decay, (1 + step) / (10 + step))
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.log_every = 50
  c.train.sample_every = 0  # 0: no sample grids during training
  c.train.eval_every = 0  # > 0: the EMA model's loss on data.eval_split every N steps
  c.train.eval_batches = 4  # global batches of data.eval_split in that loss
  c.train.max_bad_steps = 10  # stop after this many non-finite updates in a row
  c.train.compute_dtype = "auto"  # "auto" (bfloat16 on TPU/GPU), "float32" or "bfloat16"
  c.train.compile_memory_check = True

  c.sample = ml_collections.ConfigDict()
  c.sample.steps = 64
  c.sample.sampler = "ddpm"
  c.sample.guidance = 5.0
  c.sample.aug_level = 0.0
  # SR: < 1 starts from the upsampled input noised to this fraction of the schedule, as
  # diffusers' IF img2img super-resolution does, and runs that fraction of the steps; 1 starts
  # from pure noise, as in the paper.
  c.sample.sr_strength = 1.0
  c.sample.threshold = "dynamic"
  c.sample.prompts = ("a red circle at the top left", "a blue square in the center")

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1

  c.distributed = ml_collections.ConfigDict()
  c.distributed.initialize = False  # call jax.distributed.initialize() (TPU pods, multi-node)
  c.distributed.coordinator_address = ""
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  return c


def unet_defaults(kind: str) -> ml_collections.ConfigDict:
  """A config's `unet` section for a U-Net type ("adm" or "efficient") with every field at its
  default, the paper's size (the modules' own defaults, models.unet_defaults); a config changes
  only what differs."""
  from imagen_jax.models.unet_factory import unet_defaults as module_defaults

  return ml_collections.ConfigDict(module_defaults(kind))


def load_config(
  spec: str, overrides: list[str] | tuple[str, ...] = ()
) -> ml_collections.ConfigDict:
  """Loads a config file, applies overrides, validates, and makes the paths in it absolute.

  Args:
    spec: `path.py` or `path.py:arg` (get_config(arg) is called); a config installed with the
      package may be named as `demo`, `demo.py` or `configs/demo.py`.
    overrides: `--config.a.b=value` (or `--config.a.b`, `value`) items, applied in order.

  Returns:
    The validated ConfigDict, its paths (data.path, data.data_dir, text.store) absolute.

  Raises:
    MissingPath: no such config file, here or among the package's configs.
    ConfigError: a config file that fails to run (the message names its line), has no
      get_config() or returns no ConfigDict, sets a field no stage has or a U-Net section
      without its type, or an override or value that validate refuses.
  """
  path, _, arg = spec.partition(":")
  file = resolve_config_path(path)
  with _siblings_importable(file):
    module_spec = importlib.util.spec_from_file_location(f"_imagen_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    try:
      module_spec.loader.exec_module(module)
    except Exception as e:  # a config file is user code: say where it failed, in one line
      raise ConfigError(_where(file, e)) from e
    if not hasattr(module, "get_config"):
      raise ConfigError(f"{file} defines no get_config().")
    try:
      config = module.get_config(arg) if arg else module.get_config()
    except Exception as e:
      raise ConfigError(_where(file, e)) from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(
      f"get_config() in {file} returned {type(config).__name__}; it must return an "
      "ml_collections.ConfigDict (start from imagen_jax.configuration.stage_defaults())."
    )
  _check_fields(config, file)
  apply_overrides(config, overrides)
  validate(config)
  for section, key in PATH_FIELDS:
    if key in config.get(section, {}):
      config[section][key] = paths.absolute(config[section][key])
  return config


# Config fields that hold paths: made absolute when loaded (relative to the current directory).
PATH_FIELDS = (("data", "path"), ("data", "data_dir"), ("text", "store"))


@contextlib.contextmanager
def _siblings_importable(file: pathlib.Path):
  """Lets a config file import the files beside it (configs/sr1024.py starts from sr256.py), and
  forgets them afterwards, so configs from another folder with the same names load their own."""
  folder = str(file.resolve().parent)
  before = set(sys.modules)
  sys.path.insert(0, folder)
  try:
    yield
  finally:
    sys.path.remove(folder)
    for name in set(sys.modules) - before:
      if not name.startswith("_imagen_config_") and str(
        getattr(sys.modules[name], "__file__", "") or ""
      ).startswith(folder + "/"):
        del sys.modules[name]


def _where(file: pathlib.Path, error: Exception) -> str:
  """'FILE:LINE: Error: message' for an error raised while running a config file (the line of
  the config file itself where the error passed through it)."""
  if isinstance(error, SyntaxError):
    return f"{error.filename}:{error.lineno}: SyntaxError: {error.msg}"
  line = None
  for frame in traceback.extract_tb(error.__traceback__):
    if pathlib.Path(frame.filename).resolve() == file.resolve():
      line = frame.lineno
  where = f"{file}:{line}" if line else str(file)
  return f"{where}: {type(error).__name__}: {error}"


def _packaged_configs() -> pathlib.Path:
  """The folder of the configs installed with the package (configs/ of the source tree)."""
  return pathlib.Path(str(importlib.resources.files("imagen_jax.configs")))


def resolve_config_path(path: str) -> pathlib.Path:
  """`path` as given, or else a config installed with the package, named as `demo`, `demo.py`
  or `configs/demo.py` (so the configs work from any directory and from a wheel install)."""
  candidates = [pathlib.Path(path)]
  name = pathlib.PurePath(path)
  if name.parts[:1] == ("configs",):
    name = name.relative_to("configs")
  if len(name.parts) == 1:
    file = name.name if name.suffix == ".py" else f"{name.name}.py"
    candidates.append(_packaged_configs() / file)
  for candidate in candidates:
    if candidate.is_file():
      return candidate
  known = sorted(
    p.stem for p in _packaged_configs().glob("*.py") if "def get_config" in p.read_text()
  )
  raise MissingPath(
    f"Config file {path} not found: give the path of a config file, or the name of one that "
    f"comes with the package ({', '.join(known)}; e.g. --config demo:base)."
  )


def _parse_value(text: str, current):
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(f"expected true or false, got {text!r}")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if current is not None and not isinstance(value, type(current)):
    raise ConfigError(f"expected {type(current).__name__}, got {text!r}")
  return value


def _known(name: str, node: ml_collections.ConfigDict, sections: bool) -> str:
  """The end of an error about an unknown `name`: the closest of `node`'s keys (or sections),
  if one is close, and all of them."""
  keys = sorted(k for k, v in node.items() if isinstance(v, ml_collections.ConfigDict) == sections)
  close = difflib.get_close_matches(name, keys, n=1)
  hint = f"; did you mean {close[0]!r}?" if close else "."
  return f"{hint} Known {'sections' if sections else 'keys'} here: {keys}"


def _check_fields(config: ml_collections.ConfigDict, file) -> None:
  """Refuses a field that no stage has (a misspelt `c.train.stepz = 3` would otherwise be
  ignored) and a U-Net section without its type."""
  unet = config.get("unet") or {}
  if "type" not in unet:
    raise ConfigError(
      f"{file}: config.unet has no type; start it from configuration.unet_defaults('adm') (the "
      "base U-Net) or unet_defaults('efficient') (the SR U-Net) and change what differs."
    )
  reference = stage_defaults()
  reference.unet = unet_defaults(unet["type"])

  def compare(node, ref, where):
    for key, value in node.items():
      section = isinstance(value, ml_collections.ConfigDict)
      if key not in ref or section != isinstance(ref[key], ml_collections.ConfigDict):
        kind = "section" if section else "setting"
        raise ConfigError(f"{file} sets {where}.{key}, not a {kind}{_known(key, ref, section)}")
      if section:
        compare(value, ref[key], f"{where}.{key}")

  compare(config, reference, "config")


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> None:
  """Applies ["--config.train.steps=10", "--config.seed", "3", ...] in place.

  Args:
    config: the ConfigDict to change.
    overrides: `--config.a.b=value`, or `--config.a.b` followed by the value; a value is read
      as the type of the field it replaces (a Python literal, true/false for booleans, the text
      itself for strings).

  Raises:
    ConfigError: an item that is not an override, one without a value, an unknown section or
      key (the message names the closest known one), or a value of the wrong type.
  """
  items = list(overrides)
  i = 0
  while i < len(items):
    item = items[i]
    if not item.startswith("--config."):
      raise ConfigError(f"Unrecognised argument {item!r}; overrides look like --config.a.b=value.")
    key, eq, value = item[len("--config.") :].partition("=")
    if not eq:
      if i + 1 >= len(items):
        raise ConfigError(f"{item} needs a value.")
      value = items[i + 1]
      i += 1
    i += 1
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      if not isinstance(node.get(p), ml_collections.ConfigDict):
        raise ConfigError(f"Unknown config key {key!r}: no section {p!r}{_known(p, node, True)}.")
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"Unknown config key {key!r}{_known(leaf, node, False)}.")
    try:
      node[leaf] = _parse_value(value, node[leaf])
    except ValueError as e:
      raise ConfigError(f"Bad value for --config.{key}: {e}.") from None


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks a config, field by field, for values that cannot work.

  Args:
    config: a stage config.

  Raises:
    ConfigError (a ValueError): the first field that cannot work, and what to change.
  """
  if config.stage not in STAGES:
    raise ConfigError(f"config.stage must be one of {STAGES}, got {config.stage!r}.")
  if config.stage == "sr" and not config.low_res_size:
    raise ConfigError("A super-resolution stage needs config.low_res_size (e.g. 64).")
  if config.stage == "sr" and config.image_size % config.low_res_size:
    raise ConfigError(
      f"image_size {config.image_size} must be a multiple of low_res_size {config.low_res_size}."
    )
  t = config.train
  if t.batch_size < 1 or t.steps < 1:
    raise ConfigError("train.batch_size and train.steps must be positive.")
  if t.grad_accum < 1 or t.batch_size % t.grad_accum:
    raise ConfigError(
      f"train.batch_size {t.batch_size} must be divisible by train.grad_accum {t.grad_accum}."
    )
  for name in ("checkpoint_every", "log_every", "keep_checkpoints", "max_bad_steps"):
    if not isinstance(t[name], int) or t[name] < 1:
      raise ConfigError(f"train.{name} must be a positive whole number, got {t[name]!r}.")
  if t.sample_every < 0:
    raise ConfigError(f"train.sample_every must be 0 (no grids) or positive, got {t.sample_every}.")
  if t.eval_every < 0 or t.eval_batches < 1:
    raise ConfigError(
      "train.eval_every must be 0 (no held-out loss) or positive, eval_batches > 0."
    )
  if t.eval_every and not config.data.eval_split:
    raise ConfigError(
      "train.eval_every needs data.eval_split: a held-out split, e.g. 'test', or a slice such "
      "as 'train[98%:]' (with data.split='train[:98%]')."
    )
  if t.eval_every and config.text.store:
    raise ConfigError("train.eval_every does not work with text.store (it indexes data.split).")
  if not (math.isfinite(t.learning_rate) and t.learning_rate > 0):
    raise ConfigError(f"train.learning_rate must be a positive number, got {t.learning_rate}.")
  if t.warmup_steps < 0 or t.decay_steps < 0:
    raise ConfigError("train.warmup_steps and train.decay_steps must be 0 or positive.")
  if t.optimizer not in ("adam", "adafactor"):
    raise ConfigError(f"train.optimizer must be 'adam' or 'adafactor', got {t.optimizer!r}.")
  if t.compute_dtype not in ("auto", "float32", "bfloat16"):
    raise ConfigError("train.compute_dtype must be 'auto', 'float32' or 'bfloat16'.")
  _check_sample(config.sample)
  if config.stage == "base" and config.sample.sr_strength != 1.0:
    raise ConfigError("sample.sr_strength is for SR stages; a base stage starts from noise.")
  if not 0.0 <= config.diffusion.cond_drop_prob < 1.0:
    raise ConfigError("diffusion.cond_drop_prob must be in [0, 1).")
  if not config.diffusion.min_snr_gamma >= 0.0:
    raise ConfigError(
      "diffusion.min_snr_gamma must be >= 0 (0 turns min-SNR weighting off; 5 is usual), got "
      f"{config.diffusion.min_snr_gamma}."
    )
  _check_choices(config)
  if not abs(config.diffusion.logsnr_shift) <= 10.0:
    raise ConfigError(
      "diffusion.logsnr_shift must be a number in [-10, 10] (2 log(64 / image_size) carries the "
      f"cosine schedule to image_size), got {config.diffusion.logsnr_shift}."
    )


def _check_sample(sample) -> None:
  """The sampling options of the config's `sample` section, by the rules every sampling call
  applies (stages.SampleOptions)."""
  from imagen_jax.diffusion.editing import check_strength
  from imagen_jax.stages import SampleOptions

  try:
    check_strength(sample.sr_strength, name="sr_strength")
    SampleOptions.from_config(sample)
  except InputError as e:
    raise ConfigError(f"config.sample: {e}") from None


def _check_choices(config) -> None:
  """Names that would otherwise fail only deep in a run (a sampler at the first sample grid)."""
  from imagen_jax.diffusion import OBJECTIVES
  from imagen_jax.diffusion.schedules import SCHEDULES

  choices = {
    "diffusion.schedule": (config.diffusion.schedule, sorted(SCHEDULES)),
    "diffusion.objective": (config.diffusion.objective, OBJECTIVES),
    "data.crop": (config.data.crop, ("center", "random")),
  }
  if "remat" in config.unet:  # a config's own U-Net section (stage_defaults() has none)
    from imagen_jax.models.layers import ATTENTION_IMPLS, REMAT_POLICIES

    choices["unet.remat"] = (config.unet.remat, tuple(REMAT_POLICIES))
    choices["unet.attn_impl"] = (config.unet.get("attn_impl", "auto"), ATTENTION_IMPLS)
  for key, (value, allowed) in choices.items():
    if value not in allowed:
      raise ConfigError(f"{key} must be one of {tuple(allowed)}, got {value!r}.")
