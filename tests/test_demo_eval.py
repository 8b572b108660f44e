"""The demo's measurements: the shapes reader on ground truth, and SR consistency."""

import dataclasses

import numpy as np
import pytest

from imagen_jax.data import shapes, shapes_eval
from imagen_jax.demo_job import sr_consistency


# The reader's floor on rendered pictures at each demo stage's size (measured on 300: shape 92%,
# 100%, 100%; two shapes 53%, 100%, 100%: at 16 px the two shapes touch).
@pytest.mark.parametrize(
  "size, shape, two_shapes", [(16, 0.88, 0.45), (32, 0.97, 0.97), (64, 0.98, 0.97)]
)
def test_reader_reads_rendered_ground_truth_at_each_stage_size(size, shape, two_shapes):
  report = shapes_eval.reader_accuracy(200, size=size, seed=0)
  assert report["color_accuracy"] >= 0.95
  assert report["shape_accuracy"] >= shape
  assert report["position_accuracy"] >= 0.95
  two = shapes_eval.reader_accuracy(200, size=size, seed=0, two=True)
  assert two["colors_accuracy"] >= 0.9 and two["relation_accuracy"] >= 0.9
  assert two["shapes_accuracy"] >= two_shapes


def test_two_shape_pictures_with_shapes_or_sides_swapped_score_as_wrong():
  _prompts, scenes = shapes_eval.evaluation_prompts(40, seed=5, two=True)

  def swapped(scene, *, kinds):
    a, b = scene.shapes
    if kinds:  # each colour drawn as the other's shape
      a, b = dataclasses.replace(a, kind=b.kind), dataclasses.replace(b, kind=a.kind)
    else:  # each shape drawn at the other's place
      a, b = dataclasses.replace(a, center=b.center), dataclasses.replace(b, center=a.center)
    return dataclasses.replace(scene, shapes=(a, b))

  differ = [s for s in scenes if s.shapes[0].kind != s.shapes[1].kind]
  kinds = np.stack([shapes.render(swapped(s, kinds=True), 64) for s in differ])
  report = shapes_eval.evaluate_two(kinds, differ)
  assert report["colors_accuracy"] == report["relation_accuracy"] == 1.0
  assert report["shapes_accuracy"] == 0.0
  sides = np.stack([shapes.render(swapped(s, kinds=False), 64) for s in scenes])
  report = shapes_eval.evaluate_two(sides, scenes)
  assert report["relation_accuracy"] == 0.0 and report["shapes_accuracy"] == 1.0
  one = np.stack([shapes.render(dataclasses.replace(s, shapes=s.shapes[:1]), 64) for s in scenes])
  assert shapes_eval.evaluate_two(one, scenes)["all_accuracy"] == 0.0  # a shape missing


def test_wrong_pictures_score_as_wrong_and_blank_ones_as_misses():
  _prompts, scenes = shapes_eval.evaluation_prompts(40, seed=3)
  pictures = np.stack([shapes.render(s, 64) for s in scenes])
  shuffled = shapes_eval.evaluate(pictures[::-1], scenes)
  assert shuffled["all_accuracy"] < 0.2
  blank = shapes_eval.evaluate(np.full_like(pictures, 128), scenes)
  assert blank["color_accuracy"] == blank["shape_accuracy"] == blank["position_accuracy"] == 0


def test_sr_consistency_compares_each_stage_with_its_input():
  rng = np.random.default_rng(0)
  low = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  faithful = np.repeat(np.repeat(low, 2, axis=1), 2, axis=2)
  detailed = np.clip(faithful.astype(int) + rng.integers(-20, 21, faithful.shape), 0, 255)
  unrelated = rng.integers(0, 256, faithful.shape, dtype=np.uint8)
  same, noisy, other = (
    sr_consistency([low, high.astype(np.uint8)])[0] for high in (faithful, detailed, unrelated)
  )
  assert same == {"size": 16, "input_difference": 0.0, "added_detail": 0.0}
  assert noisy["input_difference"] < 5 < noisy["added_detail"]
  assert other["input_difference"] > 40


def test_a_demo_stopped_while_training_a_stage_stops_there(tmp_path, monkeypatch):
  """Ctrl-C or SIGTERM during a stage ends the demo (it resumes when run again): the next
  stages do not start from a half-trained one."""
  import imagen_jax.train as train_package
  from imagen_jax.demo_job import run_demo

  trained = []

  def stopped_in_sr1(config, workdir, **kwargs):
    trained.append(workdir.name)
    stop = {"stopped_by": "Ctrl-C"} if workdir.name == "sr1" else {}
    return {"step": 7, **stop}

  monkeypatch.setattr(train_package, "train_and_evaluate", stopped_in_sr1, raising=False)
  summary = run_demo(tmp_path / "out", quick=True)
  assert trained == ["base", "sr1"]
  assert summary["stopped_by"] == "Ctrl-C" and summary["stopped_stage"] == "sr1"
  assert summary["out"] == str(tmp_path / "out" / "quick")
  assert not (tmp_path / "out" / "quick" / "samples.png").exists()
