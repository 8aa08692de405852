"""Input pipeline: shapes, masks, augmentation, determinism."""

import grain
import numpy as np
import pytest

from painseeker_jax import input_pipeline as ip


@pytest.fixture(scope="module")
def sources(mini_data_dir):
  return ip.get_sources(
    "synthetic_mini", ["rat1+rat2+rat3+rat4+rat5", "rat6", "low_confidence"], data_dir=mini_data_dir
  )


def test_fold_splits():
  assert ip.fold_splits(3) == ("rat1+rat2+rat4+rat5+rat6", "rat3")
  with pytest.raises(ValueError, match="held-out rat 7"):
    ip.fold_splits(7)


def test_low_confidence_never_labelled(sources):
  assert ip.labelled_indices(sources["low_confidence"]) == []
  assert len(ip.labelled_indices(sources["rat6"])) == len(sources["rat6"]) == 12


def _epoch(source, seed, indices=None, **kw):
  args = dict(batch_size=8, image_size=48, resize_size=56, seed=seed, num_threads=2)
  args.update(kw)
  indices = ip.labelled_indices(source) if indices is None else indices
  return list(ip.train_batches(source, indices, **args))


def test_train_batches_shapes_and_determinism(sources):
  src = sources["rat1+rat2+rat3+rat4+rat5"]
  a, b, c = _epoch(src, 1), _epoch(src, 1), _epoch(src, 2)
  assert len(a) == 60 // 8  # fixed batch shape: the incomplete last batch is dropped
  for batch in a:
    assert batch["image"].shape == (8, 48, 48, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (8,) and set(np.unique(batch["label"])) <= {0, 1}
    assert batch["mask"].all()
    assert batch["landmarks"].shape == (8, 7, 2) and batch["head_pose"].shape == (8, 3)
  for x, y in zip(a, b):  # same seed -> identical batches
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  order_a = np.concatenate([x["index"] for x in a])
  order_c = np.concatenate([x["index"] for x in c])
  assert not np.array_equal(order_a, order_c)  # another epoch seed reshuffles
  assert len(set(order_a)) == len(order_a)  # no example twice within an epoch


class _CountingSource:
  """A data source that counts the records read."""

  def __init__(self, source):
    self.source, self.reads = source, 0

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    self.reads += 1
    return self.source[i]


def test_threads_and_cache_give_the_batches_of_the_plain_pipeline(sources):
  """Batch k of an epoch is examples k*B ... of the shuffled, decoded, cropped dataset, whether
  the images come from threads one at a time or from the cache (later epochs read nothing)."""
  src = sources["rat1+rat2+rat3+rat4+rat5"]
  idx = ip.labelled_indices(src)
  counting = _CountingSource(src)
  cache = ip.DecodedCache(10**9)
  for epoch, threads in ((0, 3), (1, 1), (2, 4)):
    plain = (
      grain.MapDataset.source(idx)
      .seed(epoch)
      .shuffle()
      .map(ip._Read(src))
      .map(ip._Decode(56))
      .random_map(ip._RandomCropFlip(48))
      .batch(8, drop_remainder=True)
    )
    counting.reads = 0
    got = _epoch(counting, epoch, idx, num_threads=threads, cache=cache)
    assert len(got) == len(plain) == 60 // 8
    for k, batch in enumerate(got):
      assert batch.keys() == plain[k].keys()
      for name in batch:
        np.testing.assert_array_equal(batch[name], plain[k][name], err_msg=f"{epoch} {k} {name}")
    # the first epoch reads (and caches) every example, the later ones none
    assert counting.reads == (len(idx) if epoch == 0 else 0)
    assert len(cache) == len(idx)


def test_cache_keeps_what_fits(sources):
  src = sources["rat1+rat2+rat3+rat4+rat5"]
  idx = ip.labelled_indices(src)
  one = sum(np.asarray(v).nbytes for v in ip._Decode(56).map((idx[0], src[idx[0]])).values())
  cache = ip.DecodedCache(10 * one)
  counting = _CountingSource(src)
  first = _epoch(counting, 0, idx, cache=cache)
  assert len(cache) == 10 and cache.nbytes <= 10 * one
  counting.reads = 0
  again = _epoch(counting, 0, idx, cache=cache)
  assert counting.reads == len(idx) - 10  # the rest is read and decoded again
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  empty, counting.reads = ip.DecodedCache(0), 0  # cache_mb = 0: every epoch reads everything
  for _ in range(2):
    _epoch(counting, 0, idx, cache=empty)
  assert counting.reads == 2 * len(idx) and len(empty) == 0 and empty.nbytes == 0


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_mirror_is_a_horizontal_flip(channels):
  img = np.random.default_rng(0).integers(0, 256, (5, 7, channels), dtype=np.uint8)
  out = ip._mirror(img[1:4, 2:6])
  np.testing.assert_array_equal(out, img[1:4, 2:6][:, ::-1])
  assert out.flags.c_contiguous and out.dtype == np.uint8


def test_train_augmentation_is_crop_and_flip_of_resized_image(sources):
  src = sources["rat1+rat2+rat3+rat4+rat5"]
  batch = _epoch(src, 3)[0]
  flips = 0
  for img, idx in zip(batch["image"], batch["index"]):
    full = ip.decode_resize(src[int(idx)]["image"], 56)
    found = None
    for flip in (False, True):
      ref = full[:, ::-1] if flip else full
      for y in range(9):
        for x in range(9):
          if np.array_equal(ref[y : y + 48, x : x + 48], img):
            found = flip
    assert found is not None, f"example {idx} is not a 48px crop (or its mirror) of the 56px image"
    flips += found
  assert 0 < flips < 8 or len(batch["image"]) < 4  # both flipped and unflipped occur


def test_eval_batches_cover_every_example_once_with_padding(sources):
  src = sources["rat6"]
  batches = list(ip.eval_batches(src, batch_size=5, image_size=40, num_threads=2))
  assert len(batches) == 3  # 12 examples -> 5 + 5 + 2 (padded to 5)
  assert all(b["image"].shape == (5, 40, 40, 3) for b in batches)
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 12 and not mask[-3:].any()
  idx = np.concatenate([b["index"] for b in batches])[mask]
  assert list(idx) == list(range(12))  # in source order, whichever thread decoded which image
  np.testing.assert_array_equal(batches[-1]["image"][2:], 0)
  labels = np.concatenate([b["label"] for b in batches])[mask]
  np.testing.assert_array_equal(labels, [int(src[int(i)]["pain"]) for i in idx])


def test_resize_smaller_than_crop_is_an_error(sources):
  with pytest.raises(ValueError, match="resize_size"):
    _epoch(sources["rat6"], 0, image_size=64, resize_size=56)


def test_normalize_uses_imagenet_statistics():
  from painseeker_jax import inference

  x = np.full((1, 2, 2, 3), 255, np.uint8)
  out = np.asarray(inference.normalize(x))
  expected = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)
