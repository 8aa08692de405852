"""The frame-quality gate of `painseeker predict`: sharpness and exposure of a face crop.

Both are measured independent of the camera's resolution: the crop (any size,
RGB uint8) is resized to `QUALITY_SIZE` x `QUALITY_SIZE` and converted to luma
(ITU-R 601 weights, 0..255). A crop smaller than that on a side is measured at
s x s, s its smaller side: upsampling would smooth it and a small but sharp crop
would read as blurred (low resolution is not blur).

* sharpness: the variance of the 4-neighbour Laplacian (the classic focus
  measure: a blurred or motion-smeared crop has little high-frequency energy) of
  the luma rescaled to a mean of 128, so that it does not depend on exposure (the
  raw variance falls with the square of the light: a half-lit sharp face would
  read as blurred; measured in docs/results.md);
* exposure: its mean luma on 0..1 (a frame taken with the light off, or a crop
  in the shadow of the nest, is dark).

`--min-sharpness` / `--min-exposure` turn crops below them into `skipped=blurred`
/ `skipped=dark` rows. The defaults below were measured by
`python tools/measure_video_defaults.py` on the nine real RatsPain crops in
tests/data/real_samples and on the synthetic twin with blur and darkening added;
the figures and the reasoning are in docs/results.md "The frame-quality gate".
No JAX, no TensorFlow.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

QUALITY_SIZE = 128
# Defaults (see the module docstring for where they were measured).
DEFAULT_MIN_SHARPNESS = 10.0
DEFAULT_MIN_EXPOSURE = 0.10

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def luma(image_HxWx3) -> np.ndarray:
  """RGB uint8 (an array or a PIL image, any size) -> s x s float32 luma, 0..255, with
  s = min(QUALITY_SIZE, the image's smaller side)."""
  img = image_HxWx3
  if not isinstance(img, Image.Image):
    img = Image.fromarray(np.asarray(img, np.uint8))
  s = max(3, min(QUALITY_SIZE, *img.size))
  if img.size != (s, s):
    img = img.resize((s, s), Image.BILINEAR, reducing_gap=None)
  return np.asarray(img, np.float32) @ _LUMA


def sharpness(luma_HxW: np.ndarray) -> float:
  """Variance of the 4-neighbour Laplacian (interior pixels) of the luma rescaled to a mean
  of 128 (0 for an all-black crop)."""
  y = np.asarray(luma_HxW, np.float32)
  mean = float(y.mean())
  if mean <= 0:
    return 0.0
  y = y * (128.0 / mean)
  lap = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4.0 * y[1:-1, 1:-1]
  return float(lap.var())


def exposure(luma_HxW: np.ndarray) -> float:
  """Mean luma on 0..1."""
  return float(np.mean(luma_HxW) / 255.0)


def measure(image_HxWx3) -> tuple[float, float]:
  """(sharpness, exposure) of an RGB uint8 crop (an array or a PIL image)."""
  y = luma(image_HxWx3)
  return sharpness(y), exposure(y)


def verdict(sharp: float, expo: float, min_sharpness: float, min_exposure: float) -> str:
  """ "" (scored), "dark" or "blurred" (dark first: a dark frame is also flat)."""
  if expo < min_exposure:
    return "dark"
  if sharp < min_sharpness:
    return "blurred"
  return ""
