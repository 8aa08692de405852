"""Image file types and colour conversion shared by the data set builder and `painseeker predict`.

Kept free of TensorFlow, TFDS and JAX so that the inference command and the
builder's validation read images the same way.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def to_rgb(img: Image.Image) -> Image.Image:
  """Any PIL mode -> 8-bit RGB (16-bit scaled, alpha composited on white)."""
  if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    arr = np.asarray(img, dtype=np.float64)
    hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, mode="L")
  if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    img = Image.alpha_composite(background, rgba)
  return img.convert("RGB")
