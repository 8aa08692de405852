"""Input pipeline: RatsPain (real or synthetic) through `tfds.data_source` + grain.

No TensorFlow: images are stored as JPEG in array_record files, read with
`tfds.data_source` (image decoding skipped) and decoded with PIL in grain
worker threads.

* Training (`train_batches`): decode, resize to `resize_size` (256), random
  `image_size` (224) crop, random horizontal flip; a seeded order per epoch;
  a fixed batch shape (the last incomplete batch of an epoch is dropped; the
  per-epoch reshuffle means every image is still seen).
* Test (`eval_batches`): decode, resize to `image_size`; every example exactly
  once in source order, the last batch padded and marked by `mask`.

Batches are dicts of numpy arrays: `image` (uint8, B x H x W x 3; normalised
on the device by `inference.normalize`), `label` (the binary `pain` target), `mask`,
`index` (position in the source, to recover the filename), and the
analysis features `pain_level`, `rat_id`, `au_scores`, `head_pose`,
`landmarks`, `landmark_visible`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from painseeker_jax import images
from tfds_ratspain import build

NUM_RATS = 6
_ANALYSIS_KEYS = ("pain_level", "rat_id", "au_scores", "head_pose", "landmarks", "landmark_visible")


def fold_splits(
  held_out: int, rats: Sequence[int] = range(1, NUM_RATS + 1)
) -> tuple[str, str | None]:
  """Leave-one-rat-out split expressions: (train over the other rats, test rat).

  `held_out=0` is the deployment model: trained on every rat, nothing held out.
  """
  if held_out == 0:
    return "+".join(f"rat{r}" for r in rats), None
  if held_out not in rats:
    raise ValueError(f"held-out rat {held_out} is not among the rats {list(rats)}")
  train = "+".join(f"rat{r}" for r in rats if r != held_out)
  return train, f"rat{held_out}"


def get_sources(
  dataset: str, splits: Sequence[str], data_dir: str | None = None, manual_dir: str | None = None
) -> dict:
  """Prepares `ratspain/<dataset>` if needed and opens one data source per split."""
  build.prepare(dataset, data_dir=data_dir, manual_dir=manual_dir)
  b = build.builder(dataset, data_dir)
  decoders = {"image": tfds.decode.SkipDecoding()}
  return {s: b.as_data_source(split=s, decoders=decoders) for s in splits}


def decode_resize(image_bytes: bytes, size: int) -> np.ndarray:
  """JPEG bytes -> size x size x 3 uint8 (area-averaging resize, no aspect kept).

  Faces are square crops in RatsPain; `draft` lets the JPEG decoder skip
  detail it would throw away when the target is much smaller.
  """
  img = Image.open(io.BytesIO(image_bytes))
  img.draft("RGB", (size, size))
  img = images.to_rgb(img)
  if img.size != (size, size):
    img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
  return np.asarray(img, dtype=np.uint8)


def _fields(example: dict) -> dict:
  out = {k: np.asarray(example[k]) for k in _ANALYSIS_KEYS}
  out["label"] = np.int32(example["pain"])
  return out


class _Decode(grain.transforms.Map):
  def __init__(self, size: int):
    self.size = size

  def map(self, element):
    index, example = element
    out = _fields(example)
    out["image"] = decode_resize(example["image"], self.size)
    out["index"] = np.int32(index)
    out["mask"] = np.bool_(True)
    return out


class _RandomCropFlip(grain.transforms.RandomMap):
  def __init__(self, crop: int):
    self.crop = crop

  def random_map(self, element, rng: np.random.Generator):
    img = element["image"]
    h, w = img.shape[:2]
    y = int(rng.integers(0, h - self.crop + 1))
    x = int(rng.integers(0, w - self.crop + 1))
    img = img[y : y + self.crop, x : x + self.crop]
    if rng.random() < 0.5:
      img = img[:, ::-1]
    return dict(element, image=np.ascontiguousarray(img))


def labelled_indices(source) -> list[int]:
  """Positions of the examples with a binary label (pain >= 0)."""
  return [i for i in range(len(source)) if int(source[i]["pain"]) >= 0]


class _Read(grain.transforms.Map):
  def __init__(self, source):
    self.source = source

  def map(self, i):
    return i, self.source[i]


def epoch_seed(seed: int, held_out: int, epoch: int) -> int:
  """A 32-bit seed for one epoch's order and augmentation, from explicit ints."""
  return int(np.random.SeedSequence([seed, held_out, epoch]).generate_state(1)[0])


def train_batches(
  source,
  indices: Sequence[int],
  *,
  batch_size: int,
  image_size: int,
  resize_size: int,
  seed: int,
  num_threads: int = 4,
  num_workers: int = 0,
) -> Iterator[dict]:
  """One epoch of augmented training batches, fully determined by `seed`."""
  if resize_size < image_size:
    raise ValueError(
      f"config.resize_size ({resize_size}) must be >= config.image_size ({image_size})"
    )
  if len(indices) < batch_size:
    raise ValueError(
      f"only {len(indices)} training images, fewer than config.batch_size={batch_size}; "
      "lower the batch size"
    )
  ds = (
    grain.MapDataset.source(list(indices))
    .seed(seed)
    .shuffle()
    .map(_Read(source))
    .map(_Decode(resize_size))
    .random_map(_RandomCropFlip(image_size))
    .batch(batch_size, drop_remainder=True)
  )
  it = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch_size)
  )
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (outside an absl app too)
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  yield from it


def eval_batches(
  source, *, batch_size: int, image_size: int, num_threads: int = 4
) -> Iterator[dict]:
  """Every labelled example exactly once, in source order; last batch padded, `mask`
  marks real rows."""
  ds = (
    grain.MapDataset.source(labelled_indices(source))
    .map(_Read(source))
    .map(_Decode(image_size))
    .batch(batch_size, drop_remainder=False)
  )
  for batch in ds.to_iter_dataset(
    grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch_size)
  ):
    yield pad_batch(batch, batch_size)


def pad_batch(batch: dict, batch_size: int) -> dict:
  """Pads every array to `batch_size` rows with zeros; padded rows have mask False."""
  n = len(batch["mask"])
  if n == batch_size:
    return batch
  return {
    k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
    for k, v in batch.items()
  }
