"""The package layout the README draws: each package imports only the ones below it (so there
are no cycles), the diffusion math imports nothing else of the project but its error classes,
and no module reaches into another's private names."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "imagen_jax"
# Bottom to top, as in the README's "How it fits together".
LAYERS = (
  "paths",
  "errors",
  "logs",
  "hub",
  "images",
  "hardware",
  "parallel",
  "diffusion",
  "models",
  "stages",
  "data",
  "text",
  "configuration",
  "train",
  "pretrained",
  "pipeline",
  "perf",
  "demo_job",
  "cli",
)


def _unit(module: str) -> str:
  """imagen_jax.train.loop -> train; imagen_jax.paths -> paths."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def _imports():
  """(importing unit, file, imported module, names) for every import of the package's own
  modules, at module level or inside functions."""
  for file in sorted(ROOT.rglob("*.py")):
    module = ".".join(file.relative_to(ROOT.parent).with_suffix("").parts)
    for node in ast.walk(ast.parse(file.read_text())):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("imagen_jax"):
        names = [a.name for a in node.names]
        top = node.module == "imagen_jax"
        targets = [f"imagen_jax.{n}" for n in names] if top else [node.module]
        for target in targets:
          yield _unit(module), file.relative_to(ROOT.parent), target, names
      elif isinstance(node, ast.Import):
        for alias in node.names:
          if alias.name.startswith("imagen_jax."):
            yield _unit(module), file.relative_to(ROOT.parent), alias.name, []


def test_every_module_is_in_a_layer():
  units = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.name != "__pycache__"}
  units -= {"__init__", "assets"}
  assert units == set(LAYERS)


@pytest.mark.parametrize("unit", LAYERS)
def test_a_package_imports_only_the_layers_below_it(unit):
  below = set(LAYERS[: LAYERS.index(unit)])
  wrong = [
    f"{file} imports {target}"
    for importer, file, target, _ in _imports()
    if importer == unit and _unit(target) not in below | {unit, "__version__"}
  ]
  assert not wrong, wrong


def test_the_diffusion_math_imports_nothing_else_of_the_project():
  wrong = [
    f"{file} imports {target}"
    for importer, file, target, _ in _imports()
    if importer == "diffusion"
    and not target.startswith(("imagen_jax.diffusion", "imagen_jax.errors"))
  ]
  assert not wrong, wrong


def test_no_module_imports_a_private_name_of_another():
  wrong = [
    f"{file} imports {name} from {target}"
    for _, file, target, names in _imports()
    for name in names
    if name.startswith("_") and not name.startswith("__")
  ]
  assert not wrong, wrong
