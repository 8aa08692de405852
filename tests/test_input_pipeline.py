"""Input pipeline: shapes, masks, augmentation, determinism."""

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


def _epoch(source, seed, **kw):
  args = dict(batch_size=8, image_size=48, resize_size=56, seed=seed, num_threads=2)
  args.update(kw)
  return list(ip.train_batches(source, ip.labelled_indices(source), **args))


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
  assert sorted(idx) == list(range(12))
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
