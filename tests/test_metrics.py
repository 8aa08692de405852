"""Tests for painseeker_jax.metrics with hand-computed cases."""

import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score

from painseeker_jax import metrics


def test_confusion_hand_computed():
  y_true = [1, 1, 1, 0, 0, 0, 0, 1]
  y_pred = [1, 0, 1, 0, 1, 0, 0, 1]
  # tp: idx 0,2,7 -> 3; fn: idx 1 -> 1; fp: idx 4 -> 1; tn: idx 3,5,6 -> 3
  assert metrics.confusion(y_true, y_pred) == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}
  c = metrics.confusion(np.array([0, 0, 1]), np.array([1, 1, 0]))
  assert c == {"tp": 0, "fp": 2, "tn": 0, "fn": 1}
  c = metrics.confusion([True, False], [True, True])
  assert c == {"tp": 1, "fp": 1, "tn": 0, "fn": 0}
  assert all(type(v) is int for v in c.values())
  # Only one class present still yields a full 2x2 matrix.
  assert metrics.confusion([0, 0], [0, 0]) == {"tp": 0, "fp": 0, "tn": 2, "fn": 0}
  assert metrics.confusion([], []) == {"tp": 0, "fp": 0, "tn": 0, "fn": 0}


def test_scores_hand_computed():
  s = metrics.scores_from_confusion(tp=3, fp=1, tn=3, fn=1)
  assert s["f1"] == pytest.approx(6 / 8)
  assert s["accuracy"] == pytest.approx(75.0)  # percent, not 0.75
  s = metrics.scores_from_confusion(tp=1, fp=0, tn=0, fn=3)
  assert s["f1"] == pytest.approx(2 / 5)
  assert s["accuracy"] == pytest.approx(25.0)


def test_f1_matches_sklearn():
  rng = np.random.default_rng(0)
  y_true = rng.integers(0, 2, 50)
  y_pred = rng.integers(0, 2, 50)
  s = metrics.scores_from_confusion(**metrics.confusion(y_true, y_pred))
  assert s["f1"] == pytest.approx(f1_score(y_true, y_pred))
  assert s["accuracy"] == pytest.approx(100 * np.mean(y_true == y_pred))


def test_f1_undefined_is_zero():
  # No pain in labels or predictions: 2TP + FP + FN = 0.
  s = metrics.scores_from_confusion(tp=0, fp=0, tn=5, fn=0)
  assert s["f1"] == 0.0
  assert s["accuracy"] == 100.0
  s = metrics.scores_from_confusion(0, 0, 0, 0)
  assert s == {"f1": 0.0, "accuracy": 0.0}


def test_scores_reject_bad_counts():
  with pytest.raises(ValueError, match="fp"):
    metrics.scores_from_confusion(1, -1, 0, 0)
  with pytest.raises(ValueError, match="tn"):
    metrics.scores_from_confusion(1, 0, 0.5, 0)


@pytest.mark.parametrize(
  "y_true,y_pred,match",
  [
    ([0, 2, 1], [0, 1, 1], "y_true"),
    ([0, 1, 1], [0, -1, 1], "y_pred"),
    ([0, 1], [0, 0.5], "y_pred"),
    ([0, np.nan], [0, 1], "y_true"),
    (["a", "b"], [0, 1], "y_true"),
    ([[0, 1]], [[0, 1]], "1-D"),
    ([0, 1, 1], [0, 1], "length"),
  ],
)
def test_invalid_labels_raise(y_true, y_pred, match):
  with pytest.raises(ValueError, match=match):
    metrics.confusion(y_true, y_pred)


def test_loro_pooled_sums_confusions():
  # rat1: 4 examples, all correct (2 pain, 2 no pain) -> F1 1.0, acc 100.
  # rat2: 6 examples: labels 1,1,1,1,0,0 preds 0,0,0,1,1,0
  #       tp=1 fn=3 fp=1 tn=1 -> F1 2/(2+1+3)=1/3, acc 2/6=33.33
  y_true = [1, 1, 0, 0] + [1, 1, 1, 1, 0, 0]
  y_pred = [1, 1, 0, 0] + [0, 0, 0, 1, 1, 0]
  groups = ["rat1"] * 4 + ["rat2"] * 6
  out = metrics.loro_metrics(y_true, y_pred, groups)

  assert list(out["per_group"]) == ["rat1", "rat2"]
  r1, r2 = out["per_group"]["rat1"], out["per_group"]["rat2"]
  assert r1 == {"tp": 2, "fp": 0, "tn": 2, "fn": 0, "f1": 1.0, "accuracy": 100.0}
  assert (r2["tp"], r2["fp"], r2["tn"], r2["fn"]) == (1, 1, 1, 3)
  assert r2["f1"] == pytest.approx(1 / 3)
  assert r2["accuracy"] == pytest.approx(100 / 3)

  pooled = out["pooled"]
  # Summed: tp=3 fp=1 tn=3 fn=3 -> F1 = 6/10 = 0.6, acc = 6/10 = 60 %.
  assert (pooled["tp"], pooled["fp"], pooled["tn"], pooled["fn"]) == (3, 1, 3, 3)
  assert pooled["f1"] == pytest.approx(0.6)
  assert pooled["accuracy"] == pytest.approx(60.0)
  mean_f1 = (r1["f1"] + r2["f1"]) / 2  # 2/3
  assert pooled["f1"] != pytest.approx(mean_f1)
  assert pooled["accuracy"] != pytest.approx((r1["accuracy"] + r2["accuracy"]) / 2)

  json.dumps(out)  # plain python types only


def test_loro_group_order_and_numpy_keys():
  out = metrics.loro_metrics(
    np.array([0, 1, 1]), np.array([0, 1, 0]), np.array(["rat10", "rat2", "rat10"])
  )
  assert list(out["per_group"]) == ["rat10", "rat2"]
  assert all(type(k) is str for k in out["per_group"])
  assert out["per_group"]["rat10"]["fn"] == 1
  json.dumps(out)


def test_loro_length_mismatch_raises():
  with pytest.raises(ValueError, match="length"):
    metrics.loro_metrics([0, 1], [0, 1], ["rat1"])


def _pairwise_auc(y, p):
  """The definition: the share of (pain, no-pain) pairs ranked right, ties 1/2."""
  pos, neg = [a for a, t in zip(p, y) if t], [a for a, t in zip(p, y) if not t]
  return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def test_ranking_auc_against_the_pairwise_definition():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 60)
  p = np.round(rng.random(60) + 0.3 * y, 1)  # rounded: ties
  g = np.repeat(["rat2", "rat1", "rat3"], 20)
  y[40:] = 1  # rat3 has pain images only: no AUC there
  got = metrics.ranking_auc(y, p, g)
  assert list(got["per_group"]) == ["rat2", "rat1", "rat3"] and got["per_group"]["rat3"] is None
  for k, sel in (("rat2", slice(0, 20)), ("rat1", slice(20, 40))):
    assert got["per_group"][k] == pytest.approx(_pairwise_auc(y[sel], p[sel]))
  assert got["pooled"] == pytest.approx(_pairwise_auc(y, p))
  assert got["within_mean"] == pytest.approx(
    (got["per_group"]["rat2"] + got["per_group"]["rat1"]) / 2
  )
  # Each animal ranked perfectly, but one animal's scores all higher: within 1, pooled lower.
  shifted = metrics.ranking_auc([0, 1, 0, 1], [0.1, 0.2, 0.8, 0.9], ["a", "a", "b", "b"])
  assert shifted["within_mean"] == 1.0 and shifted["pooled"] == 0.75
  with pytest.raises(ValueError, match="differ in length"):
    metrics.ranking_auc([0, 1], [0.5], ["a", "a"])


def test_au_metrics_hand_computed():
  y_true = [[0, -1], [1, 0], [2, 0], [2, 1]]
  y_pred = [[0, 0], [2, 0], [2, 1], [1, 1]]
  expected = [[0.2, 0.0], [1.5, 0.3], [1.8, 0.9], [1.0, 1.2]]
  m = metrics.au_metrics(y_true, y_pred, expected, ["au_orbital", "au_ear"])
  orb = m["au_orbital"]
  assert orb["n"] == 4 and orb["accuracy"] == pytest.approx(50.0)
  # F1 per level: 0 -> 1, 1 -> 0, 2 -> 2/(2+1+1); kappa with weights (i-j)^2/4 = 1 - 0.5/1.375.
  assert orb["macro_f1"] == pytest.approx((1 + 0 + 0.5) / 3)
  assert orb["qwk"] == pytest.approx(7 / 11)
  assert orb["mae"] == pytest.approx((0.2 + 0.5 + 0.2 + 1.0) / 4)
  ear = m["au_ear"]  # the -1 of the first image is left out
  assert ear["n"] == 3 and ear["accuracy"] == pytest.approx(200 / 3)
  assert ear["mae"] == pytest.approx((0.3 + 0.9 + 0.2) / 3)
  # Mean grimace score per image over its known AUs: |0.2-0| |0.9-0.5| |1.35-1| |1.1-1.5|.
  assert m["grimace_score"] == {"n": 4, "mae": pytest.approx((0.2 + 0.4 + 0.35 + 0.4) / 4)}


def test_au_metrics_unknown_and_single_level_and_bad_input():
  m = metrics.au_metrics([[-1, 1], [-1, 1]], [[0, 1], [1, 1]], [[0, 1], [1, 1]], ["a", "b"])
  assert m["a"] == {"n": 0} and m["b"]["qwk"] == 0.0 and m["b"]["accuracy"] == 100.0
  with pytest.raises(ValueError, match="-1, 0, 1 or 2"):
    metrics.au_metrics([[3]], [[0]], [[0.0]], ["a"])
  with pytest.raises(ValueError, match="names"):
    metrics.au_metrics([[0]], [[0]], [[0.0]], ["a", "b"])


def test_au_level_scores_match_sklearn_and_broadcast():
  rng = np.random.default_rng(0)
  cases = [(rng.integers(0, 3, 25), rng.integers(0, 3, 25)) for _ in range(30)]
  cases += [
    (np.array([1, 1, 2, 2]), np.array([1, 1, 1, 1])),  # one predicted level
    (np.array([0, 0, 0]), np.array([2, 2, 2])),  # each one level, different ones
    (np.array([0, 1]), np.array([0, 1])),  # two levels, perfect
  ]
  for t, p in cases:
    s = metrics.au_level_scores(t, p)
    assert s["accuracy"] == pytest.approx(100 * np.mean(t == p))
    assert s["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
    ref = cohen_kappa_score(t, p, labels=[0, 1, 2], weights="quadratic")
    assert s["qwk"] == pytest.approx(0.0 if np.isnan(ref) else ref)
  # The same level everywhere (sklearn: undefined) is 0.
  assert metrics.au_level_scores([1, 1], [1, 1])["qwk"] == 0.0
  # Leading axes (seeds x resamples) are scored row by row.
  t, p = rng.integers(0, 3, (2, 3, 15)), rng.integers(0, 3, (2, 3, 15))
  s = metrics.au_level_scores(t, p)
  assert s["qwk"].shape == (2, 3)
  assert s["qwk"][1, 2] == pytest.approx(metrics.au_level_scores(t[1, 2], p[1, 2])["qwk"])
