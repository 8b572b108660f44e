"""Sampling a cascade of stages: `Imagen` (load, sample, export), the stages it loads
(`LoadedStage`, `load_stage`) and what a call returns.

from imagen_jax import Imagen
imagen = Imagen.load(["runs/base", "runs/sr1", "runs/sr2"])
images = imagen.sample(["a red circle at the top left"], seed=0)  # uint8 NHWC per stage
"""

from imagen_jax.pipeline.cascade import Imagen
from imagen_jax.pipeline.loading import LoadedStage, load_stage
from imagen_jax.pipeline.outputs import ImagenOutput, StageOutput, StageTiming

__all__ = ["Imagen", "ImagenOutput", "LoadedStage", "StageOutput", "StageTiming", "load_stage"]
