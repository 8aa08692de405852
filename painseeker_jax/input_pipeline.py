"""Input pipeline: RatsPain (real or synthetic) or a lab's grimace set through
`tfds.data_source` + grain.

No TensorFlow: images are stored as JPEG in array_record files, read with
`tfds.data_source` (image decoding skipped) and decoded with PIL in grain
worker threads.

* Training (`train_batches`): decode, resize to `resize_size` (256), random
  `image_size` (224) crop, random horizontal flip; a seeded order per epoch;
  a fixed batch shape (the last incomplete batch of an epoch is dropped; the
  per-epoch reshuffle means every image is still seen). The threads decode
  single images; a fold's decoded images can stay in memory for its later
  epochs (`DecodedCache`, `config.input.cache_mb`). Neither changes a batch.
* Test (`eval_batches`): decode, resize to `image_size` (the whole face, no
  crop: why, README "Configuration"); every example exactly once in source
  order, the last batch padded and marked by `mask`; the threads decode single images too.

Batches are dicts of numpy arrays: `image` (uint8, B x H x W x 3; normalised
on the device by `inference.normalize`), `label` (the binary `pain` target), `mask`,
`index` (position in the source, to recover the filename), and the
analysis features `pain_level`, `rat_id`, `au_scores`, `head_pose`,
`landmarks`, `landmark_visible` (those the data set has: a lab's grimace set
has `pain_level` and `au_scores`).

The held-out groups of a run (`Groups`, `get_groups`): the six rats of
RatsPain (leave-one-rat-out, LORO) or the animals of a lab's grimace set, one
split each (leave-one-animal-out, LOAO).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
from collections.abc import Iterator, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from painseeker_jax import images
from tfds_ratspain import build
from tfds_ratspain.grimace import build as grimace_build

NUM_RATS = 6
GRIMACE = "grimace"  # config.dataset of a lab's own images (builder grimace/<config.scale>)
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
  dataset: str,
  splits: Sequence[str],
  data_dir: str | None = None,
  manual_dir: str | None = None,
  scale: str = "rgs",
) -> dict:
  """Prepares the data set if needed and opens one data source per split.

  `dataset`: a `ratspain/<dataset>` config, or `grimace` (a lab's set in `manual_dir`, builder
  `grimace/<scale>`)."""
  if dataset == GRIMACE:
    grimace_build.prepare(scale, manual_dir, data_dir=data_dir)
    b = grimace_build.builder(scale, data_dir)
  else:
    build.prepare(dataset, data_dir=data_dir, manual_dir=manual_dir)
    b = build.builder(dataset, data_dir)
  _check_splits(b, splits, manual_dir)
  decoders = {"image": tfds.decode.SkipDecoding()}
  return {s: b.as_data_source(split=s, decoders=decoders) for s in splits}


def _check_splits(b, splits: Sequence[str], manual_dir: str | None) -> None:
  """DataError (naming the build and what it holds) when a split expression such as
  `rat1+rat2` names a split the build lacks: a build from a manual directory that missed a
  rat's folder (or an animal's rows)."""
  have = list(b.info.splits)
  missing = [
    part
    for s in splits
    for part in dict.fromkeys(p.split("[")[0].strip() for p in s.split("+"))
    if part not in have
  ]
  if missing:
    raise build.DataError(
      f"{b.data_dir}: this build has no split {', '.join(dict.fromkeys(missing))} (it holds "
      f"{', '.join(have)}): the manual directory it was built from"
      f"{f' ({manual_dir})' if manual_dir else ''} lacked those images. Complete the "
      "directory, then rebuild with --overwrite (`python -m tfds_ratspain build ...` or "
      "`build-grimace ...`; it deletes the old build first)"
    )


@dataclasses.dataclass(frozen=True)
class Groups:
  """The groups of a leave-one-group-out run, one fold holding out one group.

  A fold is keyed by `held_out`: the rat number (1..6) for RatsPain, the split name
  (`animal_<id>`) of the animal for a lab's grimace set; 0 is the final model (nothing held
  out). `splits` maps every group of the data to its split, in the data's order (rats 1..6;
  the animals in order of first appearance in labels.csv); `names` to its name in the results
  (`rat3`; the animal id as in labels.csv). `unit` is "rat" (results keys `per_rat` and
  `loro`) or "animal" (`per_animal` and `loao`).
  """

  unit: str
  splits: dict
  names: dict

  @property
  def per_group(self) -> str:
    """results.json key of the per-group scores."""
    return f"per_{self.unit}"

  @property
  def pooled(self) -> str:
    """results.json key of the pooled scores (confusion matrices summed over the folds)."""
    return "loro" if self.unit == "rat" else "loao"

  def fold_splits(self, held_out) -> tuple[str, str | None]:
    """(train split over the other groups, test split); held_out 0: every group, no test."""
    if held_out == 0:
      return "+".join(self.splits.values()), None
    if held_out not in self.splits:
      raise ValueError(f"held-out {self.unit} {held_out!r} is not among {list(self.splits)}")
    train = "+".join(s for k, s in self.splits.items() if k != held_out)
    return train, self.splits[held_out]

  def held_out(self, folds) -> list:
    """The fold keys of `config.folds`: rat numbers (RatsPain, checked by `loro.check_folds`)
    or animal ids as in labels.csv (a lab's set; empty or None = every animal; an element
    `R01,R03` is split at commas, as `--config.folds=R01,R03` gives it). ValueError naming
    the known ids for an unknown one."""
    if self.unit == "rat":
      return list(folds)
    if not folds:
      return list(self.splits)
    by_name = {n: k for k, n in self.names.items()}
    out = []
    for f in folds:
      f = str(f).strip()
      for name in [f] if f in by_name else [x.strip() for x in f.split(",") if x.strip()]:
        if name not in by_name:
          raise ValueError(
            f"config.folds: unknown animal id {name!r}; the animals of the data set are "
            f"{', '.join(self.names.values())} (or leave config.folds empty for every animal)"
          )
        if by_name[name] not in out:
          out.append(by_name[name])
    return out


RATSPAIN_GROUPS = Groups(
  unit="rat",
  splits={r: f"rat{r}" for r in range(1, NUM_RATS + 1)},
  names={r: f"rat{r}" for r in range(1, NUM_RATS + 1)},
)


def check_dataset(config) -> None:
  """A lab's grimace set needs `config.manual_dir` and a known `config.scale` (ValueError)."""
  if config.dataset != GRIMACE:
    return
  if not config.manual_dir:
    raise ValueError(
      "config.dataset='grimace' needs the lab's directory (labels.csv + images/): pass "
      "--config.manual_dir=DIR (see tfds_ratspain/grimace/README.md)"
    )
  if config.scale not in grimace_build.SCALES:
    raise ValueError(
      f"config.scale={config.scale!r}; a grimace set is built as "
      f"{' or '.join(grimace_build.SCALES)}"
    )


def get_groups(config) -> Groups:
  """The groups of `config`'s data set; a lab's grimace set is built on first use (its animals
  are read from the build)."""
  if config.dataset != GRIMACE:
    return RATSPAIN_GROUPS
  check_dataset(config)
  grimace_build.prepare(config.scale, config.manual_dir, data_dir=config.data_dir)
  ids = grimace_build.animal_ids(grimace_build.builder(config.scale, config.data_dir))
  return Groups(unit="animal", splits={s: s for s in ids}, names=ids)


def training_data(config, source=None) -> dict:
  """What a work directory trains and tests on, for `layout.check_data`: every labelled image of
  `config`'s data set (`source`: the all-groups split, `Groups.fold_splits(0)[0]`, if already
  open). `{"images": n, "labels_sha256": SHA-256 over the (filename, pain level, AU scores),
  "images_sha256": SHA-256 over the (filename, SHA-256 of the stored image bytes)}`, both in
  filename order. Reads every record once (about a second for RatsPain's 1,138 images)."""
  if source is None:
    split = get_groups(config).fold_splits(0)[0]
    source = get_sources(config.dataset, [split], config.data_dir, config.manual_dir, config.scale)[
      split
    ]
  labels, images = [], []
  for i in range(len(source)):
    r = source[i]
    if int(r["pain"]) < 0:
      continue
    name = r["filename"]
    name = name.decode("utf-8") if isinstance(name, bytes) else str(name)
    au = np.asarray(r["au_scores"]).tolist() if "au_scores" in r else []
    labels.append(f"{name}\t{int(r['pain_level'])}\t{au}\n")
    images.append(f"{name}\t{hashlib.sha256(bytes(r['image'])).hexdigest()}\n")

  def digest(lines):
    return hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()

  return {"images": len(labels), "labels_sha256": digest(labels), "images_sha256": digest(images)}


def built_here(config) -> bool:
  """Whether `config`'s data set is generated on each machine (the synthetic twins), so that
  its JPEG bytes, not its labels, may differ between machines."""
  return config.dataset != GRIMACE and config.dataset.startswith("synthetic")


def fold_seed(held_out) -> int:
  """The integer a fold's randomness is derived from (`jax.random.fold_in`, `epoch_seed`): the
  rat number for RatsPain (0 for the final model); for an animal's split name, 1 + the first
  four bytes of its SHA-256 modulo 2**31 - 1, so that it depends only on the name (not on the
  order or number of animals, the machine or the Python process)."""
  if isinstance(held_out, str):
    digest = hashlib.sha256(held_out.encode("utf-8")).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (2**31 - 1)
  return held_out


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
  out = {k: np.asarray(example[k]) for k in _ANALYSIS_KEYS if k in example}
  out["label"] = np.int32(example["pain"])
  return out


class DecodedCache:
  """A fold's decoded, resized training examples, kept in memory across its epochs.

  The first epoch reads and decodes every image; later ones take them from here and only crop
  and flip (the same arrays as decoding again: the batches do not change). Holds at most
  `max_bytes` (`config.input.cache_mb`); examples beyond it are read and decoded every epoch.
  One cache per training source; safe to fill from the pipeline's threads.
  """

  def __init__(self, max_bytes: int):
    self.max_bytes = max_bytes
    self.nbytes = 0
    self._items = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._items)

  def get(self, key):
    return self._items.get(key)

  def put(self, key, example: dict) -> None:
    size = sum(np.asarray(v).nbytes for v in example.values())
    with self._lock:
      if key not in self._items and self.nbytes + size <= self.max_bytes:
        self._items[key] = example
        self.nbytes += size


class _Decode(grain.transforms.Map):
  def __init__(self, size: int, cache: DecodedCache | None = None):
    self.size = size
    self.cache = cache

  def map(self, element):
    index, example = element
    if example is None:  # `_Read` found it in the cache
      return dict(self.cache.get((index, self.size)))
    out = _fields(example)
    out["image"] = decode_resize(example["image"], self.size)
    out["index"] = np.int32(index)
    out["mask"] = np.bool_(True)
    if self.cache is not None:
      self.cache.put((index, self.size), out)
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
      img = _mirror(img)
    return dict(element, image=np.ascontiguousarray(img))


def _mirror(img: np.ndarray) -> np.ndarray:
  """img[:, ::-1] of an H x W x C uint8 image, copied pixel by pixel (a C-byte item each) rather
  than byte by byte: the same array in about half the time."""
  h, w, c = img.shape
  pixels = np.ascontiguousarray(img).view(f"V{c}")  # H x W x 1 items of C bytes
  return np.ascontiguousarray(pixels[:, ::-1]).view(np.uint8).reshape(h, w, c)


def labelled_indices(source) -> list[int]:
  """Positions of the examples with a binary label (pain >= 0)."""
  return [i for i in range(len(source)) if int(source[i]["pain"]) >= 0]


class _Read(grain.transforms.Map):
  def __init__(self, source, cache: DecodedCache | None = None, size: int = 0):
    self.source = source
    self.cache = cache
    self.size = size

  def map(self, i):
    if self.cache is not None and self.cache.get((i, self.size)) is not None:
      return i, None  # decoded before: `_Decode` takes it from the cache
    return i, self.source[i]


def epoch_seed(seed: int, held_out, epoch: int) -> int:
  """A 32-bit seed for one epoch's order and augmentation, from explicit ints (the fold's:
  `fold_seed`)."""
  return int(np.random.SeedSequence([seed, fold_seed(held_out), epoch]).generate_state(1)[0])


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
  cache: DecodedCache | None = None,
) -> Iterator[dict]:
  """One epoch of augmented training batches, fully determined by `seed` (not by the threads,
  processes or cache).

  With threads only, the threads decode single images and the batches are put together as they
  come, so a batch is ready once its images are, not after one thread has decoded all of them.
  `cache` (threads only: worker processes do not share it) keeps the decoded images for the
  fold's next epochs.
  """
  if resize_size < image_size:
    raise ValueError(
      f"config.resize_size ({resize_size}) must be >= config.image_size ({image_size})"
    )
  if len(indices) < batch_size:
    raise ValueError(
      f"only {len(indices)} training images, fewer than config.batch_size={batch_size}; "
      "lower the batch size"
    )
  if num_workers > 0:
    cache = None
  ds = (
    grain.MapDataset.source(list(indices))
    .seed(seed)
    .shuffle()
    .map(_Read(source, cache, resize_size))
    .map(_Decode(resize_size, cache))
    .random_map(_RandomCropFlip(image_size))
  )
  # Batch k holds the examples k * batch_size ... of `ds` either way (the same batches).
  if num_workers > 0:  # a process makes whole batches
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (outside an absl app too)
      flags.FLAGS.mark_as_parsed()
    it = (
      ds.batch(batch_size, drop_remainder=True)
      .to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch_size)
      )
      .mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    )
  else:  # threads make single images, batched in order as they come
    it = ds.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch_size)
    ).batch(batch_size, drop_remainder=True)
  yield from it


def eval_batches(
  source, *, batch_size: int, image_size: int, num_threads: int = 4
) -> Iterator[dict]:
  """Every labelled example exactly once, in source order; last batch padded, `mask`
  marks real rows. The threads decode single images (as in `train_batches`), so a held-out
  rat of a few batches still keeps every thread busy."""
  ds = (
    grain.MapDataset.source(labelled_indices(source))
    .map(_Read(source))
    .map(_Decode(image_size))
    .to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch_size)
    )
    .batch(batch_size, drop_remainder=False)
  )
  for batch in ds:
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
