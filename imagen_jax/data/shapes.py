"""Procedural text-image pairs: one or two coloured shapes on a coloured background, with a
caption that says all of it. Offline, seeded, at any resolution: the demo's and the tests' data.

  "a small red circle at the top left on a white background"
  "a blue square to the left of a yellow triangle on a gray background"
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from imagen_jax.errors import InputError

SHAPES = ("circle", "square", "triangle", "diamond", "star")
COLORS = {
  "red": (220, 30, 30),
  "green": (30, 170, 50),
  "blue": (30, 70, 220),
  "yellow": (240, 210, 20),
  "purple": (140, 40, 180),
  "orange": (250, 130, 20),
}
BACKGROUNDS = {"white": (245, 245, 245), "gray": (128, 128, 128), "black": (15, 15, 15)}
# Shape extent as a fraction of the image side, large enough that every shape keeps its outline
# at 16 pixels (the demo's base resolution); docs/demo.md has the reader's figures per size.
SIZES = {"small": 0.4, "": 0.46, "big": 0.52}
# 3x3 grid of positions (centre as a fraction of the side) and how captions name them.
POSITIONS = {
  "at the top left": (0.27, 0.27),
  "at the top": (0.5, 0.27),
  "at the top right": (0.73, 0.27),
  "on the left": (0.27, 0.5),
  "in the center": (0.5, 0.5),
  "on the right": (0.73, 0.5),
  "at the bottom left": (0.27, 0.73),
  "at the bottom": (0.5, 0.73),
  "at the bottom right": (0.73, 0.73),
}
JITTER = 0.02  # of the centre, each axis: a big shape still fits inside the picture
RELATIONS = {  # relation -> (first shape's centre, second shape's centre)
  "to the left of": ((0.27, 0.5), (0.73, 0.5)),
  "to the right of": ((0.73, 0.5), (0.27, 0.5)),
  "above": ((0.5, 0.27), (0.5, 0.73)),
  "below": ((0.5, 0.73), (0.5, 0.27)),
}
TWO_SHAPE_SIZE = 0.4
SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class Shape:
  kind: str
  color: str
  center: tuple[float, float]  # (x, y) as fractions of the side
  extent: float  # side of the bounding box as a fraction of the side


@dataclasses.dataclass(frozen=True)
class Scene:
  shapes: tuple[Shape, ...]
  background: str
  caption: str


def _article(words: str) -> str:
  return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def sample_scene(rng: np.random.Generator, *, two_shape_prob: float = 0.3) -> Scene:
  """A random scene and its caption."""
  background = str(rng.choice(list(BACKGROUNDS)))
  colors = [c for c in COLORS if not (background == "black" and c == "purple")]
  if rng.random() < two_shape_prob:
    relation = str(rng.choice(list(RELATIONS)))
    kinds = rng.choice(SHAPES, size=2)
    cols = rng.choice(colors, size=2, replace=False)
    centers = RELATIONS[relation]
    shapes = tuple(
      Shape(str(k), str(c), centers[i], TWO_SHAPE_SIZE) for i, (k, c) in enumerate(zip(kinds, cols))
    )
    caption = (
      f"{_article(f'{cols[0]} {kinds[0]}')} {relation} {_article(f'{cols[1]} {kinds[1]}')} "
      f"on a {background} background"
    )
    return Scene(shapes, background, caption)
  kind = str(rng.choice(SHAPES))
  color = str(rng.choice(colors))
  size = str(rng.choice(list(SIZES)))
  position = str(rng.choice(list(POSITIONS)))
  jitter = rng.uniform(-JITTER, JITTER, size=2)
  center = tuple(float(v) for v in np.add(POSITIONS[position], jitter))
  words = " ".join(w for w in (size, color, kind) if w)
  caption = f"{_article(words)} {position} on a {background} background"
  return Scene((Shape(kind, color, center, SIZES[size]),), background, caption)


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
  if kind == "square":
    return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
  if kind == "triangle":
    return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
  if kind == "diamond":
    return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
  if kind == "star":
    points = []
    for i in range(10):
      radius = r if i % 2 == 0 else 0.45 * r
      angle = -math.pi / 2 + i * math.pi / 5
      points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points
  raise InputError(f"Unknown shape {kind!r}; known: {SHAPES}.")


def render(scene: Scene, size: int) -> np.ndarray:
  """The scene as uint8 [size, size, 3], drawn at 4x and downsampled (antialiased edges)."""
  big = size * SUPERSAMPLE
  image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
  draw = ImageDraw.Draw(image)
  for shape in scene.shapes:
    cx, cy = shape.center[0] * big, shape.center[1] * big
    r = shape.extent * big / 2
    fill = COLORS[shape.color]
    if shape.kind == "circle":
      draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
      draw.polygon(_polygon(shape.kind, cx, cy, r), fill=fill)
  return np.asarray(image.resize((size, size), Image.BOX))


def example(seed: int, index: int, size: int) -> dict:
  """Example `index` of the dataset made with `seed`: {"image": uint8 [size, size, 3],
  "caption": str}; the same (seed, index) always gives the same pair."""
  rng = np.random.default_rng([seed, index])
  scene = sample_scene(rng)
  return {"image": render(scene, size), "caption": scene.caption}
