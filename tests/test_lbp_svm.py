"""LBP + linear SVM baseline: hand-checked LBP codes, feature cache, LORO end to end."""

import csv
import io
import json
import os

import numpy as np
import pytest
from conftest import mini_config
from PIL import Image

from painseeker_jax import lbp_svm

# Neighbour i of skimage's LBP sits at angle 2 pi i / P counter-clockwise from
# east (i = 0 E, 1 NE, 2 N, 3 NW, 4 W, 5 SW, 6 S, 7 SE; rows grow downwards), is
# 1 when >= the centre, and reads 0 outside the image. `nri_uniform` labels for
# P = 8: 0 = no ones, 57 = all ones, 58 = non-uniform (> 2 transitions), and a
# single run of n ones (1..7) starting at neighbour s (going counter-clockwise)
# gets 1 + 8 (n - 1) + ((8 - s) mod 8).


def _ramp():
  """6x6 ramp 20 + 10 col + row: every pixel's neighbours are brighter to the east and south."""
  r, c = np.mgrid[0:6, 0:6]
  return (20 + 10 * c + r).astype(np.uint8)


# By hand, for the ramp with R = 1 (I - centre = 10 dcol + drow along the
# circle: > 0 for E, NE, S, SE, < 0 for N, NW, W, SW; no ties):
#   interior and left column: ones {S, SE, E, NE} = run of 4 from s = 6 -> 1 + 24 + 2 = 27
#   top row: N side outside -> ones {S, SE, E}, run of 3 from 6 -> 1 + 16 + 2 = 19
#   bottom row: S side outside -> ones {E, NE}, run of 2 from 0 -> 1 + 8 + 0 = 9
#   right column: E side outside -> ones {S}, run of 1 from 6 -> 1 + 0 + 2 = 3
#   bottom-right corner: E and S sides outside -> no ones -> 0
RAMP_CODES = np.array(
  [
    [19, 19, 19, 19, 19, 3],
    [27, 27, 27, 27, 27, 3],
    [27, 27, 27, 27, 27, 3],
    [27, 27, 27, 27, 27, 3],
    [27, 27, 27, 27, 27, 3],
    [9, 9, 9, 9, 9, 0],
  ]
)


def test_lbp_codes_hand_checked():
  np.testing.assert_array_equal(lbp_svm.lbp_codes(_ramp(), 1, 8), RAMP_CODES)
  # A lone bright pixel: all its neighbours darker -> 0; every dark pixel sees
  # neighbours >= itself (ties and the outside 0 count as 1) -> 57 (all ones).
  spot = np.zeros((5, 5), np.uint8)
  spot[2, 2] = 100
  expected = np.full((5, 5), 57)
  expected[2, 2] = 0
  np.testing.assert_array_equal(lbp_svm.lbp_codes(spot, 1, 8), expected)
  # A saddle: E, W brighter, N, S darker, diagonals (interpolated) brighter:
  # bits 1 1 0 1 1 1 0 1 -> 4 transitions -> non-uniform, 58.
  r, c = np.mgrid[0:5, 0:5]
  saddle = (50 + 20 * (c - 2) ** 2 - 10 * (r - 2) ** 2).astype(np.uint8)
  assert lbp_svm.lbp_codes(saddle, 1, 8)[2, 2] == 58


def test_lbp_histograms_hand_checked():
  bins = lbp_svm.num_bins(8)
  assert bins == 59
  # One cell: counts of the code image / 36.
  h = lbp_svm.lbp_histograms(_ramp(), 1, 8, grid=1)
  expected = np.zeros(bins)
  expected[[27, 19, 9, 3, 0]] = [20, 5, 5, 5, 1]
  assert h.dtype == np.float32 and h.shape == (bins,)
  np.testing.assert_allclose(h, expected / 36, rtol=1e-6)
  # 2x2 cells of 3x3 pixels, row-major, each normalised to sum 1.
  h = lbp_svm.lbp_histograms(_ramp(), 1, 8, grid=2).reshape(4, bins)
  cells = [{19: 3, 27: 6}, {19: 2, 3: 3, 27: 4}, {27: 6, 9: 3}, {27: 4, 3: 2, 9: 2, 0: 1}]
  for got, counts in zip(h, cells):
    want = np.zeros(bins)
    for code, n in counts.items():
      want[code] = n / 9
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("grid", [4, 8, 16])
def test_feature_dimension(grid):
  rng = np.random.default_rng(grid)
  gray = rng.integers(0, 256, (64, 64), dtype=np.uint8)
  for radius in (1, 3):
    h = lbp_svm.lbp_histograms(gray, radius, 8, grid)
    assert h.shape == (grid * grid * 59,) == (lbp_svm.feature_dim(grid),)
    np.testing.assert_allclose(h.reshape(grid * grid, 59).sum(1), 1.0, rtol=1e-5)
  # Sizes not divisible by the grid: cells differ by one pixel, still sum to 1.
  h = lbp_svm.lbp_histograms(gray[:61, :63], 1, 8, grid)
  np.testing.assert_allclose(h.reshape(grid * grid, 59).sum(1), 1.0, rtol=1e-5)


def test_to_gray_is_bt601_luma():
  rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
  np.testing.assert_array_equal(lbp_svm.to_gray(rgb), [[76, 150, 29, 18]])  # 0.299, 0.587, 0.114


def test_precomputed_kernel_svm_equals_linear_svc():
  from sklearn.svm import SVC

  rng = np.random.default_rng(0)
  x = rng.gamma(0.5, size=(80, 16, 59)).astype(np.float32)
  x = (x / x.sum(-1, keepdims=True)).reshape(80, -1)
  y = (x[:, :59].argmax(1) < 30).astype(np.int64)
  ref = SVC(kernel="linear", C=1.0).fit(x[:60], y[:60]).decision_function(x[60:])
  got = lbp_svm.svm_decisions(lbp_svm.gram_matrix(x), y, np.arange(60), np.arange(60, 80), 1.0)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


class _Source(list):
  """A list of records standing in for a TFDS data source."""

  split = "fake"


def _jpeg(seed):
  rng = np.random.default_rng(seed)
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, "JPEG")
  return buf.getvalue()


def _fake_config(tmp_path):
  config = mini_config(
    str(tmp_path),
    **{"model.name": "lbp_svm", "image_size": 32, "lbp.grid": 4, "lbp.num_workers": 1},
  )
  return config


def test_features_cache_hit_and_corrupt_cache(tmp_path, monkeypatch):
  source = _Source({"filename": f"r/{i}.jpg".encode(), "image": _jpeg(i)} for i in range(5))
  config, cache = _fake_config(tmp_path), str(tmp_path / "cache")
  x = lbp_svm.features(source, [4, 0, 2], config, cache)
  assert x.shape == (3, 4 * 4 * 59) and x.dtype == np.float32
  np.testing.assert_array_equal(x[1], lbp_svm.image_features(source[0]["image"], 32, 1, 8, 4))
  (path,) = [os.path.join(cache, f) for f in os.listdir(cache)]
  assert "synthetic_mini_fake_s32_R1_P8_g4" in path and path.endswith(".npy")

  real_extract = lbp_svm.extract

  def fail(*args, **kwargs):
    raise AssertionError("features were recomputed")

  monkeypatch.setattr(lbp_svm, "extract", fail)
  np.testing.assert_array_equal(lbp_svm.features(source, [4, 0, 2], config, cache), x)  # cache hit
  with pytest.raises(AssertionError, match="recomputed"):  # other images: another key
    lbp_svm.features(source, [4, 0], config, cache)
  rebuilt = _Source(dict(r) for r in source)  # the same names, one image re-encoded
  rebuilt[0]["image"] = _jpeg(7)
  with pytest.raises(AssertionError, match="recomputed"):
    lbp_svm.features(rebuilt, [4, 0, 2], config, cache)

  monkeypatch.setattr(lbp_svm, "extract", real_extract)
  for bad in (b"garbage", None):
    if bad is None:  # a readable .npy of the wrong shape
      np.save(path, np.zeros((2, 3), np.float32))
    else:
      with open(path, "wb") as f:
        f.write(bad)
    np.testing.assert_array_equal(lbp_svm.features(source, [4, 0, 2], config, cache), x)
    np.testing.assert_array_equal(np.load(path), x)  # rewritten
  assert not [f for f in os.listdir(cache) if ".tmp" in f]


def _read_predictions(workdir):
  with open(os.path.join(workdir, "predictions.csv")) as f:
    return list(csv.DictReader(f))


def test_run_lbp_svm_end_to_end(mini_data_dir, tmp_path, monkeypatch):
  from painseeker_jax import input_pipeline

  config = mini_config(mini_data_dir, **{"model.name": "lbp_svm", "image_size": 64, "lbp.grid": 4})
  assert config.lbp.num_workers == 2  # the process pool path
  workdir = str(tmp_path / "run")
  results = lbp_svm.run_lbp_svm(config, workdir)

  sources = input_pipeline.get_sources(
    config.dataset, [f"rat{r}" for r in range(1, 7)], mini_data_dir
  )
  n_test = sum(len(input_pipeline.labelled_indices(s)) for s in sources.values())
  rows = _read_predictions(workdir)
  assert len(rows) == n_test
  assert list(rows[0]) == ["filename", "rat_id", "pain_level", "pain", "p_pain", "pred"]
  assert len({r["filename"] for r in rows}) == n_test
  for r in rows:
    p = float(r["p_pain"])
    assert 0 < p < 1
    assert abs(p - 0.5) < 1e-6 or int(r["pred"]) == int(p > 0.5)
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["config"]["model"]["name"] == "lbp_svm"
  assert list(saved["per_rat"]) == [f"rat{k}" for k in range(1, 7)]
  assert saved["loro"] == results["loro"]
  assert sum(saved["loro"][k] for k in ("tp", "fp", "tn", "fn")) == n_test
  with open(os.path.join(workdir, "results.md")) as f:
    assert "| LBP (R=1, 4x4) + SVM |" in f.read()

  # The pool's features are the serial ones, in order.
  src = sources["rat3"]
  idx = input_pipeline.labelled_indices(src)
  np.testing.assert_array_equal(
    lbp_svm.features(src, idx, config, os.path.join(workdir, "lbp_features")),
    lbp_svm._extract_chunk([src[i]["image"] for i in idx], 64, 1, 8, 4),
  )

  # A rerun loads the cached features and gives the same predictions.
  before = open(os.path.join(workdir, "predictions.csv")).read()
  monkeypatch.setattr(lbp_svm, "extract", lambda *a, **k: pytest.fail("features were recomputed"))
  assert lbp_svm.run_lbp_svm(config, workdir)["loro"] == results["loro"]
  assert open(os.path.join(workdir, "predictions.csv")).read() == before

  # The work directory belongs to this configuration.
  other = mini_config(mini_data_dir, **{"model.name": "lbp_svm", "image_size": 64, "lbp.grid": 8})
  with pytest.raises(ValueError, match="another configuration"):
    lbp_svm.run_lbp_svm(other, workdir)


def test_title_and_config_checks(tmp_path):
  from painseeker_jax import loro

  config = _fake_config(tmp_path)
  assert loro.method_title(config) == "LBP (R=1, 4x4) + SVM"
  config.lbp.radius, config.lbp.grid = 3, 16
  assert loro.method_title(config) == "LBP (R=3, 16x16) + SVM"
  lbp_svm.validate_config(config)
  config.model.name = "resnet18"
  with pytest.raises(ValueError, match="lbp_svm"):
    lbp_svm.validate_config(config)
  config.model.name, config.lbp.grid = "lbp_svm", 0
  with pytest.raises(ValueError, match="grid"):
    lbp_svm.validate_config(config)
  config.lbp.grid, config.folds = 4, (1, 2, 1)  # a repeat would count rat 1's images twice
  with pytest.raises(ValueError, match=r"names 1 more than once"):
    lbp_svm.validate_config(config)
