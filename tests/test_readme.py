"""The README's commands, as a newcomer types them: the two setup commands, every `imagen-jax`
command of the shell blocks of the README and the docs pages (each parses and its config loads),
and the training section run verbatim from a fresh directory with relative paths (plus
tiny-size overrides)."""

import os
import pathlib
import re
import shlex
import subprocess

import pytest
from helpers import STEPS, read_metrics, run_cli, tiny_overrides

from imagen_jax import cli
from imagen_jax.configuration import load_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
SETUP = "pip install -e . && imagen-jax demo"
TESTS = "pip install -e '.[test]' && pytest"


def shell_blocks(text: str = README) -> list[list[str]]:
  """The ```bash blocks of `text` (the README's by default), each a list of commands
  (continuation lines joined, comments dropped, `a && b` split)."""
  blocks = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    text = block.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
      line = line.split("  #")[0].strip()
      commands += [c.strip() for c in line.split("&&") if c.strip()]
    blocks.append(commands)
  return blocks


def imagen_commands() -> list[str]:
  """Every `imagen-jax` command of the README's and the docs pages' shell blocks."""
  texts = [README, *DOCS.values()]
  commands = [c for t in texts for block in shell_blocks(t) for c in block]
  return list(dict.fromkeys(c for c in commands if c.startswith("imagen-jax ")))


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_second():
  first = shell_blocks()[0]
  assert first == [*SETUP.split(" && "), *TESTS.split(" && ")]
  ci = (ROOT / ".ci" / "run").read_text()
  assert TESTS in ci
  # A fresh environment every run: a fixed, reused venv path could hide a missing install step.
  assert "mktemp -d" in ci and 'python3 -m venv "$venv"' in ci


@pytest.mark.parametrize("command", imagen_commands())
def test_every_readme_command_parses_and_its_config_loads(command):
  argv = shlex.split(command)[1:]
  args, extra = cli.build_parser().parse_known_args(argv)
  assert args.verb in cli.VERBS
  if getattr(args, "config", None):
    load_config(args.config, extra)
  else:
    assert not extra, f"unrecognised arguments {extra}"


@pytest.mark.parametrize(
  "command",
  dict.fromkeys(
    c
    for text in (README, *DOCS.values())
    for block in shell_blocks(text)
    for c in block
    if c.startswith("launch/tpu.sh ")
  ),
)
def test_every_readme_tpu_command_runs_as_a_dry_run(command):
  """The pod sequence from `tpu.sh create` on: each command, with --dry-run, prints its gcloud
  commands (the TPU's project, zone, name and type from the environment, as the README sets)."""
  argv = shlex.split(command)
  argv.insert(2, "--dry-run")
  env = {"TPU_PROJECT": "p", "TPU_ZONE": "z", "TPU_NAME": "n", "TPU_TYPE": "v4-256"}
  proc = subprocess.run(
    ["bash", str(ROOT / argv[0]), *argv[1:]],
    capture_output=True,
    text=True,
    env={**os.environ, **env},
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  assert "gcloud compute tpus" in proc.stdout


def training_section() -> list[str]:
  """The commands of the README's 'Training a stage' section."""
  section = README.split("## Training a stage", 1)[1]
  block = re.search(r"```bash\n(.*?)```", section, flags=re.S)[1]
  return [shlex.split(c) for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_readme_training_resumes_and_samples_with_relative_paths(tmp_path):
  commands = training_section()
  trains = [c for c in commands if c[:2] == ["imagen-jax", "train"]]
  (sample,) = [c for c in commands if c[:2] == ["imagen-jax", "sample"]]
  assert [c[c.index("--workdir") + 1] for c in trains] == ["runs/base", "runs/sr1", "runs/sr2"]
  assert sample[sample.index("--stages") + 1 : sample.index("--prompt")] == [
    "runs/base",
    "runs/sr1",
    "runs/sr2",
  ]
  for command in trains:
    stage = command[command.index("--config") + 1].split(":")[1]
    tiny = [o for o in tiny_overrides(stage, tmp_path) if "data_dir" not in o]
    run_cli(
      *command[1:],
      *tiny,
      "--config.data.data_dir=tfds",  # relative too
      STEPS,  # the schedule of the other tiny runs: their compiled programs are reused
      "--config.train.checkpoint_every=3",
      "--max-steps=3",
      cwd=tmp_path,
      script=True,
    )
  base = tmp_path / "runs" / "base"
  assert [r["step"] for r in read_metrics(base)] == [1, 2, 3]
  # The same command again resumes the base stage and trains on.
  tiny = [o for o in tiny_overrides("base", tmp_path) if "data_dir" not in o]
  proc = run_cli(
    *trains[0][1:],
    *tiny,
    "--config.data.data_dir=tfds",
    STEPS,
    "--config.train.checkpoint_every=3",
    "--max-steps=3",
    cwd=tmp_path,
    script=True,
  )
  assert "resumed from the checkpoint at step 3" in proc.stderr
  assert f"to step 6 in {base}" in proc.stdout
  assert [r["step"] for r in read_metrics(base)] == [1, 2, 3, 4, 5, 6]
  assert (tmp_path / "tfds" / "imagen_shapes").is_dir()
  run_cli(*sample[1:], "--steps", "2", cwd=tmp_path, script=True)
  assert (tmp_path / "samples" / "grid.png").exists()
  assert (tmp_path / "samples" / "image_000.png").exists()


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{name}" for name in DOCS)])
def test_every_relative_link_of_the_guide_and_the_docs_points_to_a_file(page):
  text = (ROOT / page).read_text()
  links = re.findall(r"\]\(([^)\s]+)\)", text)
  local = [link.split("#")[0] for link in links if "://" not in link and link.split("#")[0]]
  missing = [link for link in local if not (ROOT / page).parent.joinpath(link).exists()]
  assert not missing, missing
