"""Inpainting with the trained demo cascade, read back with the shapes reader. Not part of the
package or of CI.

Each case renders a one-shape picture (a shape on the left of a plain background, 64 px), masks
its right half, and asks the cascade for a shape of another colour and another kind there
("a blue star on the right on a white background"). The right half of every stage's output is
read with imagen_jax.data.shapes_eval.read_picture: colour and shape accuracy against the prompt,
next to the reader's own accuracy on rendered ground truth of the same scenes; the left half must
be the source exactly. Writes a JSON report and a grid (source, result) of the first cases.

  python benchmarks/demo_inpainting.py --stages imagen_demo/base imagen_demo/sr1 imagen_demo/sr2 \
      [--cases 48] [--json docs/editing_inpainting.json] [--grid docs/editing_inpainting.png]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
from PIL import Image

from imagen_jax import Imagen
from imagen_jax.data import shapes
from imagen_jax.data.shapes_eval import read_picture
from imagen_jax.images import antialiased_resize, grid


def cases(n: int, seed: int = 0):
  """(source scene, target scene: source plus the new shape on the right, prompt) per case."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    background = str(rng.choice(list(shapes.BACKGROUNDS)))
    colors = [c for c in shapes.COLORS if not (background == "black" and c == "purple")]
    color, new_color = (str(c) for c in rng.choice(colors, size=2, replace=False))
    kind, new_kind = (str(k) for k in rng.choice(shapes.SHAPES, size=2, replace=False))
    size = shapes.SIZES[""]
    old = shapes.Shape(kind, color, (0.25, 0.5), size)
    new = shapes.Shape(new_kind, new_color, (0.75, 0.5), size)
    prompt = (
      f"{shapes._article(f'{new_color} {new_kind}')} on the right on a {background} background"
    )
    out.append(
      (shapes.Scene((old,), background, ""), shapes.Scene((old, new), background, prompt), prompt)
    )
  return out


def read_right(images: np.ndarray, targets) -> dict:
  """Colour and shape accuracy of the right halves against the new shapes."""
  hits = {"color": 0, "shape": 0, "both": 0}
  for image, scene in zip(images, targets):
    got = read_picture(image[:, image.shape[1] // 2 :])
    want = scene.shapes[1]
    if got is None:
      continue
    ok = (got["color"] == want.color, got["shape"] == want.kind)
    hits["color"] += ok[0]
    hits["shape"] += ok[1]
    hits["both"] += all(ok)
  return {f"{k}_accuracy": round(v / len(targets), 4) for k, v in hits.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--stages", nargs="+", required=True)
  parser.add_argument("--cases", type=int, default=48)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--resample", type=int, default=1)
  parser.add_argument("--json")
  parser.add_argument("--grid")
  args = parser.parse_args()
  imagen = Imagen.load(args.stages)
  todo = cases(args.cases)
  sources = np.stack([shapes.render(src, 64) for src, _, _ in todo])
  mask = np.zeros((64, 64), bool)
  mask[:, 32:] = True
  t0 = time.perf_counter()
  out = imagen.sample(
    [p for _, _, p in todo], seed=args.seed, init_image=sources, mask=mask, resample=args.resample
  )
  seconds = time.perf_counter() - t0
  targets = [t for _, t, _ in todo]
  report = {"cases": args.cases, "resample": args.resample, "seconds": round(seconds, 1)}
  report["per_stage"] = []
  for images in out:
    size = images.shape[1]
    truth = np.stack([shapes.render(t, size) for t in targets])
    kept = all(
      np.array_equal(im[:, : size // 2], antialiased_resize(src, size)[:, : size // 2])
      for im, src in zip(images, sources)
    )
    report["per_stage"].append(
      {
        "size": size,
        **read_right(images, targets),
        "reader_on_ground_truth": read_right(truth, targets),
        "left_half_is_the_source": kept,
      }
    )
  print(json.dumps(report, indent=1))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
  if args.grid:
    k = min(8, args.cases)
    pairs = np.stack([x for i in range(k) for x in (sources[i], out[-1][i])])
    Image.fromarray(grid(pairs, columns=4)).save(args.grid)


if __name__ == "__main__":
  main()
