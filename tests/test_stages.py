"""The stage interface: any kind of stage implements stages.Stage, SampleOptions is checked where
it is made, and the compiled sampler compiles once per static options (guidance and the
augmentation level are traced) with each call's step callback its own."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax import diffusion
from imagen_jax.errors import InputError
from imagen_jax.stages import SampleOptions, Stage, StageInputs, compiled


@dataclasses.dataclass(frozen=True, eq=False)
class ToyStage:
  """A stage of another kind, as fine-tuning or distillation add: x0 = w * text mean."""

  output_size: int = 4
  factor: int = 1
  text_len: int = 2
  text_dim: int = 3
  traces: list = dataclasses.field(default_factory=list)

  @property
  def super_res(self) -> bool:
    return False

  def check_options(self, options: SampleOptions) -> None:
    if options.sampler == "dpm++2m":
      raise InputError("the toy stage has no dpm++2m")

  def sample(self, params, key, inputs: StageInputs, *, options: SampleOptions, progress=None):
    self.traces.append((options.steps, options.guided))
    target = params["w"] * inputs.text.mean(axis=(1, 2))[:, None, None, None] * options.guidance
    size = options.size or self.output_size
    schedule = diffusion.get_schedule("cosine")
    return diffusion.sample(
      lambda z, t: jnp.broadcast_to(target, z.shape), (inputs.batch, size, size, 3), key,
      schedule=schedule, steps=options.steps, sampler=options.sampler, objective="x",
      threshold="none", progress=progress,
    )  # fmt: skip


def test_a_stage_of_another_kind_implements_the_protocol_and_compiles_once_per_static_options():
  stage = ToyStage()
  assert isinstance(stage, Stage)
  params = {"w": jnp.float32(0.5)}
  inputs = StageInputs(jnp.ones((2, 2, 3)), jnp.ones((2, 2), bool))
  key = jax.random.key(0)
  a = compiled.sample(stage, params, key, inputs, options=SampleOptions(steps=3, guidance=2.0))
  b = compiled.sample(stage, params, key, inputs, options=SampleOptions(steps=3, guidance=3.0))
  assert stage.traces == [(3, True)]  # a new guidance scale is an argument, not a recompile
  np.testing.assert_allclose(np.asarray(b), np.asarray(a) * 1.5, rtol=1e-5)  # x0 is reached
  compiled.sample(stage, params, key, inputs, options=SampleOptions(steps=4, guidance=3.0))
  compiled.sample(stage, params, key, inputs, options=SampleOptions(steps=4))
  assert stage.traces == [(3, True), (4, True), (4, False)]
  heard = []
  compiled.sample(
    stage, params, jax.random.PRNGKey(0), inputs, options=SampleOptions(steps=4),
    on_step=heard.append,
  )  # fmt: skip
  assert heard == [0, 1, 2, 3]


@pytest.mark.parametrize(
  "options, field",
  [
    (dict(steps=0), "steps"),
    (dict(steps=2.0), "steps"),
    (dict(steps=4, sampler="euler"), "sampler"),
    (dict(steps=4, guidance=-1.0), "guidance"),
    (dict(steps=4, guidance="5"), "guidance"),
    (dict(steps=4, threshold="soft"), "thresholding"),
    (dict(steps=4, aug_level=-0.1), "aug_level"),
    (dict(steps=4, strength=0.0), "strength"),
    (dict(steps=4, resample=0), "resample"),
    (dict(steps=4, size=0), "size"),
  ],
)
def test_sample_options_are_refused_where_they_are_made(options, field):
  with pytest.raises(InputError, match=field):
    SampleOptions(**options)


def test_sample_options_read_a_config_section_and_keep_python_numbers():
  config = {"steps": 64, "sampler": "ddim", "guidance": 5, "threshold": "static", "prompts": ()}
  options = SampleOptions.from_config(config, guidance=np.float32(3.0), aug_level=None)
  assert (options.steps, options.sampler, options.threshold) == (64, "ddim", "static")
  assert type(options.guidance) is float and options.guidance == 3.0 and options.guided
  assert options.replace(strength=0.5).steps_run == 32
  with pytest.raises(InputError, match="strength"):
    options.replace(strength=2.0)
