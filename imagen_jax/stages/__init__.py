"""The stages of a cascade: the interface every kind of stage implements (`Stage`), how one
samples (`SampleOptions`), this package's own kind (`ImagenStage`), and the compiled sampler.

    from imagen_jax.stages import ImagenStage, SampleOptions, StageInputs
    stage = ImagenStage.from_config(config)
    options = SampleOptions(steps=64, guidance=5.0)
    images = jax.jit(stage.sample)(params, key, StageInputs(text, mask), options=options)
"""

from imagen_jax.stages.imagen_stage import ImagenStage, compute_dtype
from imagen_jax.stages.inputs import StageInputs
from imagen_jax.stages.options import SampleOptions
from imagen_jax.stages.protocol import Stage

__all__ = ["ImagenStage", "SampleOptions", "Stage", "StageInputs", "compute_dtype"]
