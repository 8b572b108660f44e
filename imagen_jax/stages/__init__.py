"""The stages of a cascade: the interface every kind of stage implements (`Stage`), how one
samples (`SampleOptions`), this package's own kind (`ImagenStage`), and the compiled sampler.

    from imagen_jax.stages import ImagenStage, SampleOptions
    stage = ImagenStage.from_config(config)
    images = jax.jit(stage.sample)(params, key, text, mask, options=SampleOptions(steps=64))
"""

from imagen_jax.stages.imagen_stage import ImagenStage, compute_dtype
from imagen_jax.stages.options import SampleOptions
from imagen_jax.stages.protocol import Stage

__all__ = ["ImagenStage", "SampleOptions", "Stage", "compute_dtype"]
