"""Measuring whether generated shapes pictures follow their prompts.

For a one-shape prompt, the picture is read back with simple image analysis:
  background  the median colour of the 2-pixel border
  foreground  pixels farther than 80 (RGB distance) from the background
  colour      the palette colour nearest to the foreground's median colour
  position    the 3x3 cell of the foreground's centroid
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
  (round(x * 4) - 1, round(y * 4) - 1): phrase for phrase, (x, y) in shapes.POSITIONS.items()
}


def read_picture(image: np.ndarray) -> dict | None:
  """{"color", "shape", "position"} read from a uint8 [H, W, 3] picture, or None if it shows no
  foreground."""
  image = image.astype(np.float32)
  h, w, _ = image.shape
  border = np.concatenate(
    [
      image[:2].reshape(-1, 3),
      image[-2:].reshape(-1, 3),
      image[:, :2].reshape(-1, 3),
      image[:, -2:].reshape(-1, 3),
    ]
  )
  background = np.median(border, axis=0)
  mask = np.linalg.norm(image - background, axis=-1) > 80.0
  if mask.sum() < max(4, h * w // 400):
    return None
  fg = np.median(image[mask], axis=0)
  names = list(shapes.COLORS)
  color = names[int(np.argmin([np.linalg.norm(fg - np.array(shapes.COLORS[n])) for n in names]))]
  ys, xs = np.nonzero(mask)
  cx, cy = xs.mean() / w, ys.mean() / h
  cell = (min(2, int(cx * 3)), min(2, int(cy * 3)))
  top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
  box = mask[top:bottom, left:right]
  fill = box.mean()
  widths = box.sum(axis=1)
  peak = (np.argmax(widths) + 0.5) / len(widths)
  if _solidity(mask) < 0.8:
    kind = "star"
  elif fill > 0.9:
    kind = "square"
  elif fill > 0.66:
    kind = "circle"
  else:
    kind = "triangle" if peak > 0.7 else "diamond"
  return {"color": color, "shape": kind, "position": CELLS[cell]}


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


def evaluation_prompts(n: int, *, seed: int) -> tuple[list[str], list[shapes.Scene]]:
  """n one-shape scenes (and their captions) drawn like the dataset's, from `seed`."""
  rng = np.random.default_rng(seed)
  scenes = [shapes.sample_scene(rng, two_shape_prob=0.0) for _ in range(n)]
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


def reader_accuracy(n: int = 200, *, size: int = 64, seed: int = 0) -> dict:
  """The reader's accuracy on rendered ground truth (an upper bound for any model)."""
  _, scenes = evaluation_prompts(n, seed=seed)
  images = np.stack([shapes.render(s, size) for s in scenes])
  return evaluate(images, scenes)
