"""DeepFloyd IF as a cascade: Imagen.from_pretrained on tiny pipeline folders in diffusers' saved
layout (made here from the golden U-Nets and the golden tiny T5), sampled with the same
`sample()` as a self-trained cascade, with IF's semantics: the null text is the encoding of "",
guidance mixes eps only, stage II reads its noise level."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import if_pipelines, run_cli
from PIL import Image

from imagen_jax import Imagen
from imagen_jax.errors import AccessDenied, MissingPath, Unreachable
from imagen_jax.pretrained import if_pipeline
from imagen_jax.pretrained.unet import load_unet

GOLDEN = pathlib.Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
  return if_pipelines(tmp_path_factory.mktemp("if"))


@pytest.fixture(scope="module")
def imagen(pipelines):
  return Imagen.from_pretrained([str(p) for p in pipelines], dtype=jnp.float32)


def test_the_cascade_samples_both_stages_deterministically_per_seed(imagen):
  prompts = ["A red circle ", "an owl"]
  kw = dict(steps=[4, 3])
  first = imagen.sample(prompts, seed=0, **kw)
  assert [im.shape for im in first] == [(2, 16, 16, 3), (2, 64, 64, 3)]
  assert all(im.dtype == np.uint8 for im in first)
  again = imagen.sample(prompts, seed=0, **kw)
  other = imagen.sample(prompts, seed=1, **kw)
  for a, b, c in zip(first, again, other):
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
  assert imagen.stages[0].config.sample.guidance == 7.0  # IF's defaults
  assert imagen.stages[1].config.sample.steps == 50
  assert imagen.stages[1].config.sample.aug_level == 250


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m"])
def test_ddim_and_dpm_solver_run_on_the_discrete_steps(imagen, sampler):
  images = imagen.sample(["an owl"], seed=0, steps=[5, 2], sampler=sampler)
  assert [im.shape for im in images] == [(1, 16, 16, 3), (1, 64, 64, 3)]


def test_text_is_encoded_as_if_does(imagen):
  enc = imagen.text_encoder
  assert enc.max_length == 77
  emb, mask = enc(["", "  An OWL "])
  # "" keeps its end token and every position keeps the encoder's output (IF reads them all).
  assert mask[0].sum() == 1 and bool(jnp.all(emb[0, 5] != 0))
  same, _ = enc(["an owl"])
  np.testing.assert_array_equal(np.asarray(emb[1]), np.asarray(same[0]))


def test_guidance_mixes_eps_only_and_keeps_the_text_branch_variance(imagen, pipelines):
  stage = imagen.stages[1]
  unet = load_unet(pipelines[1] / "unet")
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32)
  cond = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32)
  text = jnp.asarray(rng.standard_normal((2, 5, 32)), jnp.float32)
  null = jnp.asarray(rng.standard_normal((2, 5, 32)), jnp.float32)
  t, level = jnp.array([500, 20]), jnp.array([250, 250])
  eps_and_variance = jax.jit(stage.stage._eps_and_variance)  # eager, it would compile op by op
  eps, value = eps_and_variance(
    stage.params, x, t, text=text, cond=cond, level=level, null_text=null, guidance=4.0
  )
  both = jnp.concatenate([x, cond], -1)
  c, u = unet(both, t, text, level), unet(both, t, null, level)
  np.testing.assert_allclose(eps, u[..., :3] + 4.0 * (c[..., :3] - u[..., :3]), atol=1e-4)
  np.testing.assert_allclose(value, c[..., 3:], atol=1e-5)


def test_stage_2_reads_the_noise_level_of_its_input(imagen):
  low = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  a = imagen.sample(["an owl"], seed=3, steps=[2, 2], aug_level=[0, 250], start_image=low)
  b = imagen.sample(["an owl"], seed=3, steps=[2, 2], aug_level=[0, 900], start_image=low)
  assert not np.array_equal(a[1], b[1])


def test_the_first_stage_must_bring_the_text_encoder(pipelines):
  with pytest.raises(MissingPath, match="text_encoder"):
    Imagen.from_pretrained([str(pipelines[1])])


def test_bilinear_upsampling_matches_torch():
  from imagen_jax.images import bilinear_resize_align_corners

  golden = np.load(GOLDEN / "if_unet" / "upsample.npz")
  np.testing.assert_allclose(
    bilinear_resize_align_corners(golden["x"], 64), golden["up"], atol=1e-5
  )


def test_hub_ids_are_not_fetched_offline_and_say_what_to_do(monkeypatch):
  with pytest.raises(Unreachable, match="cannot be reached"):
    if_pipeline.pipeline_directory("DeepFloyd/IF-I-XL-v1.0", text_encoder=True)
  import huggingface_hub
  from huggingface_hub.errors import GatedRepoError

  def gated(*args, **kwargs):
    error = GatedRepoError.__new__(GatedRepoError)  # as raised on a 401 without the license
    Exception.__init__(error, "401 gated")
    raise error

  monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
  with pytest.raises(AccessDenied, match=r"license.*https://huggingface\.co/DeepFloyd/IF-I-XL"):
    if_pipeline.pipeline_directory("DeepFloyd/IF-I-XL-v1.0", text_encoder=True)
  patterns = if_pipeline.hub_patterns("fp16", text_encoder=False)
  assert "unet/diffusion_pytorch_model.fp16.safetensors" in patterns
  assert not any(p.startswith("text_encoder") for p in patterns)


def test_the_sample_command_runs_if_pipelines(pipelines, tmp_path):
  out = tmp_path / "owl"
  proc = run_cli(
    "sample",
    "--stages",
    *map(str, pipelines),
    "--prompt",
    "an owl",
    "--steps",
    "2",
    "2",
    "--out",
    str(out),
  )
  assert "stage 2" in proc.stdout
  assert Image.open(out / "image_000.png").size == (64, 64)
  mixed = run_cli(
    "sample",
    "--stages",
    str(pipelines[0]),
    str(tmp_path),
    "--prompt",
    "x",
    "--out",
    str(tmp_path / "mixed"),
    check=False,
  )
  assert mixed.returncode != 0 and re.search(r"--stages .*DeepFloyd IF", mixed.stderr)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_if_stages_inpaint_and_redraw(imagen, sampler):
  from imagen_jax.images import antialiased_resize

  init = np.zeros((32, 32, 3), np.uint8)
  init[:, :16] = 255
  mask = np.zeros((32, 32), bool)
  mask[:, 16:] = True
  out = imagen.sample(["an owl"], seed=0, steps=[3, 2], sampler=sampler, init_image=init, mask=mask)
  for images in out:
    size = images.shape[1]
    np.testing.assert_array_equal(
      images[0, :, : size // 2], antialiased_resize(init, size)[:, : size // 2]
    )
  redrawn = imagen.sample(
    ["an owl"], seed=0, steps=[4, 2], sampler=sampler, init_image=init, strength=0.5
  )
  assert [im.shape for im in redrawn] == [(1, 16, 16, 3), (1, 64, 64, 3)]
