"""Measures the defaults of `painseeker predict --boxes` on the synthetic twin and the real crops.

1. Face box from keypoints (painseeker_jax/tracking.py BOX_MARGIN, BOX_CENTER_DY): on every
   image of the twin with >= 3 visible eye/ear/nose landmarks, the ratio of the crop's side to
   the larger side of the landmarks' extent, and the offset of the crop's centre from the
   extent's centre, in crop sides.
3. The session summary's interval (painseeker_jax/stats.py block_bootstrap_mean_ci): its
   coverage of the true mean 0 on AR(1) series of 600 samples (200 series per
   autocorrelation), against the plain bootstrap (block 1).
2. The quality gate (painseeker_jax/quality.py): sharpness and exposure of the nine real RatsPain
   crops (tests/data/real_samples) and of the twin's images as they are, blurred (Gaussian,
   radius in pixels of the 256-px image), darkened (pixel values times a gain) and boxed
   tighter than the data set frames a face (the centre square of 90, 80, 70% of the side).

Run (needs the twin built, as by the README's quick start; about a minute):
  python tools/measure_video_defaults.py [--data_dir DIR]
The figures go to docs/results.md "Face boxes from keypoints" and "The frame-quality gate".
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import sys

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from painseeker_jax import quality, stats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACE_LANDMARKS = 5  # left/right eye, left/right ear, nose (the first five twin landmarks)
BLURS = (1.0, 2.0, 3.0, 5.0)
GAINS = (0.5, 0.25, 0.12, 0.06)
FRAMINGS = (0.9, 0.8, 0.7)  # a box's side over the data set's face crop (centred)


def _pct(a, qs=(1, 5, 50, 95)) -> str:
  return " / ".join(f"{v:.3g}" for v in np.percentile(np.asarray(a, np.float64), qs))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data_dir", default=None, help="TFDS data dir of the built twin")
  ap.add_argument("--max_images", type=int, default=400, help="twin images for the quality part")
  args = ap.parse_args(argv)
  import tensorflow_datasets as tfds

  source = tfds.data_source("ratspain/synthetic", data_dir=args.data_dir)
  examples = [source[s][i] for s in sorted(source) for i in range(len(source[s]))]

  ratio, dx, dy = [], [], []
  for ex in examples:
    vis = np.asarray(ex["landmark_visible"])[:FACE_LANDMARKS]
    if vis.sum() < 3:
      continue
    pts = np.asarray(ex["landmarks"])[:FACE_LANDMARKS][vis]
    lo, hi = pts.min(0), pts.max(0)
    side = float(max(hi - lo))
    centre = (lo + hi) / 2
    ratio.append(1.0 / side)  # the crop is the whole image: side 1 in these coordinates
    dx.append(0.5 - centre[0])  # in crop sides (the crop's side is 1 in these coordinates)
    dy.append(0.5 - centre[1])
  print(f"## Face box from keypoints ({len(ratio)} of {len(examples)} twin images, >= 3 visible)")
  print("percentiles 1 / 5 / 50 / 95")
  print(f"  crop side / keypoint extent: {_pct(ratio)}; IQR {_pct(ratio, (25, 75))}")
  print(f"  crop centre - extent centre, x, in crop sides: {_pct(dx)}")
  print(f"  crop centre - extent centre, y, in crop sides: {_pct(dy)}")

  rng = np.random.default_rng(0)
  pick = rng.choice(len(examples), size=min(args.max_images, len(examples)), replace=False)
  twin = [Image.open(io.BytesIO(_encoded(examples[i]))).convert("RGB") for i in sorted(pick)]
  real_paths = sorted(glob.glob(os.path.join(ROOT, "tests", "data", "real_samples", "*.jpg")))
  real = [Image.open(p).convert("RGB") for p in real_paths]

  def measured(images, blur=0.0, gain=1.0, framing=1.0):
    out = []
    for img in images:
      if framing < 1:  # a tighter box than the data set's: the centre square of that side
        side = int(min(img.size) * framing)
        x, y = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((x, y, x + side, y + side))
      if blur:  # the radius is given at 256 px; scale it to this image
        img = img.filter(ImageFilter.GaussianBlur(blur * img.width / 256))
      arr = np.asarray(img, np.float32) * gain
      out.append(quality.measure(np.clip(arr + 0.5, 0, 255).astype(np.uint8)))
    return np.asarray(out)

  print("\n## Quality gate (percentiles 1 / 5 / 50 / 95)")
  print("| images | sharpness | exposure |")
  print("|---|---|---|")
  rows = [("real crops (9)", measured(real)), (f"twin ({len(twin)})", measured(twin))]
  rows += [(f"twin, blur {b:g} px", measured(twin, blur=b)) for b in BLURS]
  rows += [(f"real, blur {b:g} px", measured(real, blur=b)) for b in BLURS]
  rows += [(f"twin, gain {g:g}", measured(twin, gain=g)) for g in GAINS]
  rows += [(f"real, gain {g:g}", measured(real, gain=g)) for g in GAINS]
  rows += [(f"real, box {f:.0%} of the side", measured(real, framing=f)) for f in FRAMINGS]
  rows += [(f"twin, box {f:.0%} of the side", measured(twin, framing=f)) for f in FRAMINGS]
  for name, s in rows:
    print(f"| {name} | {_pct(s[:, 0])} | {_pct(s[:, 1])} |")
  print("\n## Block bootstrap coverage (AR(1), n = 600, 200 series, nominal 95%)")
  print("| phi | median block | block bootstrap | plain bootstrap |")
  print("|---|---|---|---|")
  for phi in (0.0, 0.5, 0.9):
    gen = np.random.default_rng(1)
    cover, cover_plain, blocks = 0, 0, []
    for r in range(200):
      e = gen.normal(size=600)
      x = np.empty(600)
      x[0] = e[0]
      for t in range(1, 600):
        x[t] = phi * x[t - 1] + e[t]
      blocks.append(stats.block_length(x))
      lo, hi = stats.block_bootstrap_mean_ci(x, n_boot=500, seed=r)
      cover += lo <= 0 <= hi
      lo, hi = stats.block_bootstrap_mean_ci(x, block=1, n_boot=500, seed=r)
      cover_plain += lo <= 0 <= hi
    print(f"| {phi:g} | {np.median(blocks):g} | {cover / 2:.1f}% | {cover_plain / 2:.1f}% |")
  print(
    f"\ncurrent defaults: --min-sharpness {quality.DEFAULT_MIN_SHARPNESS:g}, "
    f"--min-exposure {quality.DEFAULT_MIN_EXPOSURE:g}"
  )
  return 0


def _encoded(example) -> bytes:
  """The twin example's image as encoded bytes (tfds data sources decode it to an array)."""
  image = example["image"]
  if isinstance(image, bytes | bytearray):
    return bytes(image)
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image)).save(buf, format="PNG")
  return buf.getvalue()


if __name__ == "__main__":
  sys.exit(main())
