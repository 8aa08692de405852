"""Binary pain metrics (Eq. 7-8) and leave-one-rat-out (LORO) aggregation.

Positive class is 1 (pain), negative 0 (no pain). All outputs are plain
python ints/floats so that they can be written with `json.dump`.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

AU_LEVELS = (0, 1, 2)


def _as_binary(name: str, y) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
  if y.dtype == bool:
    return y.astype(np.int64)
  if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
    raise ValueError(f"{name} must be numeric 0/1 labels, got dtype {y.dtype}")
  bad = ~np.isin(y, (0, 1))  # NaN is never in (0, 1)
  if bad.any():
    raise ValueError(
      f"{name} must contain only 0 (no pain) and 1 (pain); found invalid "
      f"values {np.unique(y[bad])[:5].tolist()}"
    )
  return y.astype(np.int64)


def confusion(y_true, y_pred) -> dict[str, int]:
  """Binary confusion counts with pain (1) as the positive class.

  Returns `{'tp': int, 'fp': int, 'tn': int, 'fn': int}`. Raises ValueError
  if the inputs are not 1-D, differ in length, or contain values other than
  0/1.
  """
  y_true = _as_binary("y_true", y_true)
  y_pred = _as_binary("y_pred", y_pred)
  if y_true.shape != y_pred.shape:
    raise ValueError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
  if y_true.size == 0:
    return {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
  (tn, fp), (fn, tp) = confusion_matrix(y_true, y_pred, labels=[0, 1])
  return {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def scores_from_confusion(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
  """F1 and accuracy from confusion counts (Eq. 7-8).

  `F1 = 2TP / (2TP + FP + FN)` -- defined as 0.0 when the denominator is 0
  (no pain in the labels and none predicted), like sklearn's
  `zero_division=0`.
  `Acc = (TP + TN) / N * 100` -- in PERCENT; 0.0 when `N = 0`.

  Returns `{'f1': float, 'accuracy': float}`.
  """
  counts = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
  for k, v in counts.items():
    if int(v) != v or v < 0:
      raise ValueError(f"{k} must be a non-negative integer count, got {v!r}")
  tp, fp, tn, fn = (int(v) for v in (tp, fp, tn, fn))
  f1_den = 2 * tp + fp + fn
  n = tp + fp + tn + fn
  return {
    "f1": 2.0 * tp / f1_den if f1_den else 0.0,
    "accuracy": 100.0 * (tp + tn) / n if n else 0.0,
  }


def _py_key(g: Any) -> Any:
  """numpy scalars -> python scalars so that keys are JSON-friendly."""
  return g.item() if isinstance(g, np.generic) else g


def _group_masks(groups: np.ndarray) -> list[tuple[Any, np.ndarray]]:
  """(group id as a python value, boolean mask of its examples), groups in order of first
  appearance."""
  _, first_idx = np.unique(groups, return_index=True)
  return [(_py_key(groups[i]), groups == groups[i]) for i in sorted(first_idx)]


def loro_metrics(y_true, y_pred, groups: Sequence[Any]) -> dict[str, Any]:
  """Per-rat and pooled (LORO) metrics.

  `y_true` and `y_pred` are 0/1 labels and `groups` the group id (e.g.
  `'rat1'`) of each example, all three of the same length.

  `pooled` sums the per-group confusion matrices and scores the sum (the
  paper's LORO column); it is NOT the mean of per-fold F1/accuracy.

  Returns `{'per_group': {g: {tp, fp, tn, fn, f1, accuracy}}, 'pooled': {...}}`,
  groups in order of first appearance.
  """
  y_true = _as_binary("y_true", y_true)
  y_pred = _as_binary("y_pred", y_pred)
  groups = np.asarray(groups)
  if groups.ndim != 1:
    raise ValueError(f"groups must be 1-D, got shape {groups.shape}")
  if not len(y_true) == len(y_pred) == len(groups):
    raise ValueError(
      f"y_true, y_pred and groups differ in length: {len(y_true)}, {len(y_pred)}, {len(groups)}"
    )
  per_group = {}
  pooled = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
  for g, sel in _group_masks(groups):
    counts = confusion(y_true[sel], y_pred[sel])
    per_group[g] = {**counts, **scores_from_confusion(**counts)}
    for k in pooled:
      pooled[k] += counts[k]
  return {"per_group": per_group, "pooled": {**pooled, **scores_from_confusion(**pooled)}}


def ranking_auc(y_true, score, groups: Sequence[Any]) -> dict[str, Any]:
  """ROC AUC of `score` (e.g. p_pain) for the pain label: per group, pooled, and the mean of
  the groups'.

  AUC = P(score of a pain image > score of a no-pain image), ties counting 1/2. Within a group
  it asks whether the model ranks that animal's pain faces above its no-pain faces, whatever
  the threshold; pooled, the animals' scores are ranked together, so an animal whose scores all
  sit higher or lower than the others' lowers it. A group with one class only has no AUC (None,
  left out of the mean).

  Returns `{'per_group': {g: auc | None}, 'pooled': auc | None, 'within_mean': mean | None}`.
  """
  y_true = _as_binary("y_true", y_true)
  score = np.asarray(score, np.float64)
  groups = np.asarray(groups)
  if not len(y_true) == len(score) == len(groups):
    raise ValueError(
      f"y_true, score and groups differ in length: {len(y_true)}, {len(score)}, {len(groups)}"
    )
  auc = lambda y, p: float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
  per_group = {g: auc(y_true[sel], score[sel]) for g, sel in _group_masks(groups)}
  defined = [v for v in per_group.values() if v is not None]
  return {
    "per_group": per_group,
    "pooled": auc(y_true, score),
    "within_mean": float(np.mean(defined)) if defined else None,
  }


def au_level_scores(y_true, y_pred) -> dict[str, np.ndarray]:
  """Accuracy (%), macro-F1 and quadratic-weighted kappa of AU levels 0/1/2, along the last
  axis (any leading shape, e.g. seeds x bootstrap resamples x images).

  From the 3 x 3 confusion matrix C of each row: macro-F1 averages 2 C_ll / (row_l + col_l)
  over the levels present in the labels or predictions (sklearn's `f1_score(average="macro",
  zero_division=0)`); QWK = 1 - sum w C / sum w E with w_ij = (i - j)^2 and E the outer product
  of the label and prediction counts over n (sklearn's `cohen_kappa_score(weights=
  "quadratic")`), 0 where sum w E = 0 (labels and predictions one and the same level, where
  sklearn's is undefined).
  """
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  k = len(AU_LEVELS)
  code = y_true * k + y_pred  # (..., n)
  lead, n = code.shape[:-1], code.shape[-1]
  flat = code.reshape(-1, n) + k * k * np.arange(int(np.prod(lead, dtype=np.int64)))[:, None]
  c = np.bincount(flat.ravel(), minlength=k * k * flat.shape[0]).reshape(*lead, k, k)
  c = c.astype(np.float64)
  rows, cols, diag = c.sum(-1), c.sum(-2), np.diagonal(c, axis1=-2, axis2=-1)
  present = (rows + cols) > 0
  f1_l = np.where(present, 2 * diag / np.maximum(rows + cols, 1), 0.0)
  macro_f1 = f1_l.sum(-1) / np.maximum(present.sum(-1), 1)
  w = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2.0
  expected = rows[..., :, None] * cols[..., None, :] / max(n, 1)
  num, den = (w * c).sum((-2, -1)), (w * expected).sum((-2, -1))
  qwk = np.where(den > 0, 1.0 - num / np.where(den > 0, den, 1.0), 0.0)
  return {"accuracy": 100.0 * diag.sum(-1) / max(n, 1), "macro_f1": macro_f1, "qwk": qwk}


def au_metrics(y_true, y_pred, expected, names: Sequence[str]) -> dict[str, Any]:
  """Per action unit (AU) and for the mean grimace score: how the AU heads score the images.

  `y_true` (N x A): the raters' scores 0/1/2, -1 where not scorable (left out of that AU's
  figures); `y_pred` (N x A): the predicted level (argmax); `expected` (N x A): the expected
  score `sum_l l * p_l` of each AU (0..2); `names`: the A AU names.

  Per AU, over its known scores: `n`, `accuracy` (%), `macro_f1` (F1 averaged over the levels
  present in the labels or predictions), `qwk` (Cohen's kappa with quadratic weights over the
  levels 0, 1, 2; 0 where it is undefined), both as `au_level_scores` computes them, and `mae`
  (mean |expected - label|).
  `grimace_score`: per image with at least one known AU, the mean of the known AU labels
  (the RGS/MGS score) against the mean of the same AUs' expected scores: `n`, `mae`.
  Returns plain floats/ints (JSON-friendly); an AU without known scores gets `{"n": 0}`.
  """
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  expected = np.asarray(expected, np.float64)
  if not (y_true.shape == y_pred.shape == expected.shape) or y_true.ndim != 2:
    raise ValueError(
      f"AU labels, predictions and expected scores must be N x A of one shape, got "
      f"{y_true.shape}, {y_pred.shape}, {expected.shape}"
    )
  if y_true.shape[1] != len(names):
    raise ValueError(f"{y_true.shape[1]} AU columns but {len(names)} names {list(names)}")
  if not np.isin(y_true, (-1, *AU_LEVELS)).all() or not np.isin(y_pred, AU_LEVELS).all():
    raise ValueError("AU labels must be -1, 0, 1 or 2 and predictions 0, 1 or 2")
  out: dict[str, Any] = {}
  for a, name in enumerate(names):
    known = y_true[:, a] >= 0
    t, p, e = y_true[known, a], y_pred[known, a], expected[known, a]
    if not known.any():
      out[name] = {"n": 0}
      continue
    scores = au_level_scores(t, p)
    out[name] = {
      "n": int(known.sum()),
      **{k: float(v) for k, v in scores.items()},
      "mae": float(np.mean(np.abs(e - t))),
    }
  rows, true_score, pred_score = grimace_scores(y_true, expected)
  out["grimace_score"] = {
    "n": int(rows.sum()),
    **({"mae": float(np.mean(np.abs(pred_score - true_score)))} if rows.any() else {}),
  }
  return out


def grimace_scores(y_true, expected):
  """The grimace score (RGS/MGS: the mean over an image's scored AUs) of the raters and of the
  model, on the images with at least one scored AU.

  `y_true` (N x A): scores 0/1/2, -1 not scorable; `expected` (... x N x A, any leading axes,
  e.g. seeds): the model's expected AU scores. Returns (`scored` (N,) bool, the raters' score
  (M,), the model's mean expected score of the same AUs (... x M)), M = scored.sum()."""
  y_true, expected = np.asarray(y_true), np.asarray(expected, np.float64)
  known = y_true >= 0
  scored = known.any(axis=1)
  counts = known[scored].sum(axis=1)
  true_score = np.where(known, y_true, 0)[scored].sum(axis=1) / counts
  pred_score = np.where(known, expected, 0.0)[..., scored, :].sum(axis=-1) / counts
  return scored, true_score, pred_score
