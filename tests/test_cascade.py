"""The cascade end to end: the quick demo, Imagen.load / sample, `imagen-jax sample`, errors."""

import json

import jax
import numpy as np
import pytest
from helpers import run_cli

from imagen_jax import Imagen
from imagen_jax.models import Stage

pytestmark = pytest.mark.xdist_group("cascade")


@pytest.fixture(scope="module")
def demo(quick_demo):
  return quick_demo


@pytest.fixture(scope="module")
def imagen(demo):
  out, _ = demo
  return Imagen.load([str(out / s) for s in ("base", "sr1", "sr2")])


def test_quick_demo_writes_its_outputs_and_says_where(demo):
  out, stdout = demo
  for name in ("samples.png", "samples_stage1.png", "samples_stage3.png", "summary.json"):
    assert (out / name).exists(), name
  summary = json.loads((out / "summary.json").read_text())
  assert set(summary["stages"]) == {"base", "sr1", "sr2"}
  assert str(out) in stdout and "samples.png" in stdout
  for stage in ("base", "sr1", "sr2"):
    assert (out / stage / "metrics.jsonl").exists()
    assert list((out / stage / "tensorboard").glob("events.out.tfevents.*"))


def test_rerunning_the_demo_resumes_instead_of_retraining(demo):
  out, _ = demo
  before = (out / "base" / "metrics.jsonl").read_text()
  run_cli("demo", "--quick", "--out", str(out.parent))
  assert (out / "base" / "metrics.jsonl").read_text() == before


def test_sample_returns_one_uint8_batch_per_stage(imagen):
  images = imagen.sample(["a red circle at the top left", "a blue square"], seed=0, steps=3)
  assert [im.shape for im in images] == [(2, 16, 16, 3), (2, 32, 32, 3), (2, 64, 64, 3)]
  assert all(im.dtype == np.uint8 for im in images)


def test_same_seed_same_images_and_another_seed_others(imagen):
  kw = dict(steps=3, stop_at_stage=2)
  a = imagen.sample(["a green star"], seed=3, **kw)
  b = imagen.sample(["a green star"], seed=3, **kw)
  c = imagen.sample(["a green star"], seed=4, **kw)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])


def test_guided_sampling_makes_one_batched_unet_call_per_step(imagen, monkeypatch):
  calls = []
  original = Stage.apply

  def counting(self, params, z, *args, **kwargs):
    calls.append(z.shape[0])
    return original(self, params, z, *args, **kwargs)

  monkeypatch.setattr(Stage, "apply", counting)
  # steps=5 is a shape no earlier test compiled, so the sampler is traced again here.
  imagen.sample(["a", "b", "c"], seed=0, steps=5, guidance=4.0, stop_at_stage=1)
  shards = imagen.mesh.shape["data"] * imagen.mesh.shape["fsdp"]
  padded = -(-3 // shards) * shards  # the batch is padded to fill the devices
  assert calls == [2 * padded]  # one call in the traced scan body: conditional + unconditional
  calls.clear()
  imagen.sample(["a", "b", "c"], seed=0, steps=5, guidance=4.0, stop_at_stage=1)
  assert calls == []  # compiled once, reused


def test_stop_at_stage_and_start_image(imagen):
  images = imagen.sample(["x"], seed=0, steps=2, stop_at_stage=1)
  assert len(images) == 1
  start = np.zeros((24, 24, 3), np.uint8)
  start[:, 12:] = 255
  images = imagen.sample(["a white square on the right"], seed=0, steps=2, start_image=start)
  assert [im.shape[1] for im in images] == [16, 32, 64]
  assert images[0][0, 8, 12:].min() > 200  # the given picture, resized, is the base output


@pytest.mark.parametrize(
  "prompts, error, message",
  [
    ([], ValueError, "No texts given"),
    (["ok", None], TypeError, "Every text must be a string; got NoneType"),
    ("a string", TypeError, "not a single string"),
    (None, TypeError, "Pass a list of strings.*got NoneType"),
    (3, TypeError, "Pass a list of strings.*got int"),
    (b"bytes", TypeError, "Pass a list of strings.*got bytes"),
  ],
)
def test_bad_prompts_are_clear_errors(imagen, prompts, error, message):
  with pytest.raises(error, match=message):
    imagen.sample(prompts)


def test_a_stage_path_that_is_a_file_is_a_clear_error(tmp_path):
  (tmp_path / "base.png").write_bytes(b"")
  with pytest.raises(ValueError, match="is a file; a stage is a training --workdir"):
    Imagen.load([str(tmp_path / "base.png")])


def test_missing_stage_directory_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    Imagen.load([str(tmp_path / "nope")])


def test_stages_that_do_not_chain_are_a_clear_error(demo):
  out, _ = demo
  with pytest.raises(ValueError, match="do not chain"):
    Imagen.load([str(out / "base"), str(out / "sr2")])
  with pytest.raises(ValueError, match="must be a base"):
    Imagen.load([str(out / "sr1"), str(out / "sr2")])


def test_sample_command_writes_images_and_a_grid_and_prints_timings(demo, tmp_path):
  out, _ = demo
  proc = run_cli(
    "sample",
    "--stages",
    str(out / "base"),
    str(out / "sr1"),
    "--prompt",
    "a red circle",
    "--prompt",
    "a blue star",
    "--steps",
    "3",
    "--out",
    str(tmp_path / "grid.png"),
  )
  assert (tmp_path / "grid.png").exists()
  assert (tmp_path / "grid_0.png").exists() and (tmp_path / "grid_1.png").exists()
  assert "stage 1:" in proc.stdout and "stage 2:" in proc.stdout


def test_sample_command_reports_a_missing_stage_without_a_traceback(tmp_path):
  proc = run_cli(
    "sample",
    "--stages",
    str(tmp_path / "nope"),
    "--prompt",
    "x",
    "--out",
    str(tmp_path / "g.png"),
    check=False,
  )
  assert proc.returncode == 2
  assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_loaded_parameters_are_the_ema_parameters(demo):
  out, _ = demo
  from imagen_jax.pipeline import load_stage

  loaded = load_stage(str(out / "base"))
  assert loaded.step == json.loads((out / "summary.json").read_text())["stages"]["base"]["step"]
  assert jax.tree.leaves(loaded.params)[0].dtype == np.float32
