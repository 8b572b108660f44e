"""`imagen-jax export`: a trained cascade's EMA parameters and configs, ready to share."""

from __future__ import annotations


def add_arguments(parser):
  parser.add_argument(
    "--stages",
    nargs="+",
    required=True,
    metavar="STAGE",
    help="training workdirs or checkpoint directories, base first",
  )
  parser.add_argument("--out", required=True, help="a new folder to write")


def _size(path) -> int:
  import pathlib

  path = pathlib.Path(path)
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def run(args) -> int:
  from imagen_jax import logs
  from imagen_jax.pipeline import load_stage
  from imagen_jax.pipeline.export import save_stages
  from imagen_jax.pipeline.loading import stage_paths

  logs.setup()
  paths = stage_paths(args.stages)
  stages = [load_stage(path) for path in paths]
  folder = save_stages(stages, args.out)
  size, source = _size(folder), sum(_size(s) for s in paths)
  print(
    f"wrote {folder}: {len(stages)} stage(s), {size / 2**20:.1f} MiB "
    f"(the workdirs hold {source / 2**20:.1f} MiB); load it with "
    f"Imagen.from_pretrained({str(folder)!r}) or imagen-jax sample --stages {folder}"
  )
  return 0
