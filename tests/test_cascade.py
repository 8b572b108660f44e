"""The cascade end to end: the quick demo, Imagen.load / sample, `imagen-jax sample`, errors."""

import json
import re

import jax
import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from imagen_jax import Imagen
from imagen_jax.errors import InputError, InputTypeError, MissingPath, PathExists
from imagen_jax.pipeline import load_stage
from imagen_jax.stages import ImagenStage, SampleOptions, StageInputs, compiled

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
  assert "Downloading" not in stdout  # the offline demo does not say it downloads
  for stage in ("base", "sr1", "sr2"):
    assert (out / stage / "metrics.jsonl").exists()
    assert list((out / stage / "tensorboard").glob("events.out.tfevents.*"))


def test_the_demo_folder_stands_for_its_three_stages(demo):
  out, stdout = demo
  assert f"imagen-jax sample --stages {out} " in stdout  # what the demo says to run next
  imagen = Imagen.load(str(out))
  assert [s.path for s in imagen.stages] == [str(out / name) for name in ("base", "sr1", "sr2")]
  # A quick demo's stages are in --out/quick: the folder above points there.
  with pytest.raises(MissingPath, match=re.escape(str(out))):
    Imagen.load(str(out.parent))


def test_rerunning_the_demo_resumes_instead_of_retraining(demo):
  out, _ = demo
  before = (out / "base" / "metrics.jsonl").read_text()
  run_cli("demo", "--quick", "--out", str(out.parent))
  assert (out / "base" / "metrics.jsonl").read_text() == before


def test_sample_returns_one_uint8_batch_per_stage(imagen):
  images = imagen.sample(["a red circle at the top left", "a blue square"], seed=0, steps=3)
  assert [im.shape for im in images] == [(2, 16, 16, 3), (2, 32, 32, 3), (2, 64, 64, 3)]
  assert all(im.dtype == np.uint8 for im in images)


def test_a_cascade_prints_what_it_holds(imagen):
  lines = repr(imagen).splitlines()
  assert lines[0].startswith("Imagen(3 stages, text encoder builtin:shapes-tiny (16 tokens)")
  assert lines[1].startswith("  stage 1: 16 px base, 1.49M parameters, step ")
  assert lines[2].startswith("  stage 2: 16->32 px, ") and lines[2].endswith("sr1")
  assert lines[3].startswith("  stage 3: 32->64 px, ") and lines[3].endswith("sr2")


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
  original = ImagenStage.apply

  def counting(self, params, z, *args, **kwargs):
    calls.append(z.shape[0])
    return original(self, params, z, *args, **kwargs)

  monkeypatch.setattr(ImagenStage, "apply", counting)
  # steps=5 is a shape no earlier test compiled, so the sampler is traced again here.
  imagen.sample(["a", "b", "c"], seed=0, steps=5, guidance=4.0, stop_at_stage=1)
  shards = imagen.mesh.shape["data"] * imagen.mesh.shape["fsdp"]
  padded = -(-3 // shards) * shards  # the batch is padded to fill the devices
  assert calls == [2 * padded]  # one call in the traced scan body: conditional + unconditional
  calls.clear()
  imagen.sample(["a", "b", "c"], seed=0, steps=5, guidance=4.0, stop_at_stage=1)
  assert calls == []  # compiled once, reused


def test_sr_strength_starts_an_sr_stage_from_its_noised_input(imagen):
  """sr_strength < 1: the SR stage runs that fraction of the steps from its upsampled input
  noised to that level, so at a low strength the output keeps the input's picture."""
  start = np.zeros((16, 16, 3), np.uint8)
  start[:, 8:] = 255  # black left half, white right half
  steps = []
  out = imagen.sample(
    ["a white square on the right"], seed=0, steps=8, start_image=start, sr_strength=0.1,
    callback=lambda stage, step: steps.append(stage),
  )  # fmt: skip
  assert steps == [1, 2]  # round(8 x 0.1) = 1 step per SR stage
  final = out[-1][0].astype(float)
  assert final[:, :24].mean() < 60 and final[:, 40:].mean() > 195  # the halves stay
  with pytest.raises(InputError, match="sr_strength"):
    imagen.sample(["x"], seed=0, steps=2, start_image=start, sr_strength=1.5)


def test_stop_at_stage_and_start_image(imagen):
  images = imagen.sample(["x"], seed=0, steps=2, stop_at_stage=1)
  assert len(images) == 1
  # Per-stage options name every stage of the cascade, also those a stop leaves out.
  images = imagen.sample(["x"], seed=0, steps=(2, 2, 2), guidance=(3.0, 2.0, 1.0), stop_at_stage=2)
  assert [im.shape[1] for im in images] == [16, 32]
  start = np.zeros((24, 24, 3), np.uint8)
  start[:, 12:] = 255
  images = imagen.sample(["a white square on the right"], seed=0, steps=2, start_image=start)
  assert [im.shape[1] for im in images] == [16, 32, 64]
  assert images[0][0, 8, 12:].min() > 200  # the given picture, resized, is the base output


@pytest.mark.parametrize(
  "prompts, error, message",
  [
    ([], InputError, "No texts"),
    (["ok", None], InputTypeError, "string.*NoneType"),
    (None, InputError, "prompts or prompt_embeds"),
    (3, InputTypeError, "list of strings.*int"),
    (b"bytes", InputTypeError, "list of strings.*bytes"),
  ],
)
def test_bad_prompts_are_clear_errors(imagen, prompts, error, message):
  with pytest.raises(error, match=message):
    imagen.sample(prompts)


@pytest.mark.parametrize(
  "options, message",
  [
    (dict(guidance=-1.0), "stage 1.*guidance"),
    (dict(guidance=(3.0, -2.0, 1.0)), "stage 2.*guidance"),
    (dict(steps=0), "stage 1.*steps"),
    (dict(steps=(4, 2.5, 2)), "stage 2.*steps"),
    (dict(sr_strength=(1.0, 1.0, 0.0)), "stage 3.*sr_strength"),
    (dict(aug_level=(0.0, 2.0, 0.0)), "stage 2.*aug_level"),
    (dict(sampler="euler"), "stage 1.*sampler"),
  ],
)
def test_bad_sampling_options_are_clear_errors(imagen, options, message):
  with pytest.raises(InputError, match=message):
    imagen.sample(["a red circle"], seed=0, **options)


def test_a_stage_path_that_is_a_file_is_a_clear_error(tmp_path):
  (tmp_path / "base.png").write_bytes(b"")
  with pytest.raises(InputError, match=r"is a file.*--workdir"):
    Imagen.load([str(tmp_path / "base.png")])


def test_missing_stage_directory_is_a_clear_error(tmp_path):
  with pytest.raises(MissingPath, match="does not exist"):
    Imagen.load([str(tmp_path / "nope")])


def test_stages_that_do_not_chain_are_a_clear_error(demo):
  out, _ = demo
  with pytest.raises(InputError, match="do not chain"):
    Imagen.load([str(out / "base"), str(out / "sr2")])
  with pytest.raises(InputError, match="must be a base"):
    Imagen.load([str(out / "sr1"), str(out / "sr2")])


def test_sample_command_writes_each_picture_with_its_settings_and_a_grid(demo, tmp_path):
  out, _ = demo
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a red circle\n\na blue star\n")
  proc = run_cli(
    "sample", "--stages", str(out / "base"), str(out / "sr1"), "--prompt", "a green square",
    "--prompts-file", str(prompts), "--num-images", "2", "--negative-prompt", "a red circle",
    "--steps", "3", "--seed", "4", "--batch-size", "4", "--save-stages", "--out",
    str(tmp_path / "pictures"), "--debug",
  )  # fmt: skip
  folder = tmp_path / "pictures"
  records = json.loads((folder / "samples.json").read_text())
  assert len(records) == 12  # 3 prompts x 2 pictures x 2 stages
  final = [r for r in records if r["stage"] == 2]
  assert [r["prompt"] for r in final[:3]] == ["a green square", "a green square", "a red circle"]
  assert [r["image_index"] for r in final[:3]] == [0, 1, 0]
  png = Image.open(folder / final[2]["file"])
  assert png.size == (32, 32) and png.text["prompt"] == "a red circle"
  assert png.text["seed"] == "4" and png.text["negative_prompt"] == "a red circle"
  assert (folder / "grid.png").exists() and (folder / "stage1" / "image_005.png").exists()
  assert "stage 1:" in proc.stdout and "stage 2:" in proc.stdout
  # One picture of the set, reproduced alone from the settings its PNG carries.
  alone = tmp_path / "alone"
  run_cli(
    "sample", "--stages", str(out / "base"), str(out / "sr1"), "--prompt", png.text["prompt"],
    "--negative-prompt", png.text["negative_prompt"], "--steps", "3", "--seed", png.text["seed"],
    "--out", str(alone),
  )  # fmt: skip
  np.testing.assert_array_equal(np.asarray(Image.open(alone / "image_000.png")), np.asarray(png))
  # Again into the first folder: replaced whole, no picture of the earlier run left beside.
  (folder / "mine.txt").write_text("not the command's")
  run_cli(
    "sample", "--stages", str(out / "base"), "--prompt", "x", "--steps", "2", "--out",
    str(folder), "--overwrite",
  )  # fmt: skip
  assert sorted(p.name for p in folder.iterdir()) == [
    "grid.png",
    "image_000.png",
    "mine.txt",
    "samples.json",
  ]


def test_sample_command_labels_stages_after_a_start_image(demo, tmp_path):
  out, _ = demo
  start = tmp_path / "start.png"
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(start)
  proc = run_cli(
    "sample", "--stages", *(str(out / s) for s in ("base", "sr1", "sr2")), "--prompt", "x",
    "--steps", "2", "--start-image", str(start), "--out", str(tmp_path / "sr"),
  )  # fmt: skip
  assert re.search(r"stage 1:.*--start-image", proc.stdout)
  assert "stage 2:" in proc.stdout and "stage 3:" in proc.stdout and "64px" in proc.stdout


def test_sample_command_reports_a_missing_stage_without_a_traceback(tmp_path):
  proc = run_cli(
    "sample",
    "--stages",
    str(tmp_path / "nope"),
    "--prompt",
    "x",
    "--out",
    str(tmp_path / "g"),
    check=False,
  )
  assert proc.returncode == 2
  assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
  (tmp_path / "afile").write_text("")
  proc = run_cli(
    "sample", "--stages", "x", "--prompt", "x", "--out", str(tmp_path / "afile"), check=False
  )
  assert proc.returncode == 2 and re.search(r"--out .*is a file", proc.stderr)


def test_loaded_parameters_are_the_ema_parameters(demo):
  out, _ = demo

  loaded = load_stage(str(out / "base"))
  assert loaded.step == json.loads((out / "summary.json").read_text())["stages"]["base"]["step"]
  assert jax.tree.leaves(loaded.params)[0].dtype == np.float32


def test_a_prompt_gives_the_same_picture_alone_and_anywhere_in_a_batch(imagen):
  kw = dict(seed=5, steps=3, guidance=3.0)
  alone = imagen.sample(["a green star"], **kw)
  np.testing.assert_array_equal(imagen.sample("a green star", **kw)[-1], alone[-1])  # one text
  prompts = ["a red circle", "a green star", "a blue square", "a green star"]
  batch = imagen.sample(prompts, **kw)
  chunked = imagen.sample(prompts, batch_size=3, **kw)  # two calls of 3 and 1 rows
  for s in range(3):
    np.testing.assert_array_equal(batch[s][1], alone[s][0])
    np.testing.assert_array_equal(chunked[s], batch[s])
    assert not np.array_equal(batch[s][1], batch[s][3])  # the same text again is another draw
  assert batch.prompts == prompts


def test_images_per_prompt_keys_and_output_types(imagen):
  kw = dict(steps=2, stop_at_stage=2)
  out = imagen.sample(["a red circle", "a blue star"], seed=1, num_images_per_prompt=3, **kw)
  assert [im.shape[0] for im in out] == [6, 6]
  assert out.prompts == ["a red circle"] * 3 + ["a blue star"] * 3
  assert not np.array_equal(out[-1][0], out[-1][1])
  one = imagen.sample(["a blue star"], seed=1, num_images_per_prompt=3, **kw)
  np.testing.assert_array_equal(one[-1], out[-1][3:])
  by_key = imagen.sample(["a blue star"], key=jax.random.key(1), num_images_per_prompt=3, **kw)
  np.testing.assert_array_equal(by_key[-1], one[-1])
  raw = imagen.sample(["a blue star"], key=jax.random.PRNGKey(1), num_images_per_prompt=3, **kw)
  np.testing.assert_array_equal(raw[-1], one[-1])
  pil = imagen.sample(["a blue star"], output_type="pil", **kw)
  assert pil[-1][0].size == (32, 32)
  floats = imagen.sample(["a blue star"], output_type="jax", **kw)
  assert isinstance(floats[-1], jax.Array) and floats[-1].dtype == np.float32
  assert [t.stage for t in out.timings] == [0, 1] and all(t.seconds > 0 for t in out.timings)
  with pytest.raises(InputError, match="key or seed"):
    imagen.sample(["x"], key=jax.random.key(0), seed=0)
  with pytest.raises(InputError, match="one PRNG key"):
    imagen.sample(["x"], key=jax.random.split(jax.random.key(0), 2))
  with pytest.raises(InputTypeError, match=r"seed.*integer"):
    imagen.sample(["x"], seed=jax.random.key(0))
  with pytest.raises(InputError, match="output_type"):
    imagen.sample(["x"], output_type="tensor")


def test_negative_prompt_changes_the_picture_and_empty_is_the_default(imagen):
  kw = dict(seed=2, steps=3, guidance=4.0, stop_at_stage=1)
  default = imagen.sample(["a green star"], **kw)[0]
  empty = imagen.sample(["a green star"], negative_prompt="", **kw)[0]
  other = imagen.sample(["a green star"], negative_prompt="a red circle", **kw)[0]
  np.testing.assert_array_equal(empty, default)
  assert not np.array_equal(other, default)


def test_prompt_embeds_and_a_per_step_callback(imagen):
  emb, mask = imagen.text_encoder(["a red circle", "a blue star"])
  steps = []
  out = imagen.sample(
    prompt_embeds=emb,
    prompt_mask=mask,
    seed=0,
    steps=3,
    stop_at_stage=2,
    callback=lambda stage, step: steps.append((stage, step)),
  )
  assert out[-1].shape == (2, 32, 32, 3)
  assert sorted(steps) == [(s, i) for s in (0, 1) for i in range(3)]
  with pytest.raises(InputError, match="prompts or prompt_embeds"):
    imagen.sample(["x"], prompt_embeds=emb)


def test_two_threads_sample_one_cascade_at_once_each_hearing_its_own_steps(imagen):
  """The compiled sampler is shared; each call's step callback is an argument of that call."""
  import threading

  kw = dict(steps=4, stop_at_stage=2, guidance=2.0)
  prompts = {"a": ["a red circle", "a blue star"], "b": ["a green square", "a purple star"]}
  alone = {name: imagen.sample(p, seed=1, **kw) for name, p in prompts.items()}
  heard = {name: [] for name in prompts}
  results, errors = {}, []
  barrier = threading.Barrier(len(prompts))

  def run(name):
    try:
      barrier.wait()
      results[name] = imagen.sample(
        prompts[name], seed=1, callback=lambda stage, step: heard[name].append((stage, step)), **kw
      )
    except Exception as e:  # surfaced below
      errors.append(e)

  threads = [threading.Thread(target=run, args=(name,)) for name in prompts]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors
  for name in prompts:
    assert sorted(heard[name]) == [(s, i) for s in (0, 1) for i in range(4)], name
    for got, want in zip(results[name], alone[name]):
      np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("devices", [1, 8])
def test_the_pure_sampler_runs_inside_a_users_jit(demo, devices):
  """A stage's sample is the documented core: jitted by the caller (no compile options inside),
  with the batch sharded over `devices` CPU devices, it gives the package's images."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  out, _ = demo
  loaded = load_stage(str(out / "base"))
  emb, mask = Imagen.load([str(out / "base")]).text_encoder(["a red circle"] * 8)
  keys = jax.random.split(jax.random.key(0), 8)
  options = SampleOptions(steps=3)
  fn = jax.jit(lambda p, k, t, m: loaded.stage.sample(p, k, StageInputs(t, m), options=options))
  mesh = Mesh(np.array(jax.devices()[:devices]), ("batch",))
  rows = NamedSharding(mesh, PartitionSpec("batch"))
  params = jax.device_put(loaded.params, NamedSharding(mesh, PartitionSpec()))
  images = fn(params, *(jax.device_put(a, rows) for a in (keys, emb, mask)))
  reference = compiled.sample(
    loaded.stage, loaded.params, keys, StageInputs(emb, mask), options=options
  )
  assert images.shape == (8, 16, 16, 3)
  np.testing.assert_allclose(np.asarray(images), np.asarray(reference), atol=1e-4)
  # The same inside shard_map: each device samples its own rows with their own keys.
  per_device = jax.jit(
    jax.shard_map(
      lambda p, k, t, m: loaded.stage.sample(p, k, StageInputs(t, m), options=options),
      mesh=mesh,
      in_specs=(PartitionSpec(), *(PartitionSpec("batch"),) * 3),
      out_specs=PartitionSpec("batch"),
    )
  )
  sharded = per_device(params, *(jax.device_put(a, rows) for a in (keys, emb, mask)))
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(reference), atol=1e-4)
  # Legacy uint32 keys [B] (jax.random.PRNGKey, split) are the same keys.
  legacy = jax.random.split(jax.random.PRNGKey(0), 8)
  typed = fn(loaded.params, keys, emb, mask)
  np.testing.assert_array_equal(np.asarray(fn(loaded.params, legacy, emb, mask)), typed)


def _size(path):
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_an_exported_cascade_samples_identically_and_is_a_fraction_of_the_workdirs(
  demo, imagen, tmp_path
):
  out, _ = demo
  proc = run_cli(
    "export",
    "--stages",
    *(str(out / s) for s in ("base", "sr1", "sr2")),
    "--out",
    str(tmp_path / "shared"),
  )
  assert "wrote" in proc.stdout
  folder = tmp_path / "shared"
  assert _size(folder) < 0.35 * sum(_size(out / s) for s in ("base", "sr1", "sr2"))
  assert "builtin:shapes-tiny" in (folder / "README.md").read_text()
  kw = dict(seed=7, steps=3, guidance=3.0)
  expected = imagen.sample(["a red circle", "a blue star"], **kw)
  for loaded in (Imagen.from_pretrained(str(folder)), Imagen.load([str(folder)])):
    got = loaded.sample(["a red circle", "a blue star"], **kw)
    for a, b in zip(got, expected):
      np.testing.assert_array_equal(a, b)
  again = imagen.save_pretrained(tmp_path / "again")
  assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in folder.iterdir())
  with pytest.raises(PathExists, match="not empty"):
    imagen.save_pretrained(folder)


def _half_black_half_white(size=40):
  image = np.zeros((size, size, 3), np.uint8)
  image[:, : size // 2] = 255
  return image


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++2m"])
def test_inpainting_keeps_the_known_region_at_every_stage(imagen, sampler):
  from imagen_jax.images import antialiased_resize

  init = _half_black_half_white()
  mask = np.zeros((40, 40), bool)
  mask[:, 20:] = True  # draw on the right
  kw = dict(seed=3, steps=3, guidance=3.0, sampler=sampler)
  out = imagen.sample(["a red circle", "a blue star"], init_image=init, mask=mask, **kw)
  for images in out:
    size = images.shape[1]
    np.testing.assert_array_equal(
      images[:, :, : size // 2], np.broadcast_to(antialiased_resize(init, size)[:, : size // 2],
                                                 (2, size, size // 2, 3)),
    )  # fmt: skip
  again = imagen.sample(["a red circle", "a blue star"], init_image=init, mask=mask, **kw)
  for a, b in zip(out, again):
    np.testing.assert_array_equal(a, b)  # same seed, same edit


def test_full_and_empty_masks_and_a_tiny_strength(imagen):
  from imagen_jax.images import antialiased_resize

  init = _half_black_half_white()
  kw = dict(seed=5, steps=3, guidance=3.0)
  plain = imagen.sample(["a green star"], **kw)
  full = imagen.sample(["a green star"], init_image=init, mask=np.ones((40, 40), bool), **kw)
  empty = imagen.sample(["a green star"], init_image=init, mask=np.zeros((40, 40), np.uint8), **kw)
  for p, f, e in zip(plain, full, empty):
    np.testing.assert_array_equal(f, p)  # everything drawn: plain sampling
    np.testing.assert_array_equal(e[0], antialiased_resize(init, e.shape[1]))  # nothing drawn
  near = imagen.sample(["a green star"], init_image=init, strength=0.001, stop_at_stage=1, **kw)
  assert np.abs(near[0][0].astype(int) - antialiased_resize(init, 16).astype(int)).max() <= 8
  for bad, message in [
    (dict(init_image=init, strength=0.0), "strength"),
    (dict(init_image=init), "init_image.*strength"),
    (dict(mask=np.ones((40, 40))), "init_image"),
    (dict(init_image=init, mask=np.ones((30, 40))), "mask.*size"),
    (dict(init_image=init[..., :2], strength=0.5), "RGB"),
  ]:
    with pytest.raises(InputError, match=message):
      imagen.sample(["x"], **kw, **bad)


def test_the_sample_command_edits_with_an_init_image_and_a_mask(demo, tmp_path):
  out, _ = demo
  init, mask = tmp_path / "init.png", tmp_path / "mask.png"
  Image.fromarray(_half_black_half_white()).save(init)
  m = np.zeros((40, 40), np.uint8)
  m[:, 20:] = 255
  Image.fromarray(m).save(mask)
  stages = [str(out / s) for s in ("base", "sr1")]
  args = ["sample", "--stages", *stages, "--prompt", "a red circle", "--steps", "2"]
  run_cli(*args, "--init-image", str(init), "--mask", str(mask), "--strength", "0.8",
          "--out", str(tmp_path / "edit"))  # fmt: skip
  picture = np.asarray(Image.open(tmp_path / "edit" / "image_000.png"))
  from imagen_jax.images import antialiased_resize

  kept = antialiased_resize(_half_black_half_white(), 32)[:, :16]  # the source at 32 px
  assert picture.shape == (32, 32, 3)
  np.testing.assert_array_equal(picture[:, :16], kept)
  Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "black.png")
  Image.fromarray(m[:20]).save(tmp_path / "small.png")
  for extra, message in [
    (["--mask", str(tmp_path / "black.png")], "nothing to draw"),
    (["--mask", str(tmp_path / "small.png")], "mask.*size"),
    (["--strength", "1.5"], "strength must be in"),
  ]:
    proc = run_cli(*args, "--init-image", str(init), *extra, "--out", str(tmp_path / "x"),
                   check=False)  # fmt: skip
    assert proc.returncode == 2 and re.search(message, proc.stderr), proc.stderr


def test_an_interrupted_export_leaves_no_half_folder(demo, tmp_path, monkeypatch):
  from imagen_jax.pipeline import export

  out, _ = demo
  stages = [load_stage(str(out / "base"))]

  def fail(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(export, "_card", fail)  # the last file written
  with pytest.raises(KeyboardInterrupt):
    export.save_stages(stages, tmp_path / "shared")
  assert list(tmp_path.iterdir()) == []
  monkeypatch.undo()
  assert export.save_stages(stages, tmp_path / "shared").is_dir()


def test_the_demo_evaluation_reports_each_stage_next_to_the_reader(imagen):
  from imagen_jax.demo_job import evaluate_cascade

  report = evaluate_cascade(imagen, samples=4, two_samples=3)
  assert report["samples"] == 4 and report["two_shapes"][0]["samples"] == 3
  assert [s["size"] for s in report["per_stage"]] == [16, 32, 64]
  assert [s["size"] for s in report["two_shapes"]] == [16, 32, 64]
  assert report["per_stage"][-1]["shape_accuracy"] == report["shape_accuracy"]
  assert report["per_stage"][-1]["reader_on_ground_truth"]["shape_accuracy"] >= 0.98
  assert report["two_shapes"][-1]["reader_on_ground_truth"]["shapes_accuracy"] >= 0.97
  assert [s["size"] for s in report["sr_stages"]] == [32, 64]
