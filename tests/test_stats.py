"""Bootstrap intervals, McNemar and paired bootstrap on simulated and constructed cases."""

import math
import sys

import numpy as np
import pytest

from painseeker_jax import stats


def _simulate(rng, n, accuracy, pain_rate=0.5):
  """Labels with the given pain rate; each prediction right with probability `accuracy`."""
  y = (rng.random(n) < pain_rate).astype(int)
  right = rng.random(n) < accuracy
  return y, np.where(right, y, 1 - y)


def test_mean_std():
  r = stats.mean_std([1.0, 2.0, 3.0, 4.0])
  assert r == {"mean": 2.5, "std": pytest.approx(math.sqrt(5 / 3))}  # ddof = 1
  assert stats.mean_std([0.7]) == {"mean": 0.7, "std": 0.0}
  with pytest.raises(ValueError):
    stats.mean_std([])


def test_bootstrap_ci_covers_the_truth():
  """95% CIs of accuracy and F1 cover the true values in about 95 of 100 simulated data sets.

  Truth: accuracy 80%; with a pain rate 1/2 and symmetric errors, TP, FP, FN
  have expectations 0.4, 0.1, 0.1 per image, so the population F1 is 0.8.
  """
  rng = np.random.default_rng(123)
  cover = {"f1": 0, "accuracy": 0}
  for sim in range(100):
    y, p = _simulate(rng, 300, 0.8)
    ci = stats.bootstrap_ci(y, p, n_boot=500, seed=sim)
    cover["accuracy"] += ci["accuracy"][0] <= 80.0 <= ci["accuracy"][1]
    cover["f1"] += ci["f1"][0] <= 0.8 <= ci["f1"][1]
  assert 90 <= cover["accuracy"] <= 99, cover
  assert 90 <= cover["f1"] <= 99, cover


def test_bootstrap_ci_narrows_with_n_and_is_deterministic():
  rng = np.random.default_rng(0)
  widths = []
  for n in (100, 1600):
    y, p = _simulate(rng, n, 0.75)
    ci = stats.bootstrap_ci(y, p, n_boot=500, seed=0)
    widths.append(ci["accuracy"][1] - ci["accuracy"][0])
    assert ci == stats.bootstrap_ci(y, p, n_boot=500, seed=0)
    est = 100 * np.mean(y == p)
    assert ci["accuracy"][0] <= est <= ci["accuracy"][1]
  # Width ~ 1 / sqrt(n): 16x the images, about a quarter of the width.
  assert 2.5 < widths[0] / widths[1] < 6


def test_bootstrap_ci_stratified_by_group():
  """Group A all right, group B all wrong, equal sizes: every stratified resample
  has accuracy exactly 50%; resampling images freely does not."""
  y = np.array([1, 0] * 20)
  p = np.concatenate([y[:20], 1 - y[20:]])
  groups = ["A"] * 20 + ["B"] * 20
  assert stats.bootstrap_ci(y, p, n_boot=300, groups=groups)["accuracy"] == (50.0, 50.0)
  lo, hi = stats.bootstrap_ci(y, p, n_boot=300)["accuracy"]
  assert lo < 45 and hi > 55
  with pytest.raises(ValueError, match="groups"):
    stats.bootstrap_ci(y, p, groups=groups[:-1])


def test_bootstrap_ci_of_the_mean_over_seeds():
  """Several runs on the same images: the CI is of their mean score (it holds the mean, not
  one run's score), one run in a (1, n) array is the 1-D case, and a run of another length is
  an error."""
  rng = np.random.default_rng(7)
  y, p0 = _simulate(rng, 400, 0.85)
  p1 = np.where(rng.random(400) < 0.65, y, 1 - y)
  ci = stats.bootstrap_ci(y, np.stack([p0, p1]), n_boot=500)
  accs = [100 * np.mean(y == p) for p in (p0, p1)]
  assert ci["accuracy"][0] <= np.mean(accs) <= ci["accuracy"][1]
  assert ci["accuracy"][1] < max(accs) and ci["accuracy"][0] > min(accs)
  assert stats.bootstrap_ci(y, p0[None], n_boot=200) == stats.bootstrap_ci(y, p0, n_boot=200)
  with pytest.raises(ValueError, match="entries"):
    stats.bootstrap_ci(y, np.stack([p0[:-1], p1[:-1]]))


def test_mcnemar_constructed_cases():
  rng = np.random.default_rng(0)
  y, p = _simulate(rng, 50, 0.7)
  same = stats.mcnemar(y, p, p)
  assert (same["b"], same["c"], same["p_value"]) == (0, 0, 1.0)

  # 20 discordant images, a right on all of them: p = 2 * 0.5**20.
  y = np.array([1, 0] * 15)
  a = y.copy()
  b = y.copy()
  b[:20] = 1 - b[:20]
  r = stats.mcnemar(y, a, b)
  assert (r["b"], r["c"], r["statistic"]) == (20, 0, 0)
  assert r["p_value"] == pytest.approx(2 * 0.5**20, rel=1e-12)
  assert stats.mcnemar(y, b, a)["p_value"] == pytest.approx(r["p_value"], rel=1e-12)

  # b = 7, c = 2: P(X <= 2 | n = 9) = (1 + 9 + 36) / 512, two-sided p = 92 / 512.
  y = np.ones(12, int)
  a = np.array([1] * 7 + [0] * 2 + [1] * 3)
  b = np.array([0] * 7 + [1] * 2 + [1] * 3)
  r = stats.mcnemar(y, a, b)
  assert (r["b"], r["c"]) == (7, 2)
  assert r["p_value"] == pytest.approx(92 / 512, rel=1e-12)
  # Balanced discordance (b = c = 2): p = 1.
  y = np.ones(10, int)
  r = stats.mcnemar(y, [1, 1, 0, 0] + [1] * 6, [0, 0, 1, 1] + [1] * 6)
  assert (r["b"], r["c"], r["p_value"]) == (2, 2, 1.0)


def test_mcnemar_without_scipy_matches_scipy_at_large_counts(monkeypatch):
  # 1,100 discordant images: 2**1100 does not fit a float, the fallback must stay exact.
  y = np.ones(1200, int)
  a = np.array([1] * 500 + [0] * 600 + [1] * 100)
  b = np.array([0] * 500 + [1] * 600 + [1] * 100)
  with_scipy = stats.mcnemar(y, a, b)["p_value"]
  monkeypatch.setitem(sys.modules, "scipy.stats", None)  # `from scipy.stats import` fails
  fallback = stats.mcnemar(y, a, b)
  assert (fallback["b"], fallback["c"]) == (500, 600)
  assert 0.001 < fallback["p_value"] < 0.01
  assert fallback["p_value"] == pytest.approx(with_scipy, rel=1e-9)


def test_paired_bootstrap_diff_constructed():
  y = np.array([1, 0] * 50)
  a = y.copy()  # always right
  b = y.copy()
  b[:30] = 1 - b[:30]  # wrong on 30 of 100
  r = stats.paired_bootstrap_diff(y, a, b, metric="accuracy", n_boot=500, seed=0)
  assert r["diff"] == pytest.approx(30.0)
  lo, hi = r["ci"]
  assert 18 < lo < 30 < hi < 42 and r["p_value"] == 0.0
  # Swapping the classifiers flips the sign of the difference and of the CI.
  s = stats.paired_bootstrap_diff(y, b, a, metric="accuracy", n_boot=500, seed=0)
  assert s["diff"] == -r["diff"] and s["ci"] == pytest.approx((-hi, -lo)) and s["p_value"] == 0.0
  f1 = stats.paired_bootstrap_diff(y, a, b, metric="f1", n_boot=500, seed=0)
  assert f1["diff"] > 0 and f1["ci"][0] > 0
  # Identical classifiers: no difference at all.
  same = stats.paired_bootstrap_diff(y, b, b, n_boot=200)
  assert same == {"diff": 0.0, "ci": (0.0, 0.0), "p_value": 1.0}


def test_paired_bootstrap_diff_of_the_means_over_seeds():
  """(seeds x n) predictions: the difference of the seed means, each resample scoring every seed."""
  rng = np.random.default_rng(3)
  y = rng.integers(0, 2, 120)
  a = np.stack([np.where(rng.random(120) < e, 1 - y, y) for e in (0.1, 0.2, 0.3)])  # three seeds
  b = np.where(rng.random(120) < 0.35, 1 - y, y)  # one deterministic run (e.g. LBP + SVM)
  r = stats.paired_bootstrap_diff(y, a, b, metric="accuracy", n_boot=100, seed=5)
  acc = lambda t, p: 100.0 * np.mean(t == p)
  assert r["diff"] == pytest.approx(np.mean([acc(y, s) for s in a]) - acc(y, b))
  # Plain reference: the same 100 resamples (one block of draws), scored run by run in a loop.
  idx = np.random.default_rng(5).integers(0, 120, (100, 120))
  ref = [np.mean([acc(y[i], s[i]) for s in a]) - acc(y[i], b[i]) for i in idx]
  assert r["ci"] == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])))
  # One seed given as (1 x n) is the single-run test; identical seeds change nothing.
  one = stats.paired_bootstrap_diff(y, a[0], b, n_boot=300, seed=2)
  assert stats.paired_bootstrap_diff(y, a[:1], b, n_boot=300, seed=2) == one
  same = stats.paired_bootstrap_diff(y, np.stack([a[0]] * 3), b[None], n_boot=300, seed=2)
  assert same["diff"] == pytest.approx(one["diff"]) and same["ci"] == pytest.approx(one["ci"])
  assert same["p_value"] == one["p_value"]
  with pytest.raises(ValueError, match=r"pred_b\[1\]"):
    stats.paired_bootstrap_diff(y, a, np.stack([b, b[:-1].tolist() + [2]]))


def test_paired_bootstrap_resampling_the_seeds_widens_the_interval():
  """Two seeds of a at 60% and 100% accuracy, b at 80%: the seed means tie; drawing the seeds too
  gives both-bad / both-good draws (a quarter each), so the interval spans about ±20 points."""
  y = np.array([1, 0] * 100)
  a = np.stack([y, y])
  a[0, :80] = 1 - a[0, :80]  # seed 0 wrong on 80 of 200
  b = y.copy()
  b[100:140] = 1 - b[100:140]  # wrong on 40 of 200
  fixed = stats.paired_bootstrap_diff(y, a, b, metric="accuracy", n_boot=2000, seed=0)
  both = stats.paired_bootstrap_diff(
    y, a, b, metric="accuracy", n_boot=2000, seed=0, resample_runs=True
  )
  assert fixed["diff"] == both["diff"] == 0.0
  assert -10 < fixed["ci"][0] < 0 < fixed["ci"][1] < 10
  assert both["ci"][0] < -15 and both["ci"][1] > 15
  # Single runs have nothing to draw: the same answer either way.
  assert stats.paired_bootstrap_diff(y, a[1], b, resample_runs=True) == stats.paired_bootstrap_diff(
    y, a[1], b
  )


def test_paired_bootstrap_p_value_tracks_mcnemar_on_a_close_call():
  """A small difference (6 vs 4 discordant images of 200): not significant either way."""
  y = np.array([1, 0] * 100)
  a = y.copy()
  b = y.copy()
  a[:4] = 1 - a[:4]
  b[4:10] = 1 - b[4:10]
  boot = stats.paired_bootstrap_diff(y, a, b, metric="accuracy", n_boot=1000, seed=1)
  assert boot["diff"] == pytest.approx(1.0)
  assert boot["ci"][0] < 0 < boot["ci"][1]
  assert 0.3 < boot["p_value"] <= 1.0
  assert stats.mcnemar(y, a, b)["p_value"] == pytest.approx(
    2 * sum(math.comb(10, k) for k in range(5)) / 2**10
  )


def test_input_checks():
  with pytest.raises(ValueError):
    stats.bootstrap_ci([0, 1, 2], [0, 1, 1])
  with pytest.raises(ValueError):
    stats.mcnemar([0, 1], [0, 1], [0])
  with pytest.raises(ValueError, match="metric"):
    stats.paired_bootstrap_diff([0, 1], [0, 1], [1, 1], metric="auc")


def test_mcnemar_without_scipy_matches(monkeypatch):
  """The math.comb fallback gives scipy's exact p-values."""
  import sys

  y = np.ones(40, int)
  cases = [(20, 0), (7, 2), (3, 3), (12, 9)]
  with_scipy = [stats.mcnemar(y, *_discordant(b, c)) for b, c in cases]
  monkeypatch.setitem(
    sys.modules, "scipy.stats", None
  )  # `from scipy.stats import ...` -> ImportError
  for (b, c), ref in zip(cases, with_scipy):
    assert stats.mcnemar(y, *_discordant(b, c)) == pytest.approx(ref, rel=1e-12)


def _discordant(b, c, n=40):
  """Predictions (a, b) for all-ones labels: b images only a gets right, c only b does."""
  a = np.ones(n, int)
  bb = np.ones(n, int)
  bb[:b] = 0
  a[b : b + c] = 0
  return a, bb


def test_paired_bootstrap_mean_diff_is_the_accuracy_difference_of_correctness():
  """A per-image 0/1 'right' value: its mean difference is the accuracy difference / 100, resample
  by resample (the same draws: images stratified by group, seeds resampled)."""
  rng = np.random.default_rng(7)
  y, groups = rng.integers(0, 2, 90), rng.integers(0, 3, 90)
  a = np.stack([np.where(rng.random(90) < e, 1 - y, y) for e in (0.1, 0.3)])
  b = np.stack([np.where(rng.random(90) < e, 1 - y, y) for e in (0.2, 0.25, 0.4)])
  kw = dict(n_boot=300, seed=4, groups=groups, resample_runs=True)
  acc = stats.paired_bootstrap_diff(y, a, b, metric="accuracy", **kw)
  mean = stats.paired_bootstrap_mean_diff((a == y).astype(float), (b == y).astype(float), **kw)
  assert mean["diff"] == pytest.approx(acc["diff"] / 100)
  assert mean["ci"] == pytest.approx(tuple(v / 100 for v in acc["ci"]))
  assert mean["p_value"] == acc["p_value"]
  # One run given as (n,) or (1 x n); a constant shift gives a degenerate interval.
  v = rng.random(40)
  one = stats.paired_bootstrap_mean_diff(v + 0.25, v, n_boot=100)
  assert one["diff"] == pytest.approx(0.25) and one["ci"] == pytest.approx((0.25, 0.25))
  assert stats.paired_bootstrap_mean_diff((v + 0.25)[None], v[None], n_boot=100) == one
  with pytest.raises(ValueError, match="same n images"):
    stats.paired_bootstrap_mean_diff(v, v[:-1])
  with pytest.raises(ValueError, match="finite"):
    stats.paired_bootstrap_mean_diff(np.full(40, np.nan), v)


def test_bootstrap_stat_ci_of_a_mean_against_a_plain_loop():
  rng = np.random.default_rng(1)
  x = rng.normal(size=50)
  ci = stats.bootstrap_stat_ci(lambda idx: {"mean": x[idx].mean(-1)}, 50, n_boot=200, seed=3)
  idx = np.random.default_rng(3).integers(0, 50, (200, 50))
  ref = [x[i].mean() for i in idx]
  assert ci["mean"] == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])))
  with pytest.raises(ValueError, match="n_boot"):
    stats.bootstrap_stat_ci(lambda idx: {}, 50, n_boot=0)
