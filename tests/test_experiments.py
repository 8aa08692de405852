"""Table 3, sensitivity and figures: the machinery end to end on the tiny synthetic build."""

import json
import os
import types

import numpy as np
import pytest
from conftest import ROOT, mini_config
from PIL import Image

from painseeker_jax import cli, experiments, figures, layout, loro, stats


def _table3_config(data_dir, **kw):
  c = mini_config(data_dir, folds=(2,), **kw)
  c.experiment = "table3"
  c.methods = ("painseeker", "painseeker_wo_prsc", "resnet18", "lbp_r1_g4")
  c.seeds = (0, 1)
  c.bootstrap = 200
  c.attention_files = ()
  c.lbp.num_workers = 1
  return c


def test_table3_end_to_end_and_incremental(mini_data_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / "t3")
  report = experiments.run(_table3_config(mini_data_dir), workdir)
  assert set(report["methods"]) == {"painseeker", "painseeker_wo_prsc", "resnet18", "lbp_r1_g4"}
  # Each method's LORO mean is the mean of its runs' pooled scores.
  for m, seeds in [("painseeker", (0, 1)), ("resnet18", (0, 1)), ("lbp_r1_g4", (0,))]:
    runs = [
      json.load(open(os.path.join(workdir, "runs", m, f"seed{s}", "results.json"))) for s in seeds
    ]
    assert report["methods"][m]["loro"]["f1"]["mean"] == pytest.approx(
      np.mean([r["loro"]["f1"] for r in runs])
    )
  ps = report["methods"]["painseeker"]
  assert set(ps["pose_bins"]) <= {"frontal", "moderate", "extreme"} and ps["pose_bins"]
  assert (
    "attention_localisation" in ps and "attention_localisation" not in report["methods"]["resnet18"]
  )
  assert "vs_painseeker" in report["methods"]["resnet18"] and "vs_painseeker" not in ps
  # Every deep method against the best (here the only) LBP variant: the difference of the means.
  vs_lbp = report["vs_best_lbp"]
  assert vs_lbp["lbp"] == "lbp_r1_g4"
  assert set(vs_lbp["methods"]) == {"painseeker", "painseeker_wo_prsc", "resnet18"}
  for m, d in vs_lbp["methods"].items():
    for k in ("f1", "accuracy"):
      own, lbp = report["methods"][m]["loro"][k]["mean"], report["methods"]["lbp_r1_g4"]["loro"][k]
      assert d[k]["diff"] == pytest.approx(own - lbp["mean"])
  md = open(os.path.join(workdir, "table3.md")).read()
  for title in (
    "| PainSeeker |",
    "| PainSeeker w/o PRSC |",
    "| ResNet-18 |",
    "| LBP (R=1, 4x4) + SVM |",
    "## Statistics",
    "## Ranking (ROC AUC of p_pain)",
    "## By head pose",
    "## Attention localisation",
    "## Deep methods against the best LBP + SVM (LBP (R=1, 4x4) + SVM)",
  ):
    assert title in md
  fig = Image.open(os.path.join(workdir, "figure4_attention.png"))
  assert fig.size[0] > 300 and fig.size[1] > 200
  # A rerun reuses every finished run: nothing is trained again.
  monkeypatch.setattr(loro, "run_loro", lambda *a, **k: pytest.fail("retrained a finished run"))
  again = experiments.run(_table3_config(mini_data_dir), workdir)
  assert again["methods"]["painseeker"]["loro"] == report["methods"]["painseeker"]["loro"]
  assert report["missing"] == [] and "PainSeeker − method within each bin" in md
  # A command for some methods still reports the other finished methods of the work directory,
  # when they were run with the same settings.
  some = _table3_config(mini_data_dir)
  some.methods = ("painseeker",)
  runs = experiments._method_runs(some, workdir)
  lookup = experiments.ground_truth_lookup(some)
  sub = experiments.table3_report(some, workdir, runs, lookup)
  assert set(sub["methods"]) == set(report["methods"]) and sub["missing"] == []
  assert sub["methods"]["resnet18"]["loro"] == report["methods"]["resnet18"]["loro"]
  some.num_epochs += 1  # the other runs' settings differ now: left out
  assert set(experiments.table3_report(some, workdir, runs, lookup)["methods"]) == {"painseeker"}
  # A partly filled work directory: the table of the finished runs, the others listed.
  more = _table3_config(mini_data_dir)
  more.seeds = (0, 1, 7)
  part = experiments.table3_report(
    more, workdir, experiments._method_runs(more, workdir), experiments.ground_truth_lookup(more)
  )
  assert part["missing"] == [
    f"{m} seed 7" for m in ("painseeker", "painseeker_wo_prsc", "resnet18")
  ]
  assert part["methods"]["painseeker"]["loro"] == report["methods"]["painseeker"]["loro"]
  assert (
    "Not finished yet (3 runs): painseeker seed 7"
    in open(os.path.join(workdir, "table3.md")).read()
  )


def test_sensitivity_end_to_end(mini_data_dir, tmp_path):
  c = mini_config(mini_data_dir, folds=(1,))
  c.experiment = "sensitivity"
  import ml_collections

  c.sweep = ml_collections.ConfigDict({"lambda_prsc": (0.1, 0.5), "delta": (0.2,), "k_h": (1, 2)})
  c.seeds = (0,)
  c.bootstrap = 50
  workdir = str(tmp_path / "sens")
  out = experiments.run(c, workdir)
  assert [p["value"] for p in out["sweeps"]["k_h"]] == [1, 2]
  # The default setting (lambda 0.1, delta 0.2, k_h 2) is trained once and shared.
  assert len(os.listdir(os.path.join(workdir, "runs"))) == 3
  assert out["sweeps"]["delta"][0]["runs"] == out["sweeps"]["k_h"][1]["runs"]
  assert set(out["sweeps"]["k_h"][0]["vs_default"]) == {"f1", "accuracy"}
  img = Image.open(os.path.join(workdir, "figure5_sensitivity.png"))
  assert img.size == (1260, 340)


def test_derive_rejects_unknown_fields(mini_data_dir, tmp_path):
  with pytest.raises(KeyError, match="loss.lamda"):
    experiments.derive(_table3_config(mini_data_dir), {"loss.lamda": 1.0})
  with pytest.raises(ValueError, match="unknown method"):
    c = _table3_config(mini_data_dir)
    c.methods = ("painseekr",)
    experiments.run(c, str(tmp_path / "table3"))
  assert not os.path.exists(tmp_path / "table3")  # refused before anything was written


def test_landmark_cells_and_pose_bins():
  lm = np.array(
    [[0.1, 0.1], [0.9, 0.1], [np.nan, np.nan], [0.5, 0.5], [0.99, 0.99], [0.0, 0.0], [0.4, 0.6]],
    np.float32,
  )
  vis = np.array([True, True, False, True, True, False, True])
  assert experiments.landmark_cells(lm, vis, 3) == {(0, 0), (0, 2), (1, 1), (2, 2)}
  assert [experiments.pose_bin(y) for y in (0, -19.9, 20, -49, 50, 75)] == [
    "frontal",
    "frontal",
    "moderate",
    "moderate",
    "extreme",
    "extreme",
  ]


def test_figure_writers_make_pngs_of_the_right_size(tmp_path):
  face = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  beta = np.zeros(49, np.float32)
  beta[24] = 1.0  # attention on the centre cell
  heat = figures.attention_map(beta, 70)
  assert heat.shape == (70, 70) and heat.max() > 0.9 and heat[0, 0] == 0.0
  peak = np.unravel_index(heat.argmax(), heat.shape)
  assert abs(peak[0] - 34.5) <= 1 and abs(peak[1] - 34.5) <= 1  # the centre cell
  over = figures.overlay(face, beta)
  assert over.shape == face.shape and over.dtype == np.uint8
  path = str(tmp_path / "att.png")
  figures.attention_figure([{"image": face, "title": "a", "betas": [beta, beta]}] * 2, path)
  assert Image.open(path).size == (780, 540) and os.path.getsize(path) > 1000
  gap = [
    {
      "value": v,
      "f1_mean": m,
      "f1_std": 0.0 if m else None,
      "accuracy_mean": m and 60.0,
      "accuracy_std": 0.0 if m else None,
    }
    for v, m in ((0.1, 0.7), (0.2, None), (0.5, 0.6))
  ]
  gap[0]["f1_per_seed"], gap[2]["f1_per_seed"] = [0.7, None], [0.65, 0.55]  # seed 1 half done
  path = str(tmp_path / "sens.png")
  figures.sensitivity_figure(
    {"delta": gap, "k_h": gap[:1]}, path, title="partial: 3 of 5 runs finished"
  )
  assert Image.open(path).size == (840, 340) and os.path.getsize(path) > 1000
  with pytest.raises(ValueError, match="square"):
    figures.attention_map(np.ones(10), 8)


def test_table3_trains_seed_by_seed():
  c = cli.load_config(
    os.path.join(ROOT, "configs", "table3.py") + ":synthetic",
    ["--config.methods=painseeker,lbp_r1_g8,resnet18", "--config.seeds=0,1,2"],
  )
  runs = experiments._seed_major(experiments._method_runs(c, "w"), c.seeds)
  assert [(m, s) for m, s, _, _ in runs] == [
    ("painseeker", 0),
    ("lbp_r1_g8", 0),  # deterministic: one run serves every seed
    ("resnet18", 0),
    ("painseeker", 1),
    ("resnet18", 1),
    ("painseeker", 2),
    ("resnet18", 2),
  ]


def _fake_runs(monkeypatch, order):
  """run_method that records the order and writes a results.json."""

  def fake(cfg, wd):
    order.append(os.path.basename(wd))
    res = {"loro": {"f1": 0.5, "accuracy": 50.0}}
    with open(os.path.join(wd, "results.json"), "w") as f:
      json.dump(res, f)
    return res

  monkeypatch.setattr(experiments, "run_method", fake)


def test_schedule_skips_runs_another_process_holds_and_comes_back(tmp_path, monkeypatch):
  import fcntl
  import threading

  order = []
  _fake_runs(monkeypatch, order)
  jobs = [(name, None, str(tmp_path / name)) for name in ("a", "b", "c")]
  os.makedirs(tmp_path / "a")
  held = open(tmp_path / "a" / "run.lock", "a")  # another process training run a
  fcntl.flock(held, fcntl.LOCK_EX)
  released = []

  def release():
    released.append(list(order))
    fcntl.flock(held, fcntl.LOCK_UN)

  timer = threading.Timer(0.5, release)
  timer.start()
  try:
    results = experiments._schedule(jobs)
  finally:
    timer.cancel()
    held.close()
  assert order == ["b", "c", "a"]  # a was skipped, then waited for
  assert released == [["b", "c"]]  # ... and run only once its lock was released
  assert list(results) == ["a", "b", "c"]


def test_schedule_checks_every_run_s_settings_before_training(tmp_path, monkeypatch, mini_data_dir):
  order = []
  _fake_runs(monkeypatch, order)
  config = mini_config(mini_data_dir)
  jobs = [(name, config, str(tmp_path / name)) for name in ("a", "b")]
  layout.check_config(mini_config(mini_data_dir, **{"loss.k_h": 3}), str(tmp_path / "b"))
  with pytest.raises(ValueError, match=r"b \(b\) holds a run with another configuration"):
    experiments._schedule(jobs)
  assert order == []  # not even the first run trained


def test_schedule_claims_runs_against_other_processes(tmp_path, monkeypatch):
  """While a run trains, its lock is held: a second process (here another
  open file description, as flock sees one) cannot take it."""
  import fcntl

  seen = []

  def fake(cfg, wd):
    with open(os.path.join(wd, "run.lock"), "a") as other:
      try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        seen.append("free")
      except BlockingIOError:
        seen.append("held")
    return {"loro": {"f1": 0.5, "accuracy": 50.0}}

  monkeypatch.setattr(experiments, "run_method", fake)
  experiments._schedule([("x", None, str(tmp_path / "x"))])
  assert seen == ["held"]
  with open(tmp_path / "x" / "run.lock", "a") as f:  # released afterwards
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_sensitivity_seed_major_with_a_report_after_every_run(tmp_path, monkeypatch):
  """All settings of seed 0 before any of seed 1 (a partly filled work directory holds whole
  curves), and sensitivity.json / the figure rewritten after every run, gaps where none finished."""
  from configs import sensitivity

  order, snapshots, titles = [], [], []

  def fake(cfg, wd):
    path = tmp_path / "sensitivity.json"
    snapshots.append(json.loads(path.read_text()) if path.exists() else None)
    order.append(wd)
    res = {"loro": {"f1": cfg.loss.delta + 0.01 * cfg.seed, "accuracy": 50.0 + cfg.seed}}
    # predictions: the first round(20 delta) + seed of the 20 images right, the rest wrong
    right = round(20 * cfg.loss.delta) + cfg.seed
    y = [0, 1] * 5
    preds = [[t if 10 * (r - 1) + i < right else 1 - t for i, t in enumerate(y)] for r in (1, 2)]
    layout.write_results(wd, res, "", _rows({1: (y, preds[0]), 2: (y, preds[1])}))
    return res

  monkeypatch.setattr(experiments, "run_method", fake)
  monkeypatch.setattr(
    experiments.figures, "sensitivity_figure", lambda s, p, title=None: titles.append(title)
  )
  c = sensitivity.get_config("synthetic")
  c.seeds = (0, 1)
  out = experiments.run(c, str(tmp_path))
  assert len(order) == 26
  assert [w.rsplit("seed", 1)[1] for w in order] == ["0"] * 13 + ["1"] * 13
  assert [p["value"] for p in out["sweeps"]["k_h"]] == [3, 5, 10, 15, 20]
  assert all(
    len(p["runs"]) == 2 and p["finished"] == 2 for ps in out["sweeps"].values() for p in ps
  )
  assert [p["f1_mean"] for p in out["sweeps"]["delta"]] == pytest.approx(
    [0.055, 0.105, 0.155, 0.205, 0.505]
  )
  assert out["sweeps"]["delta"][0]["accuracy_std"] == pytest.approx(np.std([50, 51], ddof=1))
  assert out["sweeps"]["delta"][0]["f1_per_seed"] == pytest.approx([0.05, 0.06])
  assert out["sweeps"]["delta"][0]["accuracy_per_seed"] == [50.0, 51.0]
  assert (out["finished_runs"], out["total_runs"]) == (26, 26)
  # Before run k, the report counts k finished runs; the figure says it is partial until the end.
  assert [None if s is None else s["finished_runs"] for s in snapshots] == [None] + list(
    range(1, 26)
  )
  assert titles[:25] == [f"partial: {k} of 26 runs finished" for k in range(1, 26)] and titles[
    25:
  ] == [None, None]
  # Each setting against the default on the same images: delta 0.5 has 10.5 of 20 right on
  # average over the seeds, the default (delta 0.2) 4.5: +30 accuracy points.
  vs = {p["value"]: p.get("vs_default") for p in out["sweeps"]["delta"]}
  assert vs[0.2] is None and vs[0.5]["accuracy"]["diff"] == pytest.approx(30.0)
  assert vs[0.05]["accuracy"]["diff"] == pytest.approx(-15.0)
  assert vs[0.5]["accuracy"]["ci"][0] <= 30.0 <= vs[0.5]["accuracy"]["ci"][1]
  same = out["sweeps"]["k_h"][0]["vs_default"]  # K_h 3: the default's predictions
  assert same["f1"]["diff"] == 0 and same["f1"]["p_value"] == 1
  md = (tmp_path / "sensitivity.md").read_text().splitlines()
  assert any(
    line.startswith("| delta | F1 | Accuracy (%) | ΔF1 vs. default [95% CI], p ") for line in md
  )
  row = next(line for line in md if line.startswith("| 0.5 | 0.5050 ± 0.0071 | 50.50 ± 0.71 | "))
  assert "| +30.000 [" in row and row.endswith("| 2 of 2 | 0.5000/50.00, 0.5100/51.00 |")
  assert (
    "| 0.2 | 0.2050 ± 0.0071 | 50.50 ± 0.71 | (default) | (default) | 2 of 2 "
    "| 0.2000/50.00, 0.2100/51.00 |" in md
  )
  early = snapshots[3]["sweeps"]["delta"]  # delta = 0.05, 0.1, 0.15 of seed 0 done
  assert [p["f1_per_seed"] for p in early] == [[0.05, None], [0.1, None], [0.15, None]] + [
    [None, None]
  ] * 2
  partial_md = experiments.sensitivity_markdown(snapshots[3], c)
  assert partial_md.startswith("# Sensitivity (synthetic, seeds [0, 1]; 3 of 26 runs finished)")
  assert (
    "| 0.15 | 0.1500 | 50.00 | — | — | 1 of 2 | 0.1500/50.00, — |" in partial_md
    and "| 0.2 | — | — | (default) | (default) | 0 of 2 | —, — |" in partial_md
  )
  assert [p["finished"] for p in early] == [1, 1, 1, 0, 0]
  # Partly filled: a setting is set against the default on the seeds both have finished. delta
  # 0.5 has 10 (seed 0) and 11 (seed 1) of 20 right, the default 4 and 5: +30 points on matched
  # seeds; a one-seed setting against a two-seed default would give 27.5 (or 32.5 reversed).
  mixed = [
    s
    for s in snapshots
    if s is not None
    and {d["value"]: d["finished"] for d in s["sweeps"]["delta"]}.get(0.5)
    != {d["value"]: d["finished"] for d in s["sweeps"]["delta"]}.get(0.2)
    and all(d["finished"] for d in s["sweeps"]["delta"] if d["value"] in (0.2, 0.5))
  ]
  assert mixed
  for s in mixed:
    half = next(d for d in s["sweeps"]["delta"] if d["value"] == 0.5)
    assert half["vs_default_seeds"] == 1
    assert half["vs_default"]["accuracy"]["diff"] == pytest.approx(30.0)
    assert "(on the 1 seed both finished) |" in experiments.sensitivity_markdown(s, c)
  assert [p["f1_mean"] for p in early] == pytest.approx([0.05, 0.1, 0.15, None, None])


def _rows(rat_preds):
  """Prediction rows as predictions.csv holds them: {rat: (labels, preds)}."""
  return [
    {"filename": f"rat{rat}_{i}.jpg", "rat_id": rat, "pain": y, "pred": p, "p_pain": float(p)}
    for rat, (ys, ps) in rat_preds.items()
    for i, (y, p) in enumerate(zip(ys, ps))
  ]


def test_table3_writer_from_known_confusion_matrices():
  from configs import table3

  c = table3.get_config("synthetic")
  c.folds, c.seeds, c.bootstrap = (1, 2), (0, 1), 200
  y = [1] * 5 + [0] * 5
  # PainSeeker seed 0: rat1 TP 4 FN 1 TN 5 (F1 8/9, 90%), rat2 TP 5 TN 3 FP 2 (F1 10/12, 80%),
  # pooled TP 9 FN 1 FP 2 TN 8 (F1 18/21, 85%); seed 1 all right. LBP calls everything pain
  # (F1 2/3, 50%).
  ps = {
    0: _rows({1: (y, [1, 1, 1, 1, 0] + [0] * 5), 2: (y, [1] * 5 + [1, 1, 0, 0, 0])}),
    1: _rows({1: (y, y), 2: (y, y)}),
  }
  lbp = {0: _rows({1: (y, [1] * 10), 2: (y, [1] * 10)})}
  methods = {
    "painseeker": experiments.summarize_method("painseeker", ps, ps, None, c, None),
    "lbp_r1_g4": experiments.summarize_method("lbp_r1_g4", lbp, ps, None, c, None),
  }
  ps_loro = methods["painseeker"]["loro"]
  assert (
    ps_loro["f1"]["mean"] == pytest.approx((18 / 21 + 1) / 2)
    and ps_loro["accuracy"]["mean"] == 92.5
  )
  assert methods["painseeker"]["per_rat"]["rat1"]["f1"]["mean"] == pytest.approx((8 / 9 + 1) / 2)
  vs = methods["lbp_r1_g4"]["vs_painseeker"]["seed0"]
  assert vs["paired_bootstrap_f1"]["diff"] == pytest.approx(18 / 21 - 2 / 3)
  # Resampled within rats, as every interval of the report: each resample keeps 10 images of each.
  seed0 = ([r["pain"] for r in ps[0]], [r["pred"] for r in ps[0]], [r["rat_id"] for r in ps[0]])
  assert vs["paired_bootstrap_f1"] == stats.paired_bootstrap_diff(
    seed0[0], seed0[1], [1] * 20, n_boot=200, seed=0, groups=seed0[2]
  )
  # b: PainSeeker right, LBP wrong (its 8 true negatives); c: the reverse (its one false negative).
  assert (vs["mcnemar"]["b"], vs["mcnemar"]["c"]) == (8, 1)
  mean = methods["lbp_r1_g4"]["vs_painseeker_mean"]
  assert mean["painseeker_seeds"] == [0, 1]
  assert mean["f1"]["diff"] == pytest.approx((18 / 21 + 1) / 2 - 2 / 3)
  assert mean["accuracy"]["diff"] == pytest.approx(92.5 - 50.0)
  md = experiments.table3_markdown({"methods": methods}, c).splitlines()
  assert "| Method | Rat1 | Rat2 | LORO |" in md
  assert "| PainSeeker | 0.9444/95.00 | 0.9167/90.00 | 0.9286/92.50 |" in md
  assert "| LBP (R=1, 4x4) + SVM | 0.6667/50.00 | 0.6667/50.00 | 0.6667/50.00 |" in md
  lbp_stats = next(line for line in md if line.startswith("| LBP (R=1, 4x4) + SVM | one run |"))
  assert "| +0.190 [" in lbp_stats and "| +0.262 [" in lbp_stats
  ps_stats = next(line for line in md if line.startswith("| PainSeeker | 0, 1 |"))
  assert ps_stats.endswith("| — | — | — |")
  # ROC AUC of p_pain (here the 0/1 predictions): seed 0 rat1 (20 + 5/2) / 25 = 0.9, rat2
  # (15 + 10/2) / 25 = 0.8, pooled (72 + 26/2) / 100 = 0.85; seed 1 all 1; LBP's constant 0.5.
  auc = methods["painseeker"]["ranking_auc"]
  assert auc["per_rat"]["rat1"]["mean"] == pytest.approx(0.95)
  assert auc["pooled"]["mean"] == pytest.approx(0.925)
  assert "| PainSeeker | 0.950 | 0.900 | 0.925 ± 0.106 | 0.925 ± 0.106 |" in md
  assert "| LBP (R=1, 4x4) + SVM | 0.500 | 0.500 | 0.500 | 0.500 |" in md  # one run: no ±
  # A partly filled table: ResNet-18 has seeds 0 and 1, PainSeeker only seed 0. Seed 1 has no
  # pair yet (it is not compared with PainSeeker's seed 0 under the name seed1).
  partial = experiments.summarize_method("resnet18", ps, {0: ps[0]}, None, c, None)
  assert list(partial["vs_painseeker"]) == ["seed0"]
  assert partial["vs_painseeker"]["seed0"]["paired_bootstrap_f1"]["diff"] == 0
  # The reverse: PainSeeker has seeds 0 and 1, ResNet-18 only seed 0 (its seed 0 is PainSeeker's
  # seed 0). The seed means compare seed 0 with seed 0 only, not with PainSeeker's mean over both.
  one = experiments.summarize_method("resnet18", {0: ps[0]}, ps, None, c, None)
  mean = one["vs_painseeker_mean"]
  assert (mean["seeds"], mean["painseeker_seeds"]) == ([0], [0])
  assert mean["f1"]["diff"] == 0 and mean["accuracy"]["diff"] == 0
  # A deep method whose only seed PainSeeker has not finished: nothing to pair.
  apart = experiments.summarize_method("resnet18", {1: ps[1]}, {0: ps[0]}, None, c, None)
  assert apart["vs_painseeker"] == {} and "vs_painseeker_mean" not in apart
  md = experiments.table3_markdown(
    {"methods": {"painseeker": methods["painseeker"], "resnet18": one}}, c
  ).splitlines()
  row = next(line for line in md if line.startswith("| ResNet-18 | 0 |"))
  assert "| 0.8571 | [" in row and "±" not in row.split("|")[3]  # one run: no ± std
  assert row.endswith("(seeds 0) |")


def test_painseeker_au_method_is_painseeker_with_au_heads(mini_data_dir):
  """The extra method `painseeker_au` (not a default of configs/table3.py) is PainSeeker with the
  RGS AU heads, and its title says so."""
  config = mini_config(mini_data_dir)
  au = experiments.derive(config, experiments.METHODS["painseeker_au"], seed=1)
  assert au.loss.lambda_au == 1.0 and au.seed == 1
  assert loro.method_title(au) == "PainSeeker + AU heads"
  assert loro.method_title(experiments.derive(config, {})) == "PainSeeker"
  from configs import table3

  assert "painseeker_au" not in table3.get_config("synthetic").methods


def test_list_overrides_of_words_and_numbers_take_the_same_form():
  from painseeker_jax import cli

  c = cli.load_config(
    "configs/table3.py:synthetic",
    ["--config.methods=painseeker, painseeker_au", "--config.seeds=0,2"],
  )
  assert c.methods == ("painseeker", "painseeker_au")
  assert c.seeds == (0, 2)
  assert cli.load_config("configs/table3.py:synthetic", ["--config.methods=resnet18"]).methods == (
    "resnet18",
  )
  s = cli.load_config("configs/sensitivity.py:synthetic", ["--config.sweep.k_h=3,20"])
  assert s.sweep.k_h == (3, 20)


def test_paired_difference_within_each_pose_bin(tmp_path):
  """PainSeeker − method per head-pose bin is the seed-mean difference on that bin's images."""
  from configs import table3

  c = table3.get_config("synthetic")
  c.folds, c.seeds, c.bootstrap = (1, 2), (0, 1), 200
  y = [1, 1, 0, 0, 1, 0]
  # rat r image i: frontal for i < 4 (yaw 5°), extreme for i >= 4 (yaw 70°).
  lookup = {
    f"rat{r}_{i}.jpg": (5.0 if i < 4 else -70.0, np.zeros((7, 2)), np.zeros(7, bool))
    for r in (1, 2)
    for i in range(6)
  }
  ps = {s: _rows({1: (y, y), 2: (y, y)}) for s in (0, 1)}  # all right
  # w/o PRSC: right on the frontal images, everything wrong on the extreme ones in seed 0,
  # right everywhere in seed 1.
  wo = {
    0: _rows({1: (y, [1, 1, 0, 0, 0, 1]), 2: (y, [1, 1, 0, 0, 0, 1])}),
    1: _rows({1: (y, y), 2: (y, y)}),
  }
  d = experiments.summarize_method("painseeker_wo_prsc", wo, ps, lookup, c, str(tmp_path))
  pb = d["vs_painseeker_mean"]["pose_bins"]
  assert set(pb) == {"frontal", "extreme"}
  assert pb["frontal"]["f1"]["diff"] == 0 and pb["frontal"]["accuracy"]["diff"] == 0
  # extreme: PainSeeker F1 1, accuracy 100 in both seeds; w/o PRSC seed 0 F1 0, accuracy 0.
  assert pb["extreme"]["f1"]["diff"] == pytest.approx(0.5)
  assert pb["extreme"]["accuracy"]["diff"] == pytest.approx(50.0)
  md = experiments.table3_markdown(
    {
      "methods": {
        "painseeker": experiments.summarize_method("painseeker", ps, ps, lookup, c, str(tmp_path)),
        "painseeker_wo_prsc": d,
      }
    },
    c,
  )
  row = next(line for line in md.splitlines() if line.startswith("| PainSeeker w/o PRSC | ΔF1"))
  assert "ΔF1 +0.500 [" in row and "| — |" in row  # no moderate images


def test_config_files_that_import_configs_load_from_any_folder(tmp_path, monkeypatch):
  """`painseeker run --config=.../configs/table3.py` from another folder: table3.py imports
  `configs.loro`, which needs the folder above configs/ on sys.path (python run.py has it)."""
  import sys

  from painseeker_jax import cli

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(
    sys, "path", [p for p in sys.path if p and os.path.abspath(p) not in (repo, str(tmp_path))]
  )
  for name in [m for m in sys.modules if m == "configs" or m.startswith("configs.")]:
    monkeypatch.delitem(sys.modules, name)
  c = cli.load_config(os.path.join(repo, "configs", "table3.py") + ":synthetic", [])
  assert c.experiment == "table3" and c.dataset == "synthetic"
  with pytest.raises(ValueError, match="no field 'sizee'.*Did you mean"):
    cli.load_config(os.path.join(repo, "configs", "loro.py"), ["--config.model.sizee=full"])


def _with_aus(rows, labels, preds, expected):
  """Adds one AU (`au_orbital`, as loro.au_columns writes it) and an unscored `au_ear`."""
  return [
    dict(
      r,
      au_orbital=e,
      au_orbital_pred=p,
      au_orbital_label=t,
      au_ear=1.0,
      au_ear_pred=1,
      au_ear_label=-1,
      grimace_score=e,
    )
    for r, t, p, e in zip(rows, labels, preds, expected)
  ]


def test_au_scores_and_attention_difference_in_table3(tmp_path):
  """Per-AU scores over seeds are au_metrics' per seed, averaged; the attention difference is
  PainSeeker − method in the share of top regions on landmarks, per pose bin."""
  from configs import table3
  from painseeker_jax import metrics

  c = table3.get_config("synthetic")
  c.folds, c.seeds, c.bootstrap = (1, 2), (0, 1), 200
  c.loss.k_h = 1
  y = [1, 1, 0, 0, 1, 0]
  # Images 0-3 of each rat frontal, 4-5 extreme; one visible landmark, in grid cell (0, 0).
  lm = np.zeros((7, 2))
  lm[0] = (0.1, 0.1)
  vis = np.zeros(7, bool)
  vis[0] = True
  lookup = {f"rat{r}_{i}.jpg": (5.0 if i < 4 else 70.0, lm, vis) for r in (1, 2) for i in range(6)}
  labels = [0, 1, 2, 2, 1, 0, 0, -1, 2, 1, 1, 0]
  au = {
    0: _with_aus(
      _rows({1: (y, y), 2: (y, y)}), labels, [0, 1, 2, 1, 1, 0] * 2, [0.2, 1.0, 1.7] * 4
    ),
    1: _with_aus(
      _rows({1: (y, y), 2: (y, y)}), labels, [0, 0, 2, 2, 2, 0] * 2, [0.5, 0.9, 2.0] * 4
    ),
  }
  ps = {s: _rows({1: (y, y), 2: (y, y)}) for s in (0, 1)}
  files = [r["filename"] for r in ps[0]]

  def attention(method, seed, on_landmark):  # 3 x 3 maps, the largest beta on or off cell 0
    run = os.path.join(tmp_path, "runs", method, f"seed{seed}")
    os.makedirs(run, exist_ok=True)
    beta = np.full((len(files), 9), 0.1)
    beta[np.arange(len(files)), np.where(on_landmark, 0, 8)] = 0.2
    np.savez(os.path.join(run, "attention.npz"), filename=np.array(files), beta=beta)

  frontal = np.array([int(f.split("_")[1][0]) < 4 for f in files])
  for s in (0, 1):
    attention("painseeker", s, np.ones(len(files), bool))
  attention("painseeker_au", 0, np.zeros(len(files), bool))
  attention("painseeker_au", 1, frontal)  # seed 1 on the landmark on frontal faces only
  d = experiments.summarize_method("painseeker_au", au, ps, lookup, c, str(tmp_path))

  per_seed = [
    metrics.au_metrics(
      [[r["au_orbital_label"]] for r in au[s]],
      [[r["au_orbital_pred"]] for r in au[s]],
      [[r["au_orbital"]] for r in au[s]],
      ["au_orbital"],
    )
    for s in (0, 1)
  ]
  orb = d["au"]["au_orbital"]
  assert orb["n"] == 11 and d["au"]["au_ear"] == {"n": 0}
  for k in ("accuracy", "macro_f1", "qwk", "mae"):
    vals = [m["au_orbital"][k] for m in per_seed]
    assert orb[k]["mean"] == pytest.approx(np.mean(vals))
    assert orb[k]["std"] == pytest.approx(np.std(vals, ddof=1))
    lo, hi = orb[k]["ci"]
    assert lo <= orb[k]["mean"] <= hi
  g = d["au"]["grimace_score"]
  assert g["n"] == 11
  assert g["mae"]["mean"] == pytest.approx(np.mean([m["grimace_score"]["mae"] for m in per_seed]))

  att = d["vs_painseeker_mean"]["attention_share"]
  assert att["frontal"]["diff"] == pytest.approx(0.5)
  assert att["extreme"]["diff"] == pytest.approx(1.0) and att["extreme"]["ci"] == (1.0, 1.0)
  assert att["all"]["diff"] == pytest.approx(1 - (0 + 8 / 12) / 2)
  assert "moderate" not in att
  # Against chance (1 landmark cell of 9): seed 0 never on it, seed 1 on frontal faces only.
  vs_chance = d["attention_vs_chance"]
  assert vs_chance["frontal"]["diff"] == pytest.approx(0.5 - 1 / 9)
  assert vs_chance["extreme"]["diff"] == pytest.approx(-1 / 9)
  assert vs_chance["extreme"]["ci"] == pytest.approx((-1 / 9, -1 / 9))
  md = experiments.table3_markdown(
    {
      "methods": {
        "painseeker": experiments.summarize_method("painseeker", ps, ps, lookup, c, str(tmp_path)),
        "painseeker_au": d,
      }
    },
    c,
  ).splitlines()
  assert (
    "| PainSeeker | "
    + " | ".join(["+0.889 [+0.889, +0.889], p < 0.01"] * 2 + ["—"] * 1)
    + " | +0.889 [+0.889, +0.889], p < 0.01 |"
    in md
  )
  row = next(line for line in md if line.startswith("| PainSeeker + AU heads | au_orbital"))
  assert f"| 11 | {orb['accuracy']['mean']:.1f} ± " in row
  assert any(line.startswith("| PainSeeker + AU heads | grimace score | 11 |") for line in md)
  att_row = next(line for line in md if line.startswith("| PainSeeker + AU heads | +0.667 ["))
  assert "| +1.000 [+1.000, +1.000]" in att_row


def test_progress_says_how_long_the_rest_takes(tmp_path, monkeypatch, caplog):
  """After the first run it trains from the start, a process logs the time left at its own pace
  per run (a resumed run took only its rest: not a pace)."""
  clock = [0.0]

  def fake(cfg, wd):
    clock[0] += 300.0 if wd.endswith("seed1") else 1200.0  # a run takes 20 minutes
    res = {"loro": {"f1": 0.5, "accuracy": 50.0}}
    layout.write_json(layout.results_path(wd), res)
    return res

  monkeypatch.setattr(experiments, "run_method", fake)
  monkeypatch.setattr(experiments, "time", types.SimpleNamespace(time=lambda: clock[0]))
  jobs = [(f"m seed {s}", None, str(tmp_path / f"seed{s}")) for s in range(6)]
  os.makedirs(jobs[0][2])  # finished before: neither timed nor counted as left
  layout.write_json(layout.results_path(jobs[0][2]), {"loro": {"f1": 0, "accuracy": 0}})
  os.makedirs(os.path.join(jobs[1][2], "fold_rat1"))  # started before: resumed, 5 minutes left
  with caplog.at_level("INFO", logger="painseeker"):
    experiments._schedule(jobs)
  lines = [r.getMessage() for r in caplog.records if "runs finished]" in r.getMessage()]
  assert lines[:4] == [
    "[1/6 runs finished] m seed 0",
    "[1/6 runs finished] m seed 1",  # nothing timed yet
    "[2/6 runs finished] m seed 2",  # seed 1 was resumed: its 5 minutes are no pace
    "[3/6 runs finished] m seed 3 (about 60 min left at 20 min a run)",
  ]
  assert lines[5] == "[5/6 runs finished] m seed 5 (about 20 min left at 20 min a run)"


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The sweeps of docs/results.md whose finished runs docs/records keeps: the fitted-recipe Fig. 5
# sweep, and its runs re-trained on another machine ("Same seed, other machine", two commands).
# docs/records/<name>: the config it was run with and the documented commands' arguments.
KEPT_RUNS = {
  "sensitivity_fitted": (
    "sensitivity.py:synthetic",
    [
      [
        "--config.seeds=0,1,2",
        "--config.sweep.lambda_prsc=0.05,0.1,1.5",
        "--config.sweep.delta=0.05,0.2,0.5",
        "--config.sweep.k_h=3,5,20",
      ]
    ],
  ),
  "sensitivity_fitted_cpu": (
    "sensitivity.py:synthetic",
    [
      [
        "--config.seeds=1",
        "--config.sweep.lambda_prsc=0.1",
        "--config.sweep.delta=0.05,0.2,0.5",
        "--config.sweep.k_h=3,5,20",
      ],
      [
        "--config.seeds=0",
        "--config.sweep.lambda_prsc=0.1",
        "--config.sweep.delta=0.2",
        "--config.sweep.k_h=5,20",
      ],
    ],
  ),
  "table3_pretrained": ("table3.py:synthetic_pretrained", [[]]),
}


@pytest.mark.parametrize("name", sorted(KEPT_RUNS))
def test_the_kept_runs_continue_the_documented_command(name):
  """Every run in docs/records/<name> is a finished run of a command that docs/results.md gives,
  with the config today's code derives for it: merged into a work directory, the command
  continues the experiment instead of refusing the runs."""
  from painseeker_jax import cli

  records = os.path.join(REPO, "docs", "records", name)
  if not os.path.isdir(records):
    pytest.skip(f"docs/records/{name}: no runs kept yet")
  with open(os.path.join(REPO, "docs", "results.md"), encoding="utf-8") as f:
    text = " ".join(f.read().replace("\\\n", " ").split())  # shell lines joined
  spec, commands = KEPT_RUNS[name]
  planned = {}
  for args in commands:
    documented = " ".join([f"--config=configs/{spec}", f"--workdir=runs/{name}", *args])
    assert documented in text, f"docs/results.md does not give: {documented}"
    config = cli.load_config(os.path.join(REPO, "configs", spec), args)
    if config.experiment == "table3":
      runs = experiments._method_runs(config, records)
      planned.update({os.path.relpath(wd, records): c for _, _, c, wd in runs})
    else:
      _, jobs, _ = experiments.sensitivity_plan(config, records)
      planned.update({os.path.relpath(wd, records): c for _, c, wd in jobs})
  kept = layout.experiment_runs(records)
  assert kept
  for rel in kept:
    assert rel in planned, f"{rel} is not a run of the documented command"
    assert layout.is_finished(os.path.join(records, rel))
    # what check_config (a resumed sweep) would refuse; read-only: the records stay as written
    assert layout.config_differences(planned[rel], os.path.join(records, rel)) == [], rel


def test_compare_runs_pairs_two_runs_image_by_image(tmp_path, capsys):
  from painseeker_jax import cli

  y = [1, 1, 1, 1, 0, 0, 0, 0]
  # a: rat1 all right, rat2 right on 6 of 8; b: rat1 right on 6, rat2 all right except one.
  a = {1: (y, y), 2: (y, [1, 1, 1, 0, 0, 0, 0, 1])}
  b = {1: (y, [1, 1, 0, 1, 0, 1, 0, 0]), 2: (y, [1, 1, 1, 1, 0, 0, 0, 1])}
  for name in ("a", "b", "c"):
    os.makedirs(tmp_path / name)
  for name, preds in (("a", a), ("b", b)):
    layout.write_results(str(tmp_path / name), {"loro": {}}, "", _rows(preds))
  c = experiments.compare_runs(str(tmp_path / "a"), str(tmp_path / "b"), n_boot=300)
  assert c["images"] == 16
  assert c["scores"]["a"]["pooled"]["accuracy"] == pytest.approx(100 * 14 / 16)
  assert c["scores"]["b"]["per_group"]["rat2"]["accuracy"] == pytest.approx(100 * 7 / 8)
  assert c["agreement"] == pytest.approx(13 / 16)
  assert c["agreement_per_group"] == pytest.approx({"rat1": 6 / 8, "rat2": 7 / 8})
  # a right, b wrong: rat1's two; the reverse: rat2's fourth image.
  assert (c["mcnemar"]["b"], c["mcnemar"]["c"]) == (2, 1)
  assert c["accuracy"]["diff"] == pytest.approx(100 * (14 - 13) / 16)
  assert c["f1"] == stats.paired_bootstrap_diff(
    np.array(y + y),
    np.array(a[1][1] + a[2][1]),
    np.array(b[1][1] + b[2][1]),
    n_boot=300,
    groups=np.array([1] * 8 + [2] * 8),
  )
  # The CLI prints the report and writes the JSON.
  out = tmp_path / "c.json"
  argv = ["compare-runs", str(tmp_path / "a"), str(tmp_path / "b"), "--bootstrap=300"]
  assert cli.main(argv + ["--json", str(out)]) == 0
  report = capsys.readouterr().out
  assert "| **pooled** (16 images) | " in report and "| rat2 | " in report
  assert json.loads(out.read_text())["mcnemar"]["b"] == 2
  assert c["warnings"] == [] and "Warning" not in report
  # The same images from another build of the data: compared, with a warning.
  other = json.loads((tmp_path / "b" / layout.RESULTS_JSON).read_text())
  for name, sha in (("a", "aa"), ("b", "bb")):
    res = json.loads((tmp_path / name / layout.RESULTS_JSON).read_text())
    res["provenance"] = {"data": {"sha256": sha * 32}}
    layout.write_json(str(tmp_path / name / layout.RESULTS_JSON), res)
  assert other["loro"] == {}
  warned = experiments.compare_runs(str(tmp_path / "a"), str(tmp_path / "b"), n_boot=300)
  assert warned["warnings"][0].startswith("the runs have 2 data fingerprints")
  assert "**Warning**: the runs have 2 data" in experiments.comparison_markdown(warned)
  # Runs on other images, or one not finished: an error naming the runs.
  layout.write_results(str(tmp_path / "c"), {"loro": {}}, "", _rows({1: a[1]}))
  with pytest.raises(ValueError, match="scored 16 images and .*c 8, not the same ones"):
    experiments.compare_runs(str(tmp_path / "a"), str(tmp_path / "c"))
  assert cli.main(["compare-runs", str(tmp_path / "a"), str(tmp_path / "none")]) == 2
  assert "none: not a finished run" in capsys.readouterr().err


def test_au_table_gives_a_single_run_without_std():
  """One finished run has no spread: its AU cells show the score alone, not '± 0.000'."""
  from configs import table3

  ms = {"mean": 0.5, "std": 0.0, "ci": (0.4, 0.6)}
  au = {"au_ear": {"n": 10, "accuracy": ms, "macro_f1": ms, "qwk": ms, "mae": ms}}
  methods = {"painseeker_au": {"seeds": [0], "au": au}, "other": {"seeds": [0, 1], "au": au}}
  titles = {"painseeker_au": "One", "other": "Two"}
  lines = experiments._table3_au(methods, titles, table3.get_config("synthetic"))
  one = next(line for line in lines if line.startswith("| One |"))
  two = next(line for line in lines if line.startswith("| Two |"))
  assert "±" not in one and "| 0.500 [0.400, 0.600] |" in one
  assert "| 0.500 ± 0.000 [0.400, 0.600] |" in two
