"""Sampling trained stages: a loaded stage with its compiled sampler (models.StageSampler), and
the cascade (`Imagen`).

from imagen_jax import Imagen
imagen = Imagen.load(["runs/base", "runs/sr1", "runs/sr2"])
images = imagen.sample(["a red circle at the top left"], seed=0)  # uint8 NHWC per stage
"""

from imagen_jax.pipeline.cascade import Imagen, ImagenOutput, StageOutput, StageTiming
from imagen_jax.pipeline.loading import LoadedStage, load_stage

__all__ = ["Imagen", "ImagenOutput", "LoadedStage", "StageOutput", "StageTiming", "load_stage"]
