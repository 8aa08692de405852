"""Uncertainty and significance for LORO results (the paper reports point estimates only).

* `mean_std`: mean and sample standard deviation (ddof = 1), e.g. over seeds
  or over per-rat scores.
* `bootstrap_ci`: percentile bootstrap confidence intervals of the POOLED F1
  and accuracy (%) -- the paper's LORO column, computed from the confusion
  counts of a resample, never a mean of per-rat scores.
* `mcnemar`: exact McNemar test of two classifiers on the same images.
* `paired_bootstrap_diff`: bootstrap CI and p-value of metric(a) - metric(b)
  for two classifiers on the same images (or of the means over their seeds);
  `paired_bootstrap_mean_diff` the same for a per-image quantity (e.g. an
  attention share), `bootstrap_stat_ci` CIs of any statistic of the images.

Resampling unit: the image (LORO predictions are one per image, each made by
the model that never saw its rat). With `groups` (e.g. the rat of each image)
the resampling is stratified: every resample draws, with replacement, as many
images from each group as it has, so the rats keep their sizes and their
class mix only varies within rats. Neither variant resamples rats themselves:
with six rats a rat-level bootstrap would be too coarse; note that images of
one rat are correlated, so image-level intervals are optimistic about how a
new rat would fare.

All functions are deterministic given `seed` (numpy's default_rng).
F1 = 2TP / (2TP + FP + FN), 0 when undefined; accuracy in percent, as in
`painseeker_jax.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from painseeker_jax.metrics import _as_binary

_CHUNK = 256  # resamples per vectorised block (bounds memory for large N)


def mean_std(values: Sequence[float]) -> dict[str, float]:
  """{"mean", "std"} of `values`; std is the sample standard deviation (ddof = 1).

  A single value has no spread to estimate: its std is reported as 0.0 (not
  nan) so that tables and JSON stay numeric -- e.g. the deterministic
  LBP + SVM, run once.
  """
  x = np.asarray(values, np.float64).ravel()
  if x.size == 0:
    raise ValueError("mean_std of no values")
  return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0}


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
  """Pooled F1 and accuracy (%) along the last axis; any leading shape."""
  tp = np.sum((y_true == 1) & (y_pred == 1), axis=-1)
  fp = np.sum((y_true == 0) & (y_pred == 1), axis=-1)
  fn = np.sum((y_true == 1) & (y_pred == 0), axis=-1)
  n = y_true.shape[-1]
  den = 2 * tp + fp + fn
  f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)
  acc = 100.0 * np.sum(y_true == y_pred, axis=-1) / n if n else np.zeros_like(f1, np.float64)
  return {"f1": f1.astype(np.float64), "accuracy": np.asarray(acc, np.float64)}


def _resample_indices(n: int, n_boot: int, rng: np.random.Generator, groups=None):
  """Yields blocks of (b, n) bootstrap index arrays, `n_boot` rows in all.

  With `groups`, each row draws len(group) indices from every group (groups
  in sorted order), so group sizes are kept.
  """
  if groups is not None:
    groups = np.asarray(groups)
    if groups.shape != (n,):
      raise ValueError(f"groups must have one entry per image ({n}), got shape {groups.shape}")
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
  done = 0
  while done < n_boot:
    b = min(_CHUNK, n_boot - done)
    if groups is None:
      yield rng.integers(0, n, (b, n))
    else:
      yield np.concatenate([m[rng.integers(0, len(m), (b, len(m)))] for m in members], axis=1)
    done += b


def _check(y_true, *preds):
  y_true = _as_binary("y_true", y_true)
  out = [y_true]
  for name, p in preds:
    p = _as_binary(name, p)
    if p.shape != y_true.shape:
      raise ValueError(f"{name} has {p.shape[0]} entries, y_true {y_true.shape[0]}")
    out.append(p)
  if y_true.size == 0:
    raise ValueError("no images")
  return out


def _named_runs(name, y_pred) -> list:
  """One run's predictions (n,) or several runs' (runs x n) as (name, row) pairs for `_check`."""
  runs = np.asarray(y_pred)
  if runs.ndim == 2 and len(runs):
    return [(f"{name}[{i}]", p) for i, p in enumerate(runs)]
  return [(name, runs)]


def _percentile_ci(samples: np.ndarray, alpha: float) -> tuple[float, float]:
  lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
  return float(lo), float(hi)


def bootstrap_ci(
  y_true, y_pred, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05, groups=None
) -> dict[str, tuple[float, float]]:
  """Percentile bootstrap (1 - alpha) CIs of pooled F1 and accuracy (%).

  Resamples images with replacement (`n_boot` times); with `groups` (e.g.
  rat ids) within each group (stratified). `y_pred` is one run's predictions
  (n,) or several runs' on the same images (seeds x n): then each resample
  scores every run and averages them, a CI of the mean over seeds. Returns
  `{"f1": (lo, hi), "accuracy": (lo, hi)}`.
  """
  y_true, *rows = _check(y_true, *_named_runs("y_pred", y_pred))
  runs = np.stack(rows)

  def stat(idx):  # (b, n) -> scores of each run on each resample, mean over the runs
    return {k: v.mean(0) for k, v in _scores(y_true[idx], runs[:, idx]).items()}

  return bootstrap_stat_ci(stat, len(y_true), n_boot, seed, alpha, groups)


def bootstrap_stat_ci(
  stat, n: int, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05, groups=None
) -> dict[str, tuple[float, float]]:
  """Percentile bootstrap (1 - alpha) CIs of any statistics of n images.

  `stat(idx_BxN)` gets a block of resamples (B rows of N image indices, drawn with
  replacement, within each of `groups` if given, as in `bootstrap_ci`) and returns
  {name: (B,) values}; the result is {name: (lo, hi)}. E.g. the per-AU QWK of the mean over
  seeds (`experiments.au_summary`).
  """
  if not 0 < alpha < 1 or n_boot < 1:
    raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
  if n < 1:
    raise ValueError("no images")
  rng = np.random.default_rng(seed)
  samples: dict[str, list] = {}
  for idx in _resample_indices(n, n_boot, rng, groups):
    for k, v in stat(idx).items():
      samples.setdefault(k, []).append(np.asarray(v, np.float64))
  return {k: _percentile_ci(np.concatenate(v), alpha) for k, v in samples.items()}


def mcnemar(y_true, pred_a, pred_b) -> dict:
  """Exact (binomial) two-sided McNemar test of classifiers a and b on the same images.

  b = images a gets right and b wrong, c = the reverse. Under H0 (equal error
  rates) b ~ Binomial(b + c, 1/2); p = P(|X - n/2| >= |b - n/2|), i.e.
  min(1, 2 P(X <= min(b, c))); p = 1 when there are no discordant images.
  `statistic` = min(b, c), the count the exact test is read from.
  """
  y_true, pred_a, pred_b = _check(y_true, ("pred_a", pred_a), ("pred_b", pred_b))
  a_ok, b_ok = pred_a == y_true, pred_b == y_true
  b = int(np.sum(a_ok & ~b_ok))
  c = int(np.sum(~a_ok & b_ok))
  n = b + c
  if n == 0:
    p = 1.0
  else:
    try:
      from scipy.stats import binomtest

      p = float(binomtest(b, n, 0.5, alternative="two-sided").pvalue)
    except ImportError:  # scipy comes with scikit-learn; kept for a bare numpy install
      p = 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n  # int / int: no overflow
  return {"b": b, "c": c, "statistic": min(b, c), "p_value": min(1.0, p)}


def paired_bootstrap_diff(
  y_true,
  pred_a,
  pred_b,
  metric: str = "f1",
  n_boot: int = 2000,
  seed: int = 0,
  alpha: float = 0.05,
  groups=None,
  resample_runs: bool = False,
) -> dict:
  """metric(a) - metric(b) on the same images, with a paired percentile bootstrap.

  Each resample draws one set of images (stratified by `groups` if given) and
  scores both classifiers on it. `pred_a` / `pred_b` are one run's
  predictions (n,) or several runs' (runs x n, e.g. seeds; the two counts may
  differ): the difference is then between the means over runs, and each
  resample scores every run. With `resample_runs`, each resample also draws
  each classifier's runs with replacement (a two-level bootstrap, images and
  seeds), so the interval takes in seed-to-seed spread as well as image
  sampling (a single run is always drawn as itself). Drawing R runs with
  replacement keeps (R - 1) / R of their variance, and a percentile interval
  from a few runs cannot widen as a t interval would: with 2-5 seeds the
  interval is too narrow when the seeds differ (measured coverage:
  docs/results.md "How far the two-level interval reaches";
  tools/seed_bootstrap_coverage.py). Returns `{"diff": observed difference,
  "ci": (lo, hi), "p_value": p}` with p = 2 x the share of resampled
  differences on the other side of 0 from the observed one (0 itself
  counts as the other side), capped at 1; p = 1 when the observed difference
  is 0. This is a bootstrap approximation, not an exact test; its resolution
  is 2 / n_boot, so p = 0 means p < 2 / n_boot. `metric` is "f1" or
  "accuracy" (percentage points).
  """
  if metric not in ("f1", "accuracy"):
    raise ValueError(f"metric={metric!r}; use f1 or accuracy")
  named_a, named_b = _named_runs("pred_a", pred_a), _named_runs("pred_b", pred_b)
  y_true, *rows = _check(y_true, *named_a, *named_b)
  a, b = np.stack(rows[: len(named_a)]), np.stack(rows[len(named_a) :])

  def score(runs, idx):  # (runs,) on all images or (runs, b) on a block of resamples
    return _scores(y_true[idx], runs[:, idx])[metric]

  return _paired_diff(score, a, b, len(y_true), n_boot, seed, alpha, groups, resample_runs)


def paired_bootstrap_mean_diff(
  values_a,
  values_b,
  n_boot: int = 2000,
  seed: int = 0,
  alpha: float = 0.05,
  groups=None,
  resample_runs: bool = False,
) -> dict:
  """mean(a) - mean(b) of a per-image quantity measured on the same images, e.g. the share of
  the K_h most attended regions on AU landmarks, with the paired bootstrap of
  `paired_bootstrap_diff` (images stratified by `groups`; runs x n inputs are averaged over
  the runs, and with `resample_runs` the runs are drawn too). Returns {"diff", "ci",
  "p_value"} as `paired_bootstrap_diff` does."""
  a, b = np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)
  a, b = (a[None] if a.ndim == 1 else a), (b[None] if b.ndim == 1 else b)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not a.size or not b.size:
    raise ValueError(f"need (runs x) n values of the same n images, got {a.shape} and {b.shape}")
  if not (np.isfinite(a).all() and np.isfinite(b).all()):
    raise ValueError("values must be finite")

  def score(runs, idx):
    return runs[:, idx].mean(-1)

  return _paired_diff(score, a, b, a.shape[1], n_boot, seed, alpha, groups, resample_runs)


def _paired_diff(score, a, b, n, n_boot, seed, alpha, groups, resample_runs) -> dict:
  """The bootstrap of `paired_bootstrap_diff` for `score(runs, idx)` ((runs,) for idx = all
  images, (runs, B) for a (B, n) block of resamples)."""
  rng = np.random.default_rng(seed)

  def mean_score(runs, idx):  # mean over the runs (or over a draw of them, per resample)
    s = score(runs, idx)
    if resample_runs and s.ndim == 2 and len(runs) > 1:
      s = np.take_along_axis(s, rng.integers(0, len(runs), s.shape), axis=0)
    return s.mean(0)

  diff = float(mean_score(a, slice(None)) - mean_score(b, slice(None)))
  diffs = np.concatenate(
    [mean_score(a, idx) - mean_score(b, idx) for idx in _resample_indices(n, n_boot, rng, groups)]
  )
  if diff > 0:
    p = 2.0 * np.mean(diffs <= 0)
  elif diff < 0:
    p = 2.0 * np.mean(diffs >= 0)
  else:
    p = 1.0
  return {"diff": diff, "ci": _percentile_ci(diffs, alpha), "p_value": float(min(1.0, p))}


def block_length(values: Sequence[float]) -> int:
  """The block length (in samples) of `block_bootstrap_mean_ci` for a time series.

  Twice the first lag at which the sample autocorrelation falls below the noise band's upper
  edge 2 / sqrt(n) (a negative autocorrelation ends the search as well: it narrows the
  mean's variance, so the shorter block errs on the wide side; the crossing alone
  underestimates how far the dependence reaches: the coverage measured on AR(1) series is
  in docs/results.md "Session summaries"), at least
  ceil(n^(1/3)) (the usual rate for block bootstraps) and at most n // 4 (so that a
  resample has >= 4 blocks).
  """
  x = np.asarray(values, np.float64).ravel()
  n = x.size
  if n < 4:
    return 1
  lo, hi = math.ceil(n ** (1 / 3)), max(1, n // 4)
  x = x - x.mean()
  denom = float(x @ x)
  if denom == 0:
    return min(lo, hi)
  band = 2.0 / math.sqrt(n)
  lag = hi
  for k in range(1, hi + 1):
    if float(x[:-k] @ x[k:]) / denom < band:
      lag = 2 * k
      break
  return int(min(max(lag, lo), hi))


def block_bootstrap_mean_ci(
  values: Sequence[float],
  block: int | None = None,
  n_boot: int = 2000,
  seed: int = 0,
  alpha: float = 0.05,
) -> tuple[float, float]:
  """Percentile (1 - alpha) CI of the mean of a time series by the moving-block bootstrap.

  Neighbouring samples of a video are correlated (a rat's state lasts longer than the sampling
  interval), so resampling single samples would give too narrow an interval. Each resample
  concatenates ceil(n / block) blocks of `block` consecutive samples (random starts, with
  replacement) and cuts it to n. `block` None: `block_length(values)`. A single value gives
  (value, value); none raises ValueError.
  """
  x = np.asarray(values, np.float64).ravel()
  n = x.size
  if n == 0:
    raise ValueError("block_bootstrap_mean_ci of no values")
  if n == 1:
    return float(x[0]), float(x[0])
  block = block_length(x) if block is None else int(block)
  if not 1 <= block <= n or n_boot < 1 or not 0 < alpha < 1:
    raise ValueError(f"need 1 <= block <= n ({n}), n_boot >= 1, 0 < alpha < 1; got {block}")
  rng = np.random.default_rng(seed)
  num_blocks = math.ceil(n / block)
  offsets = np.arange(block)
  means = []
  for start in range(0, n_boot, _CHUNK):
    b = min(_CHUNK, n_boot - start)
    starts = rng.integers(0, n - block + 1, size=(b, num_blocks))
    idx = (starts[:, :, None] + offsets).reshape(b, -1)[:, :n]
    means.append(x[idx].mean(axis=1))
  return _percentile_ci(np.concatenate(means), alpha)
