"""`imagen-jax prepare-data`: build a config's dataset once into its data.data_dir (a local folder
or gs://), before a pod run, so that every host only reads its own shard."""

from __future__ import annotations

from imagen_jax.cli import config_argument, load_run_config

ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser):
  config_argument(parser)
  parser.epilog = (
    "Set where with --config.data.data_dir=gs://BUCKET/tfds; a folder of images may be on gs:// "
    "too (--config.data.name=image_text_folder --config.data.path=gs://BUCKET/images)."
  )


def run(args) -> int:
  from imagen_jax.data import input_pipeline

  config = load_run_config(args)
  builder = input_pipeline.prepare_dataset(config)
  examples = builder.info.splits[config.data.split].num_examples
  print(f"{config.data.name}: {examples} examples in {builder.data_dir}")
  return 0
