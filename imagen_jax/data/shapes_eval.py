"""Measuring whether generated shapes pictures follow their prompts.

For a one-shape prompt, the picture is read back with simple image analysis:
  background  the median colour of the 2-pixel border
  foreground  pixels farther than 80 (RGB distance) from the background
  colour      the palette colour nearest to the foreground's median colour
  position    the 3x3 cell of the centre of the foreground's bounding box
  shape       a star is the one shape far from convex (area / convex-hull area < 0.8); of the
              others, the fill of the bounding box tells squares (~1) and circles (~0.79) from
              triangles and diamonds (~0.5), and where the widest row sits tells those two
              apart (bottom vs middle)
The reader is checked on rendered ground truth (`reader_accuracy`), so its own error is known.
"""

from __future__ import annotations

import numpy as np

from imagen_jax.data import shapes

CELLS = {  # (column, row) of the 3x3 grid -> caption phrase
  (int(x * 3), int(y * 3)): phrase for phrase, (x, y) in shapes.POSITIONS.items()
}


def read_picture(image: np.ndarray) -> dict | None:
  """{"color", "shape", "position"} read from a uint8 [H, W, 3] picture, or None if it shows no
  foreground."""
  image = image.astype(np.float32)
  h, w, _ = image.shape
  background = _border_background(image)
  mask = _foreground(image, background)
  if mask.sum() < max(4, h * w // 400):
    return None
  color = _nearest_color(np.median(image[mask], axis=0))
  cx, cy = _box_center(mask)
  cell = (min(2, int(cx * 3)), min(2, int(cy * 3)))
  return {"color": color, "shape": _read_shape(mask), "position": CELLS[cell]}


def _border_background(image: np.ndarray) -> np.ndarray:
  """The median colour of the 2-pixel border of a float [H, W, 3] picture."""
  border = np.concatenate(
    [
      image[:2].reshape(-1, 3),
      image[-2:].reshape(-1, 3),
      image[:, :2].reshape(-1, 3),
      image[:, -2:].reshape(-1, 3),
    ]
  )
  return np.median(border, axis=0)


def _foreground(image: np.ndarray, background: np.ndarray) -> np.ndarray:
  return np.linalg.norm(image - background, axis=-1) > 80.0


def read_two(image: np.ndarray) -> list[dict]:
  """The (up to) two shapes of a two-shape picture (uint8 [H, W, 3]), largest first:
  [{"color", "shape", "center": (x, y)}]. The shapes are the two largest connected parts of the
  foreground; when they touch (one part), the part is split between its two commonest palette
  colours (the two shapes of a caption have different colours)."""
  from scipy import ndimage  # a dependency of jax

  image = image.astype(np.float32)
  h, w, _ = image.shape
  least = max(4, h * w // 400)
  mask = _foreground(image, _border_background(image))
  labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
  sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
  parts = [labels == k + 1 for k in np.argsort(sizes)[::-1][:2] if sizes[k] >= least]
  if len(parts) == 1:
    parts = _split_by_color(image, parts[0], least)
  found = []
  for part in parts:
    color = _nearest_color(np.median(image[part], axis=0))
    found.append({"color": color, "shape": _read_shape(part), "center": _centroid(part)})
  return found


def _split_by_color(image: np.ndarray, mask: np.ndarray, least: int) -> list[np.ndarray]:
  """mask split between its two commonest palette colours (each pixel to the nearer one)."""
  palette = np.array(list(shapes.COLORS.values()), np.float32)
  distance = np.linalg.norm(image[mask][:, None] - palette, axis=-1)  # [pixels, colours]
  counts = np.bincount(np.argmin(distance, axis=-1), minlength=len(palette))
  top = np.argsort(counts)[::-1][:2]
  side = np.argmin(distance[:, top], axis=-1)
  parts = []
  for i in range(2):
    part = np.zeros_like(mask)
    part[mask] = side == i
    if part.sum() >= least:
      parts.append(part)
  return parts


def _nearest_color(rgb: np.ndarray) -> str:
  return min(shapes.COLORS, key=lambda n: np.linalg.norm(rgb - np.array(shapes.COLORS[n])))


def _centroid(mask: np.ndarray) -> tuple[float, float]:
  """(x, y) of a bool [H, W] mask's centroid as fractions of the side."""
  ys, xs = np.nonzero(mask)
  return (xs.mean() + 0.5) / mask.shape[1], (ys.mean() + 0.5) / mask.shape[0]


def _box_center(mask: np.ndarray) -> tuple[float, float]:
  """(x, y) of the centre of a bool [H, W] mask's bounding box, as fractions of the side: where
  the shape was drawn (a triangle's centroid sits a sixth of its height lower)."""
  ys, xs = np.nonzero(mask)
  h, w = mask.shape
  return (xs.min() + xs.max() + 1) / (2 * w), (ys.min() + ys.max() + 1) / (2 * h)


def _read_shape(mask: np.ndarray) -> str:
  ys, xs = np.nonzero(mask)
  box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
  fill = box.mean()
  widths = box.sum(axis=1)
  peak = (np.argmax(widths) + 0.5) / len(widths)
  if _solidity(mask) < 0.8:
    return "star"
  if fill > 0.9:
    return "square"
  if fill > 0.66:
    return "circle"
  return "triangle" if peak > 0.7 else "diamond"


def _solidity(mask: np.ndarray) -> float:
  """Foreground area over the area of its convex hull (pixel corners, Andrew's monotone chain)."""
  ys, xs = np.nonzero(mask)
  corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
  points = sorted(set(map(tuple, corners.tolist())))

  def cross(o, a, b):
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

  def half(pts):
    hull = []
    for p in pts:
      while len(hull) >= 2 and cross(hull[-2], hull[-1], p) <= 0:
        hull.pop()
      hull.append(p)
    return hull

  hull = half(points)[:-1] + half(points[::-1])[:-1]
  x, y = np.array(hull, float).T
  area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
  return float(mask.sum() / area) if area else 1.0


def evaluation_prompts(
  n: int, *, seed: int, two: bool = False
) -> tuple[list[str], list[shapes.Scene]]:
  """n one-shape (or with `two`, two-shape) scenes and their captions, drawn like the
  dataset's, from `seed`."""
  rng = np.random.default_rng(seed)
  scenes = [shapes.sample_scene(rng, two_shape_prob=float(two)) for _ in range(n)]
  return [s.caption for s in scenes], scenes


def _position_phrase(scene: shapes.Scene) -> str:
  x, y = scene.shapes[0].center
  return CELLS[(min(2, int(x * 3)), min(2, int(y * 3)))]


def evaluate(images: np.ndarray, scenes: list[shapes.Scene]) -> dict:
  """Accuracy of colour, shape, position and all three, over one-shape scenes and their
  pictures (uint8 [N, H, W, 3])."""
  hits = {"color": 0, "shape": 0, "position": 0, "all": 0}
  for image, scene in zip(images, scenes):
    got = read_picture(image)
    want = scene.shapes[0]
    if got is None:
      continue
    ok = {
      "color": got["color"] == want.color,
      "shape": got["shape"] == want.kind,
      "position": got["position"] == _position_phrase(scene),
    }
    for k, v in ok.items():
      hits[k] += int(v)
    hits["all"] += int(all(ok.values()))
  n = len(scenes)
  return {"samples": n, **{f"{k}_accuracy": round(v / n, 4) for k, v in hits.items()}}


def _relation_holds(got: tuple[dict, dict], want: tuple[shapes.Shape, shapes.Shape]) -> bool:
  """The read centres are apart along the caption's axis, in its direction, more than across."""
  (wx0, wy0), (wx1, wy1) = want[0].center, want[1].center
  (gx0, gy0), (gx1, gy1) = got[0]["center"], got[1]["center"]
  along, across = (0, 1) if abs(wx1 - wx0) > abs(wy1 - wy0) else (1, 0)
  want_d = (wx1 - wx0, wy1 - wy0)
  got_d = (gx1 - gx0, gy1 - gy0)
  return bool(
    np.sign(got_d[along]) == np.sign(want_d[along]) and abs(got_d[along]) > abs(got_d[across])
  )


def evaluate_two(images: np.ndarray, scenes: list[shapes.Scene]) -> dict:
  """Accuracy over two-shape scenes ("A to the left of B"): both colours drawn, both shapes right
  (each read where its colour is), the relation right, and all of them."""
  hits = {"colors": 0, "shapes": 0, "relation": 0, "all": 0}
  for image, scene in zip(images, scenes):
    by_color = {r["color"]: r for r in read_two(image)}
    want = scene.shapes
    if not all(s.color in by_color for s in want):
      continue
    got = tuple(by_color[s.color] for s in want)
    ok = {
      "colors": True,
      "shapes": all(g["shape"] == s.kind for g, s in zip(got, want)),
      "relation": _relation_holds(got, want),
    }
    for k, v in ok.items():
      hits[k] += int(v)
    hits["all"] += int(all(ok.values()))
  n = len(scenes)
  return {"samples": n, **{f"{k}_accuracy": round(v / n, 4) for k, v in hits.items()}}


def reader_accuracy(n: int = 200, *, size: int = 64, seed: int = 0, two: bool = False) -> dict:
  """The reader's accuracy on rendered ground truth (an upper bound for any model)."""
  _, scenes = evaluation_prompts(n, seed=seed, two=two)
  images = np.stack([shapes.render(s, size) for s in scenes])
  return (evaluate_two if two else evaluate)(images, scenes)
