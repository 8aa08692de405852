"""Binary pain metrics (Eq. 7-8) and leave-one-rat-out (LORO) aggregation.

Positive class is 1 (pain), negative 0 (no pain). All outputs are plain
python ints/floats so that they can be written with `json.dump`.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix


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
  _, first_idx = np.unique(groups, return_index=True)
  per_group = {}
  pooled = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
  for i in sorted(first_idx):
    g = groups[i]
    sel = groups == g
    counts = confusion(y_true[sel], y_pred[sel])
    per_group[_py_key(g)] = {**counts, **scores_from_confusion(**counts)}
    for k in pooled:
      pooled[k] += counts[k]
  return {"per_group": per_group, "pooled": {**pooled, **scores_from_confusion(**pooled)}}
