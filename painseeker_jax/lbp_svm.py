"""LBP + linear SVM: the paper's best hand-crafted baseline, under the same LORO protocol.

Each labelled face is decoded and resized to `config.image_size` exactly as the
deep models' test images are (`input_pipeline.decode_resize`, no crop, no
flip), then converted to grayscale with the ITU-R BT.601 luma weights,
Y = 0.299 R + 0.587 G + 0.114 B, rounded to uint8 (the weights of PIL's "L"
mode).

Coding: scikit-image `local_binary_pattern(gray, P, R, method="nri_uniform")`,
P = 8 sampling points on a circle of radius R (1 or 3; the diagonal points
bilinearly interpolated, points outside the image read as 0), a neighbour
counted as 1 when it is >= the centre. "nri_uniform" is the uniform
("u2") LBP of Ojala et al. (2002) without rotation invariance: every pattern
with at most two 0/1 transitions around the circle keeps its own label (for
P = 8: all-zeros, all-ones and 8 rotations x 7 run lengths = 58 labels) and
all other patterns share one label, so P (P - 1) + 3 = 59 bins. It is the
LBP^{u2}_{8,R} that Ahonen et al. (2006) introduced for faces and that most
facial-expression work uses; the paper does not say which LBP it used. It
keeps orientation (a face is upright, so a horizontal edge and a vertical
one should differ) while merging the rare non-uniform patterns, which keeps
the histograms short enough (59 bins) for 16 x 16 cells of 14 x 14 pixels.

Histograms: the code image is cut into `grid` x `grid` cells (equal sizes
when `grid` divides the image size, otherwise sizes differing by at most one
pixel, `np.array_split`); each cell's 59-bin histogram is L1-normalised
(counts / pixels in the cell, so each cell sums to 1 and cells weigh equally
whatever their size) and the cells are concatenated row-major: a float32
vector of grid * grid * 59 values (944, 3,776 or 15,104 for 4, 8, 16).

Classifier: exact libsvm C-SVC with a linear kernel, C = config.lbp.svm_c
(1), on the raw (unscaled) histogram features; one model per held-out rat,
fitted on the labelled images of the other five rats; deterministic. It is run
as `SVC(kernel="precomputed")` on the Gram matrix X X^T (float64, BLAS),
computed once over all images and sliced per fold: the same dual problem and
solution as `SVC(kernel="linear", C=1)` (tests/test_lbp_svm.py checks the
decision values agree), but libsvm's own kernel loop is slow on dense
15,104-d features (the precomputed kernel is about 40 times faster per fold;
figures: benchmarks/README.md, "LBP + SVM"). `LinearSVC` would change the
model (squared hinge, penalised intercept), so it is not used.

Outputs (`run_lbp_svm`): the rows of `loro.evaluate_folds` and the files of
`loro.write_outputs` (results.json, results.md, predictions.csv).
`p_pain` is the logistic of the SVM decision value, 1 / (1 + exp(-d)): a
monotone score for ranking and ROC curves, NOT a calibrated probability;
`pred` = d > 0 (the SVM's own decision), i.e. p_pain > 0.5 up to rounding.

Features are computed in a process pool (`config.lbp.num_workers`, spawned,
not forked, since the parent may hold JAX's threads) and cached as .npy per
(dataset, split, image size, R, P, grid, filenames): see `features`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Sequence

import ml_collections
import numpy as np
from skimage.feature import local_binary_pattern

from painseeker_jax import input_pipeline, layout

log = logging.getLogger("painseeker")

METHOD = "nri_uniform"
LUMA_601 = (0.299, 0.587, 0.114)
# Bump when the feature definition changes (coding, normalisation, grayscale):
# it is part of every cache key, so old caches are never read as new features.
FEATURE_VERSION = 1


def num_bins(points: int) -> int:
  """Labels of `nri_uniform` LBP with `points` neighbours: P (P - 1) + 3 (59 for P = 8)."""
  return points * (points - 1) + 3


def feature_dim(grid: int, points: int = 8) -> int:
  return grid * grid * num_bins(points)


def to_gray(rgb_uint8: np.ndarray) -> np.ndarray:
  """H x W x 3 uint8 RGB -> H x W uint8 luma, ITU-R BT.601 weights, rounded."""
  y = np.asarray(rgb_uint8, np.float32) @ np.asarray(LUMA_601, np.float32)
  return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def lbp_codes(gray: np.ndarray, radius: float, points: int) -> np.ndarray:
  """H x W `nri_uniform` LBP labels in [0, num_bins(points)) as int32."""
  gray = np.asarray(gray)
  if gray.ndim != 2:
    raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
  return local_binary_pattern(gray, points, radius, method=METHOD).astype(np.int32)


def lbp_histograms(gray: np.ndarray, radius: float, points: int, grid: int) -> np.ndarray:
  """Concatenated per-cell LBP histograms of one grayscale image.

  `gray` is an H x W uint8 (or integer) image with H, W >= `grid`; `radius`
  and `points` are the LBP circle radius R and the number of neighbours P;
  `grid` is the number of cells per side (grid x grid cells, row-major).

  Returns a float32 vector of grid * grid * (P (P - 1) + 3) values; each
  cell's histogram sums to 1 (counts divided by the cell's pixel count).
  """
  codes = lbp_codes(gray, radius, points)
  h, w = codes.shape
  if grid < 1 or grid > min(h, w):
    raise ValueError(f"grid={grid} must be in 1..{min(h, w)} for a {h}x{w} image")
  bins = num_bins(points)
  out = np.empty((grid, grid, bins), np.float32)
  for i, band in enumerate(np.array_split(codes, grid, axis=0)):
    for j, cell in enumerate(np.array_split(band, grid, axis=1)):
      out[i, j] = np.bincount(cell.ravel(), minlength=bins) / cell.size
  return out.reshape(-1)


def image_features(
  image_bytes: bytes, size: int, radius: float, points: int, grid: int
) -> np.ndarray:
  """Encoded image -> decode, resize to size x size, BT.601 luma, `lbp_histograms`."""
  rgb = input_pipeline.decode_resize(image_bytes, size)
  return lbp_histograms(to_gray(rgb), radius, points, grid)


def _extract_chunk(
  images: list[bytes], size: int, radius: float, points: int, grid: int
) -> np.ndarray:
  """Worker: features of a list of encoded images (top level, so picklable)."""
  out = np.empty((len(images), feature_dim(grid, points)), np.float32)
  for n, b in enumerate(images):
    out[n] = image_features(b, size, radius, points, grid)
  return out


def extract(
  images: Sequence[bytes], size: int, radius: float, points: int, grid: int, num_workers: int = 1
) -> np.ndarray:
  """N x D features of encoded images, in order; a spawned process pool when num_workers > 1."""
  images = list(images)
  if num_workers <= 1 or len(images) < 2:
    return _extract_chunk(images, size, radius, points, grid)
  # A few chunks per worker: balanced without pickling one image per task.
  n_chunks = min(len(images), 4 * num_workers)
  bounds = np.linspace(0, len(images), n_chunks + 1).astype(int)
  chunks = [images[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
  ctx = multiprocessing.get_context("spawn")  # never fork a process that may run JAX threads
  with concurrent.futures.ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx) as pool:
    parts = list(
      pool.map(_extract_chunk, chunks, *[[v] * len(chunks) for v in (size, radius, points, grid)])
    )
  return np.concatenate(parts, axis=0)


# ---------------------------------------------------------------------------
# Cached features of a data source.


def _split_name(source) -> str:
  return str(getattr(source, "split", None) or "unknown")


def cache_path(
  cache_dir: str,
  dataset: str,
  split: str,
  size: int,
  radius,
  points: int,
  grid: int,
  filenames: Sequence[str],
  images: Sequence[bytes],
) -> str:
  """The cache file of a feature matrix:

  `<cache_dir>/lbp-v<version>_<dataset>_<split>_s<size>_R<R>_P<P>_g<grid>_<sha>.npy`, the sha
  of the filenames and the image bytes in order (a data set rebuilt with other images under the
  same names, e.g. by other imaging-library versions, gets other features).
  """
  h = hashlib.sha256()
  for name, image in zip(filenames, images, strict=True):
    h.update(name.encode("utf-8") + b"\0" + hashlib.sha256(image).digest())
  digest = h.hexdigest()[:16]
  safe = lambda s: "".join(ch if ch.isalnum() or ch in "+-._" else "-" for ch in str(s))  # noqa: E731
  name = (
    f"lbp-v{FEATURE_VERSION}_{safe(dataset)}_{safe(split)}_s{size}_R{safe(radius)}_P{points}_g{grid}"
    f"_{digest}.npy"
  )
  return os.path.join(cache_dir, name)


def _load_cache(path: str, shape: tuple[int, int]) -> np.ndarray | None:
  """The cached array, or None when missing, unreadable or not the expected shape/dtype/values."""
  if not os.path.exists(path):
    return None
  try:
    x = np.load(path, allow_pickle=False)
  except Exception as e:  # truncated or garbage file: recompute
    log.warning("LBP cache %s unreadable (%s: %s); recomputing", path, type(e).__name__, e)
    return None
  if x.shape != shape or x.dtype != np.float32 or not np.isfinite(x).all():
    log.warning(
      "LBP cache %s holds %s %s, expected %s float32; recomputing", path, x.shape, x.dtype, shape
    )
    return None
  return x


def _save_atomic(path: str, x: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with layout.replacing(path) as tmp, open(tmp, "wb") as f:
    np.save(f, x, allow_pickle=False)


def features(
  source, indices: Sequence[int], config: ml_collections.ConfigDict, cache_dir: str
) -> np.ndarray:
  """N x D LBP features of `source[i]` for i in `indices` (in that order), cached.

  The cache file (see `cache_path`) is keyed by `config.dataset`, the source's
  split, `config.image_size`, R, P, grid and a hash of the filenames and images in order;
  a rerun loads it, a corrupt or mismatched file is recomputed, and a new one
  is written to a temporary file and renamed.
  """
  return features_many([(source, indices)], config, cache_dir)[0]


def features_many(
  items: Sequence[tuple], config: ml_collections.ConfigDict, cache_dir: str
) -> list[np.ndarray]:
  """`features` of several (source, indices) pairs, the missing ones extracted in one
  process pool."""
  lbp = config.lbp
  out, todo = [], []
  for n, (source, indices) in enumerate(items):
    records = [source[int(i)] for i in indices]
    path = cache_path(
      cache_dir,
      config.dataset,
      _split_name(source),
      config.image_size,
      lbp.radius,
      lbp.points,
      lbp.grid,
      [_text(r["filename"]) for r in records],
      [bytes(r["image"]) for r in records],
    )
    x = _load_cache(path, (len(records), feature_dim(lbp.grid, lbp.points)))
    if x is None:
      todo.append((n, path, [r["image"] for r in records]))
    else:
      log.info("LBP features: loaded %s", path)
    out.append(x)
  if todo:
    t0 = time.time()
    x = extract(
      [b for _, _, images in todo for b in images],
      config.image_size,
      lbp.radius,
      lbp.points,
      lbp.grid,
      num_workers=lbp.num_workers,
    )
    log.info(
      "LBP features of %d images in %.1f s (%d workers)", len(x), time.time() - t0, lbp.num_workers
    )
    start = 0
    for n, path, images in todo:
      out[n] = x[start : start + len(images)]
      start += len(images)
      _save_atomic(path, out[n])
  return out


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


# ---------------------------------------------------------------------------
# The LORO experiment.


def validate_config(config: ml_collections.ConfigDict) -> None:
  from painseeker_jax import loro  # noqa: PLC0415  (JAX: not imported by the feature workers)

  if config.model.name != "lbp_svm":
    raise ValueError(f"config.model.name={config.model.name!r}; run_lbp_svm needs lbp_svm")
  loro.check_folds(config)
  lbp = config.lbp
  if not (lbp.radius > 0 and int(lbp.points) == lbp.points and lbp.points >= 1):
    raise ValueError(
      f"config.lbp.radius={lbp.radius}, points={lbp.points}: need R > 0 and an integer P >= 1"
    )
  if not (int(lbp.grid) == lbp.grid and 1 <= lbp.grid <= config.image_size):
    raise ValueError(
      f"config.lbp.grid={lbp.grid}; need an integer in 1..config.image_size ({config.image_size})"
    )
  if not lbp.svm_c > 0:
    raise ValueError(f"config.lbp.svm_c={lbp.svm_c}; must be > 0")
  from painseeker_jax import train  # noqa: PLC0415

  train.check_field(config, "image_size", lambda x: train.is_int(x) and x >= 1, "an integer >= 1")
  train.check_field(
    config, "lbp.num_workers", lambda x: train.is_int(x) and x >= 1, "an integer >= 1"
  )


def svm_decisions(gram: np.ndarray, y: np.ndarray, train_idx, test_idx, c: float) -> np.ndarray:
  """Linear C-SVC from a Gram matrix: fit on `train_idx`, decision values of `test_idx`.

  `gram[i, j]` = <x_i, x_j> over all examples, `y` their 0/1 labels; a
  decision value > 0 means pain. Equal to `SVC(kernel="linear", C=c)` on the
  features themselves.
  """
  from sklearn.svm import SVC

  train_idx, test_idx = np.asarray(train_idx), np.asarray(test_idx)
  y_train = np.asarray(y)[train_idx]
  if np.unique(y_train).size != 2:
    raise ValueError(
      f"training labels hold the classes {np.unique(y_train).tolist()}; need both 0 and 1"
    )
  clf = SVC(kernel="precomputed", C=c)
  clf.fit(gram[np.ix_(train_idx, train_idx)], y_train)
  assert list(clf.classes_) == [0, 1]  # decision > 0 <=> classes_[1] = pain
  return clf.decision_function(gram[np.ix_(test_idx, train_idx)])


def gram_matrix(x: np.ndarray) -> np.ndarray:
  """X X^T in float64 (libsvm computes its linear kernel in double too)."""
  x = np.asarray(x, np.float64)
  return x @ x.T


def run_lbp_svm(
  config: ml_collections.ConfigDict, workdir: str, cache_dir: str | None = None
) -> dict:
  """LORO with LBP + linear SVM; writes and returns the results like `loro.run_loro`.

  `cache_dir` (default `<workdir>/lbp_features`) holds the per-rat feature
  caches; it can be shared by runs, the keys hold every setting that matters.
  """
  from painseeker_jax import loro  # noqa: PLC0415  (JAX: not imported by the feature workers)

  t_run = time.time()
  validate_config(config)
  layout.check_config(config, workdir)
  cache_dir = cache_dir or os.path.join(workdir, "lbp_features")
  rats = list(range(1, input_pipeline.NUM_RATS + 1))
  everything = input_pipeline.fold_splits(0)[0]  # every rat, for `check_training_data`
  sources = input_pipeline.get_sources(
    config.dataset, [*(f"rat{r}" for r in rats), everything], config.data_dir, config.manual_dir
  )
  loro.check_training_data(config, workdir, sources[everything])
  # Features per rat (each image once, whatever the folds), then folds = concatenations.
  idx = {r: input_pipeline.labelled_indices(sources[f"rat{r}"]) for r in rats}
  xs = features_many([(sources[f"rat{r}"], idx[r]) for r in rats], config, cache_dir)
  per_rat = {
    r: {
      "x": x,
      "idx": idx[r],
      "y": np.array([int(sources[f"rat{r}"][i]["pain"]) for i in idx[r]], np.int64),
    }
    for r, x in zip(rats, xs)
  }
  x_all = np.concatenate([per_rat[r]["x"] for r in rats])
  y_all = np.concatenate([per_rat[r]["y"] for r in rats])
  rat_of = np.concatenate([np.full(len(per_rat[r]["y"]), r) for r in rats])
  t0 = time.time()
  gram = gram_matrix(x_all)
  log.info("Gram matrix of %d x %d features in %.1f s", *x_all.shape, time.time() - t0)
  rows = []
  for k in config.folds:
    t0 = time.time()
    decision = svm_decisions(
      gram, y_all, np.flatnonzero(rat_of != k), np.flatnonzero(rat_of == k), config.lbp.svm_c
    )
    log.info("fold rat%d: SVM in %.1f s", k, time.time() - t0)
    src = sources[f"rat{k}"]
    for i, d in zip(per_rat[k]["idx"], decision):
      rows.append(loro.prediction_row(src[i], _logistic(float(d)), int(d > 0), int(k)))
  info = dict(loro.provenance(), wall_seconds={"total": round(time.time() - t_run, 1)})
  results = loro.write_outputs(config, workdir, rows, info)
  log.info(
    "LORO %s: F1 %.4f, accuracy %.2f%% (%d test images)",
    loro.method_title(config),
    results["loro"]["f1"],
    results["loro"]["accuracy"],
    len(rows),
  )
  return results


def _logistic(d: float) -> float:
  """1 / (1 + exp(-d)) without overflow."""
  if d >= 0:
    return 1.0 / (1.0 + math.exp(-d))
  e = math.exp(d)
  return e / (1.0 + e)
