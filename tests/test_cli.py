"""The command line: every verb has --help, bad configs are clear errors, inspect's report."""

import json
import os
import re
import sys

import pytest
from helpers import run_cli

from imagen_jax import cli, logs
from imagen_jax.cli import sample as sample_cli
from imagen_jax.configuration import load_config
from imagen_jax.errors import ConfigError, InputError, MissingPath
from imagen_jax.perf.inspection import inspect_config, saved_activation_bytes

VERBS = sorted(cli.VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main([verb, "--help"])
  assert exit_info.value.code == 0
  assert "usage: imagen-jax" in capsys.readouterr().out


def test_the_design_verbs_exist():
  assert {"demo", "train", "sample", "encode-text", "inspect", "bench", "preflight"} <= set(VERBS)


def test_every_option_with_a_default_shows_it_and_one_name_serves_each_concept():
  parser = cli.build_parser()
  verbs = next(a for a in parser._actions if a.dest == "verb").choices
  names = set()
  for verb, sub in verbs.items():
    formatter = sub._get_formatter()
    for action in sub._actions:
      names.update(action.option_strings)
      shown = action.option_strings and action.dest != "help"
      if shown and action.default not in (None, False, "==SUPPRESS=="):
        help_text = formatter._expand_help(action)  # as --help prints it
        assert str(action.default) in help_text, (verb, action.option_strings, help_text)
  assert "--batch" not in names and "--batch-size" in names  # not two names for one thing


def test_debug_after_the_verb_shows_the_traceback_and_transformers_stays_quiet(tmp_path):
  args = ("sample", "--stages", str(tmp_path / "nope"), "--prompt", "x", "--out", str(tmp_path))
  quiet = run_cli(*args, check=False)
  assert "Traceback" not in quiet.stderr and "--debug" in quiet.stderr
  assert "PyTorch" not in quiet.stderr + quiet.stdout
  loud = run_cli(*args, "--debug", check=False)
  assert "Traceback" in loud.stderr and "does not exist" in loud.stderr


def test_unknown_config_key_is_a_clear_error_without_a_traceback(tmp_path):
  proc = run_cli(
    "train",
    "--config",
    "configs/demo.py:base",
    "--workdir",
    str(tmp_path),
    "--config.train.stepz=3",
    check=False,
  )
  assert proc.returncode == 2
  assert re.search(r"'train\.stepz'.*'steps'", proc.stderr)  # the key and the one meant
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
  "override, message",
  [
    ("--config.trian.steps=3", r"'trian'.*'train'"),
    ("--config.model.channels=64", r"'model'.*\['data', "),
    ("--config.seed.x=1", r"'seed'.*\['data', "),
    ("--config.unet.foo=1", r"'unet\.foo'.*\['act', "),
  ],
)
def test_an_unknown_config_key_names_what_is_there(override, message):
  with pytest.raises(ConfigError, match=message):
    load_config("configs/demo.py:base", [override])


@pytest.mark.parametrize(
  "body, message",
  [
    ("c.train.stepz = 3", r"config\.train\.stepz.*'steps'"),
    ("c.unet.chanels = 8", r"config\.unet\.chanels.*'channels'"),
    ("c.tekst = c.text", r"config\.tekst.*'text'"),
    ("c.unet = stage_defaults().unet", r"config\.unet.*type.*unet_defaults"),
  ],
)
def test_a_config_file_that_sets_an_unknown_field_is_refused(tmp_path, body, message):
  # A misspelt field in a user's config file would otherwise be ignored without a word.
  file = tmp_path / "mine.py"
  file.write_text(
    "from imagen_jax.configuration import load_config, stage_defaults\n\n"
    f"def get_config():\n  c = load_config('demo:base')\n  {body}\n  return c\n"
  )
  with pytest.raises(ConfigError, match=message):
    load_config(str(file))


def test_config_overrides_are_typed():
  config = load_config(
    "configs/demo.py:sr1",
    [
      "--config.train.steps=7",
      "--config.train.learning_rate",
      "3e-4",
      "--config.unet.channels=(8, 16, 32)",
      "--config.data.flip=true",
    ],
  )
  assert config.train.steps == 7 and config.train.learning_rate == 3e-4
  assert tuple(config.unet.channels) == (8, 16, 32) and config.data.flip is True
  with pytest.raises(ConfigError, match=r"train\.steps.*int"):
    load_config("configs/demo.py:sr1", ["--config.train.steps=many"])
  with pytest.raises(MissingPath, match=r"nope\.py.*not found"):
    load_config("configs/nope.py")


def test_inspect_reports_params_flops_and_memory():
  proc = run_cli(
    "inspect",
    "--config",
    "configs/demo.py:base",
    "--devices",
    "4",
    "--config.mesh.data=2",
    "--config.mesh.fsdp=2",
    "--activations",
  )
  report = json.loads(proc.stdout)
  assert report["params"] == sum(report["params_by_part"].values()) > 1_000_000
  flops = report["flops_per_image"]
  assert flops["unet_forward"] > 0 and 2.0 < flops["train_step"] / flops["unet_forward"] < 5.0
  memory = report["memory_per_device"]
  assert memory["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
  assert memory["batch_per_device"] == 8
  # Remat trades recomputation for memory: each policy keeps less for the backward pass.
  saved = memory["saved_activations_bytes"]
  assert saved["none"] > saved["dots"] > saved["full"] > 0


def test_saved_activations_grow_with_the_batch_and_do_not_count_the_parameters():
  config = load_config("configs/demo.py:sr1")
  one, two, four = (saved_activation_bytes(config, "none", b) for b in (1, 2, 4))
  assert four - two == 2 * (two - one) > 0  # per image, the same bytes again
  # The bf16 copies of the weights (not per image) are small next to one image's activations.
  assert 2 * one - two < two - one


def test_inspect_memory_splits_the_paper_model_over_fsdp():
  config = load_config("configs/sr1024.py")
  report = inspect_config(config, devices=128)
  per_device = report["memory_per_device"]["params_bytes"]
  # Nearly every parameter is split 128 ways: the replicated norm scales and biases (0.05% of
  # the parameters) cost each device about 6% over a perfect split.
  perfect = report["params"] * 4 / 128
  assert perfect < per_device < 1.1 * perfect


def test_inspect_refuses_a_device_count_the_batch_does_not_split_over():
  # train refuses it before the first step; a plan for it must not show 682.67 images per device.
  with pytest.raises(ConfigError, match=r"train\.batch_size.*divide.*\b3\b"):
    inspect_config(load_config("configs/sr1024.py"), devices=3)


@pytest.mark.parametrize("cpus, devices", [(1, 1), (2, 2), (3, 2), (6, 4), (16, 8), (96, 8)])
def test_a_cpu_host_is_split_into_a_power_of_two_devices(cpus, devices):
  assert cli.host_cpu_devices(cpus) == devices


def test_split_host_cpu_keeps_a_device_count_the_user_set(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
  cli.split_host_cpu()
  assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  cli.split_host_cpu()
  count = cli.host_cpu_devices()
  assert os.environ["XLA_FLAGS"] == (
    f"--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count={count}"
  )


def test_a_quick_demo_on_a_cpu_compiles_fast_unless_the_user_set_an_optimisation_level(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  cli.compile_fast()
  assert os.environ["XLA_FLAGS"] == (
    f"--xla_force_host_platform_device_count=2 {cli.FAST_COMPILE_FLAGS}"
  )
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=2")
  cli.compile_fast()
  assert os.environ["XLA_FLAGS"] == "--xla_backend_optimization_level=2"
  # Accelerators compile as usual.
  monkeypatch.setenv("JAX_PLATFORMS", "tpu,cpu")
  monkeypatch.setenv("XLA_FLAGS", "")
  cli.compile_fast()
  assert os.environ["XLA_FLAGS"] == ""


@pytest.mark.parametrize(
  "argv, split",
  [
    (["train", "--config", "configs/demo.py:base", "--workdir", "w"], True),
    (["demo"], True),
    (["preflight", "--config", "configs/demo.py:base"], True),
    (["bench", "--config", "configs/demo.py:base", "--what", "train"], True),
    (["bench", "--config", "configs/demo.py", "--what", "sample"], False),
    (["sample", "--stages", "a", "--prompt", "p", "--out", "o.png"], False),
  ],
)
def test_only_training_verbs_split_a_cpu_into_devices(argv, split):
  args, _ = cli.build_parser().parse_known_args(argv)
  assert cli.trains(args) == split


@pytest.mark.parametrize(
  "source, line, error",
  [
    ("def get_config(:\n  pass\n", 1, "SyntaxError"),
    ("import ml_collections\n\ndef get_config():\n  return undefined_name\n", 4, "NameError"),
    ("import no_such_module_here\n", 1, "ModuleNotFoundError"),
  ],
)
def test_a_broken_config_file_is_named_with_its_line(tmp_path, source, line, error):
  path = tmp_path / "mine.py"
  path.write_text(source)
  with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:{line}: {error}\b"):
    load_config(str(path))


def test_a_broken_config_file_is_one_line_on_the_command_line(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text("def get_config():\n  return stage_defaults()\n")
  proc = run_cli("train", "--config", str(path), "--workdir", str(tmp_path / "w"), check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert f"{path}:2: NameError" in proc.stderr and "stage_defaults" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 2  # the error and the --debug hint


def test_get_config_must_return_a_config_dict(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text("def get_config():\n  return {'stage': 'base'}\n")
  with pytest.raises(ConfigError, match=r"returned dict.*ConfigDict"):
    load_config(str(path))


def test_a_config_file_imports_the_files_beside_it_and_only_those(tmp_path):
  """configs/sr1024.py starts from sr256.py; a user's folder of configs may do the same, and two
  folders with a helper of the same name each get their own."""
  for name, steps in (("a", 11), ("b", 22)):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "common.py").write_text(f"STEPS = {steps}\n")
    (folder / "stage.py").write_text(
      "import common\n"
      "from imagen_jax.configuration import stage_defaults, unet_defaults\n\n"
      "def get_config():\n"
      "  config = stage_defaults()\n"
      "  config.unet = unet_defaults('adm')\n"
      "  config.train.steps = common.STEPS\n"
      "  return config\n"
    )
  assert load_config(str(tmp_path / "a" / "stage.py")).train.steps == 11
  assert load_config(str(tmp_path / "b" / "stage.py")).train.steps == 22
  assert "common" not in sys.modules


@pytest.mark.parametrize(
  "override, message",
  [
    ("--config.train.checkpoint_every=0", "train.checkpoint_every"),
    ("--config.train.log_every=0", "train.log_every"),
    ("--config.train.learning_rate=-1e-4", "train.learning_rate"),
    ("--config.train.learning_rate=1e999", "train.learning_rate"),
    ("--config.sample.sampler=ddpn", "sampler.*ddpn"),
    ("--config.sample.guidance=-1", "guidance"),
    ("--config.sample.steps=0", "steps"),
    ("--config.diffusion.schedule=cosin", "diffusion.schedule.*cosin"),
    ("--config.sample.sr_strength=0.5", "sr_strength.*SR stages"),
    ("--config.diffusion.min_snr_gamma=-1", "min_snr_gamma"),
    ("--config.unet.attn_impl=flash", "unet.attn_impl.*flash"),
    ("--config.unet.remat=some", "unet.remat.*some"),
  ],
)
def test_settings_that_cannot_work_are_refused_when_the_config_loads(override, message):
  with pytest.raises(ConfigError, match=message):
    load_config("configs/demo.py:base", [override])


def test_an_sr_strength_out_of_range_is_refused_by_name():
  with pytest.raises(ConfigError, match="sr_strength"):
    load_config("configs/demo.py:sr2", ["--config.sample.sr_strength=0"])


def test_relative_paths_in_a_config_are_taken_from_the_current_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = load_config(
    "configs/demo.py:base",
    ["--config.data.path=pics", "--config.data.data_dir=~/tfds", "--config.text.store=emb"],
  )
  assert config.data.path == str(tmp_path / "pics")
  assert config.data.data_dir == os.path.expanduser("~/tfds")
  assert config.text.store == str(tmp_path / "emb")
  config = load_config("configs/demo.py:base", ["--config.data.data_dir=gs://bucket/tfds"])
  assert config.data.data_dir == "gs://bucket/tfds"


def test_a_workdir_that_is_a_file_or_cannot_be_written_is_one_line(tmp_path):
  from imagen_jax.train.workdir import prepare

  (tmp_path / "file").write_text("")
  with pytest.raises(InputError, match=r"is a file.*--workdir"):
    prepare(tmp_path / "file")
  with pytest.raises(InputError, match="create"):
    prepare(tmp_path / "file" / "run")
  proc = run_cli(
    "train", "--config", "configs/demo.py:base", "--workdir", str(tmp_path / "file"), check=False
  )
  assert proc.returncode == 2 and "Traceback" not in proc.stderr and "is a file" in proc.stderr
  if os.geteuid() != 0:  # permissions do not stop root
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(InputError, match="not writable"):
      prepare(tmp_path / "ro")


def test_preflight_checks_devices_workdir_data_and_text_encoder(tmp_path):
  workdir = tmp_path / "runs" / "base"
  proc = run_cli(
    "preflight",
    "--config",
    "demo:base",
    "--workdir",
    str(workdir),
    f"--config.data.data_dir={tmp_path / 'tfds'}",
  )
  lines = proc.stdout.splitlines()
  assert [line.split(":")[0] for line in lines[:4]] == ["devices", "workdir", "data", "text"]
  assert all(": ok: " in line for line in lines[:4]) and "preflight ok" in lines[-1]
  assert "first run" in lines[2]
  assert workdir.is_dir() and not list(workdir.iterdir())  # the probe file is gone


def test_preflight_names_each_failure_in_one_line(tmp_path):
  blocked = tmp_path / "file"
  blocked.write_text("")
  proc = run_cli(
    "preflight",
    "--config",
    "demo:base",
    "--workdir",
    str(blocked / "run"),
    "--config.data.name=image_text_folder",
    f"--config.data.path={tmp_path / 'no_images'}",
    f"--config.text.encoder={tmp_path}",
    "--config.mesh.data=3",  # more devices than the host has
    check=False,
  )
  assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
  failed = [line.split(":")[0] for line in proc.stdout.splitlines() if ": FAILED: " in line]
  assert failed == ["devices", "workdir", "data", "text"]
  assert "preflight failed: devices, workdir, data, text" in proc.stdout


@pytest.mark.parametrize(
  "argv",
  [
    ["sample", "--stages", "a", "--prompt", "p", "--out", "o", "--num-images", "0"],
    ["sample", "--stages", "a", "--prompt", "p", "--out", "o", "--steps", "32", "-4"],
    ["bench", "--config", "c", "--batch-size", "0"],
    ["train", "--config", "c", "--workdir", "w", "--max-steps", "-1"],
  ],
)
def test_counts_below_one_are_refused_by_the_parser(argv, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.build_parser().parse_args(argv)
  assert exit_info.value.code == 2
  assert "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
  "option, extra", [("--init-image", ["--strength", "0.5"]), ("--start-image", [])]
)
def test_a_missing_or_unreadable_picture_names_its_option(tmp_path, option, extra, monkeypatch):
  monkeypatch.setattr(logs, "setup", lambda: None)  # the test process keeps its logging
  (tmp_path / "notes.png").write_text("not a picture")
  for name, problem in (("nope.png", "no such file"), ("notes.png", "not a picture")):
    argv = ["sample", "--stages", "a", "--prompt", "p", "--out", str(tmp_path / "o")]
    args = cli.build_parser().parse_args([*argv, option, str(tmp_path / name), *extra])
    with pytest.raises(InputError, match=rf"{option} .*{re.escape(name)}.*{problem}"):
      sample_cli.run(args)
  assert not (tmp_path / "o").exists()


def test_an_earlier_runs_pictures_are_not_overwritten_unless_asked(tmp_path, monkeypatch):
  monkeypatch.setattr(logs, "setup", lambda: None)
  (tmp_path / "samples.json").write_text("[]")
  args = cli.build_parser().parse_args(
    ["sample", "--stages", str(tmp_path / "nope"), "--prompt", "p", "--out", str(tmp_path)]
  )
  with pytest.raises(InputError, match=r"earlier run.*--overwrite"):
    sample_cli.run(args)  # at once, before any stage is loaded
  args.overwrite = True
  with pytest.raises(MissingPath, match="does not exist"):
    sample_cli.run(args)
  assert (tmp_path / "samples.json").exists()  # nothing removed before the new pictures exist


def test_a_missing_optional_package_is_one_line_naming_the_extra(monkeypatch, capsys):
  def run(args):  # what etils/fsspec raise for a gs:// workdir without gcsfs
    raise ImportError("Please install gcsfs to access Google Storage")

  monkeypatch.setattr(sample_cli, "run", run)
  assert cli.main(["sample", "--stages", "gs://b/run", "--prompt", "p", "--out", "o"]) == 2
  err = capsys.readouterr().err
  first = err.splitlines()[0]  # the error, and the extra that installs what it lacks
  assert "gcsfs" in first and "pip install 'imagen-jax[gcs]'" in first
  assert "Traceback" not in err


@pytest.mark.parametrize(
  "error, status, says",
  [
    (ConfigError("train.steps must be a positive whole number, got 0."), 2, "error: train.steps"),
    (FileNotFoundError(2, "No such file or directory", "/data/x"), 2, "error: FileNotFoundError"),
    (ImportError("Please install gcsfs to access Google Storage"), 2, "imagen-jax[gcs]"),
    (ZeroDivisionError("division by zero"), 1, "internal error: ZeroDivisionError"),
    (ImportError("cannot import name 'x'", name="imagen_jax.models"), 1, "internal error"),
  ],
)
def test_user_mistakes_are_one_line_and_anything_else_reads_as_a_bug(
  monkeypatch, capsys, error, status, says
):
  import imagen_jax.cli.export as verb

  def run(args):
    raise error

  monkeypatch.setattr(verb, "run", run)
  assert cli.main(["export", "--stages", "a", "--out", "b"]) == status
  err = capsys.readouterr().err
  assert says in err and "Traceback" not in err
  assert ("report" in err) == (status == 1)
  monkeypatch.setattr(verb, "run", run)
  with pytest.raises(type(error)):
    cli.main(["export", "--stages", "a", "--out", "b", "--debug"])
