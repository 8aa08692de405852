"""The paper's comparison and analyses, scheduled over one work directory.

`run(config, workdir)` dispatches on `config.experiment`:
  * `loro`: one method, one LORO run (`loro.run_loro` / `lbp_svm.run_lbp_svm`).
  * `table3`: the nine methods of the paper's Table 3 over `config.seeds`,
    then table3.md / table3.json with mean ± std, bootstrap CIs, paired tests
    against PainSeeker, metrics per head-pose bin and attention localisation
    (when the data set knows pose and landmarks: the synthetic twin), and the
    attention figure (Fig. 4); methods with grimace AU heads are also scored
    AU by AU (`au_summary`).
  * `sensitivity`: lambda, delta and K_h varied one at a time around the
    defaults (Fig. 5): sensitivity.json and figure5_sensitivity.png.

`compare_runs(run_a, run_b)` pairs any two finished runs on the same test
images (`painseeker compare-runs`).

Every run lives in its own sub-directory (`layout.run_dir`); a finished
run (`layout.is_finished`) is reused, an interrupted one resumes, so a work
directory fills incrementally and a rerun only does what is missing.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time

import ml_collections
import numpy as np

from painseeker_jax import figures, input_pipeline, layout, loro, stats
from painseeker_jax import metrics as metrics_lib

log = logging.getLogger("painseeker")

# The nine methods of Table 3, as overrides of the LORO config.
METHODS = {
  "painseeker": {},
  "painseeker_wo_prsc": {"loss.lambda_prsc": 0.0},
  "resnet18": {"model.name": "resnet18"},
  # Not in the paper: PainSeeker with the RGS action-unit heads (issue #19); not a default
  # method of configs/table3.py, select it with --config.methods=painseeker,painseeker_au.
  # lambda_au 1.0: the weight configs/loao.py uses (chosen by tools/lambda_au_study.py).
  "painseeker_au": {"loss.lambda_au": 1.0},
  **{
    f"lbp_r{r}_g{g}": {"model.name": "lbp_svm", "lbp.radius": r, "lbp.grid": g}
    for r in (1, 3)
    for g in (4, 8, 16)
  },
}
# What the paper reports (LORO column, F1 / accuracy %), for comparison only.
PAPER_LORO = {
  "painseeker": (0.7731, 74.17),
  "painseeker_wo_prsc": (0.7234, 68.28),
  "resnet18": (0.7393, 68.01),
  "best_lbp": (0.6984, 67.66),
}
# Head-pose bins of the analyses (|yaw| in degrees).
POSE_BINS = (("frontal", 0.0, 20.0), ("moderate", 20.0, 50.0), ("extreme", 50.0, 180.0))
_EXPERIMENT_KEYS = ("experiment", "methods", "seeds", "bootstrap", "sweep", "attention_files")


def run(config: ml_collections.ConfigDict, workdir: str):
  kind = config.get("experiment", "loro")
  if config.dataset == input_pipeline.GRIMACE and kind != "loro":
    raise ValueError(
      f"config.experiment={kind!r} needs RatsPain (rat ids, head pose, landmarks); a lab's "
      "grimace set (config.dataset='grimace') runs leave-one-animal-out: configs/loao.py"
    )
  if kind == "loro":
    return run_method(config, workdir)
  if kind == "table3":
    return run_table3(config, workdir)
  if kind == "sensitivity":
    return run_sensitivity(config, workdir)
  raise ValueError(f"config.experiment={kind!r}; use loro, table3 or sensitivity")


def run_method(config, workdir: str) -> dict:
  """One LORO run of one method; a finished run is read back, not redone (after checking that
  it ran with this config on these data)."""
  if layout.is_finished(workdir):
    layout.check_config(config, workdir)
    loro.check_training_data(config, workdir)
    log.info("%s: finished before, results read back (a new --workdir trains again)", workdir)
    return layout.read_results(workdir)
  if config.model.name == "lbp_svm":
    if config.dataset == input_pipeline.GRIMACE:
      raise ValueError(
        "config.model.name='lbp_svm' runs on RatsPain only; use painseeker or resnet18 on a "
        "lab's grimace set"
      )
    from painseeker_jax import lbp_svm  # noqa: PLC0415  (scikit-image only where needed)

    return lbp_svm.run_lbp_svm(config, workdir)
  return loro.run_loro(config, workdir)


def derive(config, overrides: dict, seed: int | None = None) -> ml_collections.ConfigDict:
  """A plain LORO config: the experiment's base with `overrides` ("a.b": value) applied."""
  c = ml_collections.ConfigDict(config.to_dict())
  for key in _EXPERIMENT_KEYS:
    if key in c:
      del c[key]
  c.experiment = "loro"
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"unknown config field {key!r}")
    node[leaf] = value
  if seed is not None:
    c.seed = seed
  c.lock()
  return c


def _hours(seconds: float) -> str:
  return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _schedule(jobs: list[tuple[str, ml_collections.ConfigDict, str]], after_each=None) -> dict:
  """Runs the jobs in order, skipping finished ones, with a progress summary;
  `after_each()` (if given) is called after every run this process trains.

  Several processes may fill one work directory at once (start the same command
  again, on the same machine or on another one sharing the file system): each
  run is claimed with a lock on `<run>/run.lock` while it trains, a process
  skips runs another one holds and comes back to them (waiting for the lock,
  then reading the results) once it has nothing else to do. A process that
  dies releases its claims, and its runs resume from their checkpoints.
  """
  # Every run's settings first: a run of another configuration (merged in, or started by
  # another command) would otherwise stop the command when its turn comes, hours in.
  for label, cfg, wd in jobs:
    diff = None if cfg is None else layout.config_differences(cfg, wd)
    if diff:
      raise ValueError(
        f"{wd} ({label}) holds a run with another configuration (differs in: "
        f"{', '.join(diff)}); move it away or use another --workdir. Nothing was trained."
      )
  # timed: seconds of the runs this process trained from the start (a resumed run, begun by
  # an earlier process, took only its rest: no measure of the pace)
  results, waiting, timed = {}, [], []

  def one(label, cfg, wd):
    done = sum(layout.is_finished(w) for _, _, w in jobs)
    t0, fresh = time.time(), not layout.is_finished(wd)
    resumed = os.path.isdir(wd) and any(n != layout.RUN_LOCK for n in os.listdir(wd))
    pace = ""
    if fresh and timed:
      per_run = sum(timed) / len(timed)
      pace = f" (about {_hours(per_run * (len(jobs) - done))} left at {_hours(per_run)} a run)"
    log.info("[%d/%d runs finished] %s%s", done, len(jobs), label, pace)
    results[label] = run_method(cfg, wd)
    if fresh and not resumed:
      timed.append(time.time() - t0)
    log.info(
      "%s: F1 %.4f, accuracy %.2f%% (%.0f s)",
      label,
      results[label]["loro"]["f1"],
      results[label]["loro"]["accuracy"],
      time.time() - t0,
    )
    if after_each is not None and fresh:
      after_each()

  for job in jobs:
    with layout.claim(job[2], wait=False) as mine:
      if mine:
        one(*job)
      else:
        log.info("%s: another process is running it; coming back to it later", job[0])
        waiting.append(job)
  for job in waiting:
    with layout.claim(job[2], wait=True):
      one(*job)
  log.info("[%d/%d runs finished]", len(jobs), len(jobs))
  return {label: results[label] for label, _, _ in jobs}


# ---------------------------------------------------------------------------
# Table 3.


def _method_runs(config, workdir, methods=None):
  """(method, seed, config, workdir) of every run of Table 3 (of `methods`, default
  config.methods). LBP + SVM is deterministic: one run serves every seed."""
  out = []
  for m in config.methods if methods is None else methods:
    if m not in METHODS:
      raise ValueError(f"config.methods: unknown method {m!r}; known: {', '.join(METHODS)}")
    seeds = (config.seeds[0],) if METHODS[m].get("model.name") == "lbp_svm" else tuple(config.seeds)
    for s in seeds:
      out.append((m, s, derive(config, METHODS[m], seed=s), layout.run_dir(workdir, m, s)))
  return out


def run_table3(config, workdir: str) -> dict:
  """Trains the runs of Table 3 that are not finished, rewriting table3.md / .json (and Fig. 4)
  after every run this process trains: a partly filled work directory shows its table so far."""
  runs = _method_runs(config, workdir)  # checked before anything is written
  os.makedirs(workdir, exist_ok=True)
  # the data set's pose and landmarks, read once, when the first report needs them
  lookup = functools.cache(lambda: ground_truth_lookup(config))
  report = lambda: table3_report(config, workdir, runs, lookup())
  _schedule(
    [(f"{m} seed {s}", c, w) for m, s, c, w in _seed_major(runs, config.seeds)], after_each=report
  )
  return report()


def _seed_major(runs, seeds):
  """`runs` in training order: every method of the first seed, then of the next, so that a
  partly filled work directory compares the methods at the same seeds (as the Fig. 5 sweep)."""
  return sorted(runs, key=lambda r: list(seeds).index(r[1]))


def table3_report(config, workdir: str, runs, lookup) -> dict:
  """Writes table3.json / table3.md (and Fig. 4) from the finished runs of `runs`
  ((method, seed, config, run dir) as `_method_runs` gives them); the unfinished ones are
  listed in the report's `missing`. The finished runs of the other Table 3 methods in `workdir`
  (e.g. `painseeker_au` from an earlier `--config.methods=...` command) are reported too when
  their settings are the ones these runs would have; they are not listed as missing."""
  preds, missing, used = {}, [], []
  for m, s, c, w in runs:
    if not layout.is_finished(w):
      missing.append(f"{m} seed {s}")
    elif layout.config_differences(c, w):  # e.g. merged in from another command
      missing.append(f"{m} seed {s} (its run has another configuration)")
    else:
      preds.setdefault(m, {})[s] = layout.read_predictions(w)
      used.append(w)
  others = [m for m in METHODS if m not in config.methods]
  for m, s, c, w in _method_runs(config, workdir, others):
    if layout.is_finished(w) and layout.config_differences(c, w) == []:
      preds.setdefault(m, {})[s] = layout.read_predictions(w)
      used.append(w)
  report = {
    "config": json.loads(config.to_json_best_effort()),
    "methods": {},
    "missing": missing,
    "warnings": layout.fingerprint_warnings(used),
  }
  ref = preds.get("painseeker")
  for m, by_seed in preds.items():
    report["methods"][m] = summarize_method(m, by_seed, ref, lookup, config, workdir)
  best_lbp = versus_best_lbp(preds, report["methods"], config)
  if best_lbp:
    report["vs_best_lbp"] = best_lbp
  layout.write_json(os.path.join(workdir, "table3.json"), report)
  layout.write_atomic(os.path.join(workdir, "table3.md"), table3_markdown(report, config))
  seed = config.seeds[0]
  if all(seed in preds.get(m, {}) for m in ("painseeker", "painseeker_wo_prsc")):
    write_attention_figure(config, workdir, lookup)
  return report


def _is_lbp(method: str) -> bool:
  return METHODS[method].get("model.name") == "lbp_svm"


def versus_best_lbp(preds: dict, summaries: dict, config) -> dict | None:
  """Each deep method − the best LBP + SVM variant (the highest LORO F1 among the finished ones,
  as the paper's "best LBP" column picks it, so the choice is made on the test scores): the
  difference of the seed means in F1 and accuracy, two-level bootstrap as `vs_painseeker_mean`
  (images stratified by rat, the deep method's seeds resampled; LBP is one deterministic run).
  None unless both kinds have finished runs."""
  lbp = [m for m in preds if _is_lbp(m)]
  deep = [m for m in preds if not _is_lbp(m)]
  if not lbp or not deep:
    return None
  best = max(lbp, key=lambda m: summaries[m]["loro"]["f1"]["mean"])
  lbp_rows = preds[best][min(preds[best])]
  out = {"lbp": best, "methods": {}}
  for m in deep:
    first = preds[m][min(preds[m])]
    y, rat_ids = _labels(first)
    own, ref = _seed_preds(first, preds[m]), _seed_preds(first, {0: lbp_rows})
    out["methods"][m] = _seed_mean_diffs(y, own, ref, rat_ids, config)
  return out


def _labels(rows):
  """The pain labels and rat ids of `rows` (arrays, in their order)."""
  return np.array([r["pain"] for r in rows]), np.array([r["rat_id"] for r in rows])


def _seed_preds(rows, by_seed: dict) -> np.ndarray:
  """seeds x images: each seed's predictions on the images of `rows`, in their order."""
  return np.array([[r["pred"] for r in _align(rows, by_seed[s])[1]] for s in sorted(by_seed)])


def _seed_mean_diffs(y, preds_a, preds_b, rat_ids, config) -> dict:
  """F1 and accuracy of a − b, the difference of the means over each one's runs (runs x n), with
  the two-level bootstrap (images stratified by rat, runs resampled)."""
  return {
    k: stats.paired_bootstrap_diff(
      y,
      preds_a,
      preds_b,
      metric=k,
      n_boot=config.bootstrap,
      seed=0,
      groups=rat_ids,
      resample_runs=True,
    )
    for k in ("f1", "accuracy")
  }


def _confusion_scores(rows):
  y = [r["pain"] for r in rows]
  p = [r["pred"] for r in rows]
  return metrics_lib.loro_metrics(y, p, [f"rat{r['rat_id']}" for r in rows])


def _ranking_auc(by_seed: dict, seeds, rats) -> dict:
  """ROC AUC of p_pain (`metrics.ranking_auc`) per seed, as mean ± std over seeds: pooled,
  the mean of the rats', and each rat's (None where a rat has one class only)."""
  per_seed = [
    metrics_lib.ranking_auc(
      [r["pain"] for r in by_seed[s]],
      [r["p_pain"] for r in by_seed[s]],
      [f"rat{r['rat_id']}" for r in by_seed[s]],
    )
    for s in seeds
  ]
  agg = lambda vals: stats.mean_std(vals) if all(v is not None for v in vals) else None
  return {
    "pooled": agg([a["pooled"] for a in per_seed]),
    "within_mean": agg([a["within_mean"] for a in per_seed]),
    "per_rat": {g: agg([a["per_group"].get(g) for a in per_seed]) for g in rats},
  }


def summarize_method(method, by_seed: dict, ref_by_seed, lookup, config, workdir) -> dict:
  seeds = sorted(by_seed)
  per_seed = {s: _confusion_scores(by_seed[s]) for s in seeds}
  rats = sorted({g for s in seeds for g in per_seed[s]["per_group"]}, key=lambda g: int(g[3:]))
  out = {"seeds": seeds, "per_rat": {}, "loro": {}}
  for g in rats:
    out["per_rat"][g] = {
      k: stats.mean_std([per_seed[s]["per_group"][g][k] for s in seeds]) for k in ("f1", "accuracy")
    }
  out["loro"] = {
    k: stats.mean_std([per_seed[s]["pooled"][k] for s in seeds]) for k in ("f1", "accuracy")
  }
  out["ranking_auc"] = _ranking_auc(by_seed, seeds, rats)
  first = by_seed[seeds[0]]
  preds = _seed_preds(first, by_seed)
  y, rat_ids = _labels(first)
  out["bootstrap_ci"] = stats.bootstrap_ci(
    y, preds, n_boot=config.bootstrap, seed=0, groups=rat_ids
  )  # of the seed mean
  # The seeds compared with PainSeeker: those both have finished (a partly filled table must
  # not set one method's seed 0 against the other's seeds 0 and 1); the deterministic LBP run
  # stands for every seed, against all of PainSeeker's.
  lbp = _is_lbp(method)
  pair_seeds = []
  if ref_by_seed is not None and method != "painseeker":
    pair_seeds = seeds if lbp else [s for s in seeds if s in ref_by_seed]
    ref_seeds = sorted(ref_by_seed) if lbp else pair_seeds
    out["vs_painseeker"] = {}
    for s in pair_seeds:
      ref_seed = s if s in ref_by_seed else min(ref_by_seed)  # LBP: PainSeeker's first seed
      a, b = _align(ref_by_seed[ref_seed], by_seed[s])
      ya, rats_a = _labels(a)
      pa, pb = np.array([r["pred"] for r in a]), np.array([r["pred"] for r in b])
      out["vs_painseeker"][f"seed{s}"] = {
        "painseeker_seed": ref_seed,
        "mcnemar": stats.mcnemar(ya, pa, pb),
        "paired_bootstrap_f1": stats.paired_bootstrap_diff(
          ya, pa, pb, metric="f1", n_boot=config.bootstrap, seed=0, groups=rats_a
        ),
      }
  if pair_seeds:
    # The difference of the means over those seeds, seeds resampled too (part of the seed
    # spread: too narrow with few seeds, docs/results.md "How far the two-level interval
    # reaches").
    own = _seed_preds(first, {s: by_seed[s] for s in pair_seeds})
    ref_preds = _seed_preds(first, {s: ref_by_seed[s] for s in ref_seeds})
    out["vs_painseeker_mean"] = {
      "seeds": pair_seeds,
      "painseeker_seeds": ref_seeds,
      **_seed_mean_diffs(y, ref_preds, own, rat_ids, config),
    }
    if lookup is not None:  # the same difference within each head-pose bin
      bins = np.array([pose_bin(lookup[r["filename"]][0]) for r in first])
      out["vs_painseeker_mean"]["pose_bins"] = {
        name: _seed_mean_diffs(y[sel], ref_preds[:, sel], own[:, sel], rat_ids[sel], config)
        for name, _, _ in POSE_BINS
        if (sel := bins == name).any()
      }
  if lookup is not None:
    out["pose_bins"] = pose_bin_metrics(by_seed, lookup)
    hits = attention_hits(method, seeds, config, workdir, lookup)
    if hits is not None:
      out["attention_localisation"] = attention_localisation(hits, lookup)
      out["attention_vs_chance"] = attention_vs_chance(hits, first, rat_ids, config, lookup)
      if pair_seeds:
        own_hits = (
          hits
          if pair_seeds == seeds
          else attention_hits(method, pair_seeds, config, workdir, lookup)
        )
        ref_hits = attention_hits("painseeker", ref_seeds, config, workdir, lookup)
        if ref_hits is not None:
          out["vs_painseeker_mean"]["attention_share"] = attention_difference(
            ref_hits, own_hits, first, rat_ids, config, lookup
          )
  au = au_summary(by_seed, config)
  if au is not None:
    out["au"] = au
  return out


def _au_names(rows) -> list[str]:
  """The AUs of prediction rows written by a model with AU heads (`loro.au_columns`)."""
  return [k for k in rows[0] if k.startswith("au_") and not k.endswith(("_pred", "_label"))]


def au_summary(by_seed: dict, config) -> dict | None:
  """Per AU of a method with AU heads: accuracy (%), macro-F1, QWK and MAE over the images
  whose AU is known, pooled over the folds (mean ± std over seeds, and 95% CIs of the seed mean
  by the stratified image bootstrap of `bootstrap_ci`); `grimace_score`: the MAE of the mean
  expected score against the mean known label (`metrics.grimace_scores`). None without AU
  heads."""
  seeds = sorted(by_seed)
  first = by_seed[seeds[0]]
  names = _au_names(first)
  if not names:
    return None
  runs = [_align(first, by_seed[s])[1] for s in seeds]
  labels = np.array([[int(r[f"{n}_label"]) for n in names] for r in first])  # N x A
  pred_SxNxA = np.array([[[int(r[f"{n}_pred"]) for n in names] for r in rows] for rows in runs])
  exp_SxNxA = np.array([[[float(r[n]) for n in names] for r in rows] for rows in runs])
  rat_ids = np.array([r["rat_id"] for r in first])

  def summary(stat, n_images, groups):
    per_seed = stat(np.arange(n_images)[None])  # {metric: (S, 1)}
    ci = stats.bootstrap_stat_ci(
      lambda idx: {k: v.mean(0) for k, v in stat(idx).items()},
      n_images,
      config.bootstrap,
      seed=0,
      groups=groups,
    )
    return {
      "n": n_images,
      **{k: {**stats.mean_std(v[:, 0]), "ci": ci[k]} for k, v in per_seed.items()},
    }

  out = {}
  for a, name in enumerate(names):
    known = labels[:, a] >= 0
    t, p, e = labels[known, a], pred_SxNxA[:, known, a], exp_SxNxA[:, known, a]

    def au_stat(idx, t=t, p=p, e=e):  # idx (B, n) -> {metric: (S, B)}
      scores = metrics_lib.au_level_scores(t[idx][None], p[:, idx])
      return {**scores, "mae": np.abs(e[:, idx] - t[idx][None]).mean(-1)}

    out[name] = summary(au_stat, int(known.sum()), rat_ids[known]) if known.any() else {"n": 0}
  rows, true_score, pred_score = metrics_lib.grimace_scores(labels, exp_SxNxA)

  def grimace_stat(idx):
    return {"mae": np.abs(pred_score[:, idx] - true_score[idx][None]).mean(-1)}

  if rows.any():
    out["grimace_score"] = summary(grimace_stat, int(rows.sum()), rat_ids[rows])
  return out


def _align(rows_a, rows_b):
  """The two methods' rows for the same images, in the same order."""
  by_name = {r["filename"]: r for r in rows_b}
  common = [r for r in rows_a if r["filename"] in by_name]
  if len(common) != len(rows_a) or len(rows_a) != len(rows_b):
    raise ValueError("the methods were evaluated on different images; cannot pair them")
  return common, [by_name[r["filename"]] for r in common]


def ground_truth_lookup(config):
  """filename -> (yaw, landmarks_7x2, visible_7) when the data set knows the pose
  (synthetic twin)."""
  rats = [f"rat{k}" for k in config.folds]
  sources = input_pipeline.get_sources(config.dataset, rats, config.data_dir, config.manual_dir)
  out = {}
  for src in sources.values():
    for i in range(len(src)):
      rec = src[i]
      yaw = float(rec["head_pose"][0])
      if np.isnan(yaw):
        return None
      name = (
        rec["filename"].decode() if isinstance(rec["filename"], bytes) else str(rec["filename"])
      )
      out[name] = (
        yaw,
        np.asarray(rec["landmarks"], np.float32),
        np.asarray(rec["landmark_visible"], bool),
      )
  return out


def pose_bin(yaw: float) -> str:
  for name, lo, hi in POSE_BINS:
    if lo <= abs(yaw) < hi:
      return name
  return POSE_BINS[-1][0]


def pose_bin_metrics(by_seed: dict, lookup: dict) -> dict:
  """Pooled F1 / accuracy per |yaw| bin, mean ± std over seeds."""
  out = {}
  for name, _, _ in POSE_BINS:
    vals = {"f1": [], "accuracy": []}
    n = 0
    for rows in by_seed.values():
      sel = [r for r in rows if pose_bin(lookup[r["filename"]][0]) == name]
      if not sel:
        continue
      n = len(sel)
      c = metrics_lib.confusion([r["pain"] for r in sel], [r["pred"] for r in sel])
      sc = metrics_lib.scores_from_confusion(**c)
      vals["f1"].append(sc["f1"])
      vals["accuracy"].append(sc["accuracy"])
    if n:
      out[name] = {"n": n, **{k: stats.mean_std(v) for k, v in vals.items()}}
  return out


def landmark_cells(landmarks_7x2, visible_7, grid: int) -> set:
  """Grid cells (row, col) of a grid x grid map that hold a visible AU landmark."""
  cells = set()
  for (x, y), v in zip(landmarks_7x2, visible_7):
    if v and np.isfinite(x) and np.isfinite(y):
      cells.add((min(int(y * grid), grid - 1), min(int(x * grid), grid - 1)))
  return cells


def attention_hits(method, seeds, config, workdir, lookup) -> list[dict] | None:
  """Per seed of `method`, filename -> (share of the K_h largest beta of the image on grid cells
  holding a visible AU landmark, share of such cells = chance); None unless every seed's run
  has attention maps."""
  out = []
  for seed in seeds:
    run = layout.run_dir(workdir, method, seed)
    if not os.path.exists(layout.attention_path(run)):
      return None
    data = layout.read_attention(run)
    hits = {}
    for name, beta in zip(data["filename"], data["beta"]):
      _, lm, vis = lookup[str(name)]
      grid = int(round(np.sqrt(beta.size)))
      cells = landmark_cells(lm, vis, grid)
      top = np.argsort(-beta)[: config.loss.k_h]
      hit = np.mean([(int(i) // grid, int(i) % grid) in cells for i in top])
      hits[str(name)] = (float(hit), len(cells) / beta.size)
    out.append(hits)
  return out


def attention_localisation(hits_by_seed: list[dict], lookup) -> dict:
  """Share of the K_h largest beta that fall on cells holding a visible AU landmark,
  per pose bin (mean ± std over seeds), with the chance level (share of such cells);
  `hits_by_seed` as `attention_hits` gives it."""
  per_bin = {name: {"share": [], "chance": []} for name, _, _ in POSE_BINS}
  for hits in hits_by_seed:
    sums = {name: [0.0, 0.0, 0] for name, _, _ in POSE_BINS}
    for name, (hit, chance) in hits.items():
      acc = sums[pose_bin(lookup[name][0])]
      acc[0] += hit
      acc[1] += chance
      acc[2] += 1
    for name, (hit, chance, n) in sums.items():
      if n:
        per_bin[name]["share"].append(hit / n)
        per_bin[name]["chance"].append(chance / n)
  return {
    name: {k: stats.mean_std(v) for k, v in d.items()} for name, d in per_bin.items() if d["share"]
  }


def attention_difference(ref_hits, hits, rows, rat_ids, config, lookup) -> dict:
  """PainSeeker − method in the attention share of `attention_localisation` (the seed means;
  `ref_hits` / `hits` as `attention_hits` gives them), over all test images (`rows`, stratified
  by `rat_ids`) and within each pose bin, with the two-level bootstrap of the pain differences
  (`stats.paired_bootstrap_mean_diff`, seeds resampled)."""
  files = [r["filename"] for r in rows]
  shares = [np.array([[h[f][0] for f in files] for h in by_seed]) for by_seed in (ref_hits, hits)]
  return _mean_diff_by_bin(shares[0], shares[1], files, rat_ids, config, lookup)


def attention_vs_chance(hits, rows, rat_ids, config, lookup) -> dict:
  """The method's attention share minus chance (each image's share of landmark cells), over all
  test images and within each pose bin, with the bootstrap of `attention_difference` (images
  stratified by rat, seeds resampled). Positive: more of the K_h top regions on AU landmarks
  than K_h cells drawn at random."""
  files = [r["filename"] for r in rows]
  shares = np.array([[h[f][0] for f in files] for h in hits])
  chance = np.array([[hits[0][f][1] for f in files]])  # the same for every seed
  return _mean_diff_by_bin(shares, chance, files, rat_ids, config, lookup)


def _mean_diff_by_bin(a, b, files, rat_ids, config, lookup) -> dict:
  """`stats.paired_bootstrap_mean_diff` of (runs x images) `a` − `b`, over all images and
  within each pose bin ("all", "frontal", ...; bins without images left out)."""
  bins = np.array([pose_bin(lookup[f][0]) for f in files])
  out = {}
  masks = [("all", np.ones(len(files), bool))] + [(n, bins == n) for n, _, _ in POSE_BINS]
  for name, sel in masks:
    if sel.any():
      out[name] = stats.paired_bootstrap_mean_diff(
        a[:, sel],
        b[:, sel],
        n_boot=config.bootstrap,
        seed=0,
        groups=rat_ids[sel],
        resample_runs=True,
      )
  return out


def _fmt(ms, digits, single: bool = False):
  """mean ± std; the mean alone for a `single` run (its std of 0 would read as no spread)."""
  if single:
    return f"{ms['mean']:.{digits}f}"
  return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def _p(r, config) -> str:
  """A bootstrap p value; 0 reads as below the bootstrap's resolution, 2 / resamples."""
  return f"{r['p_value']:.3g}" if r["p_value"] else f"< {2 / config.bootstrap:.1g}"


def _diff_ci(r) -> str:
  return f"{r['diff']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]"


def _table3_scores(methods: dict, titles: dict, config) -> list[str]:
  """The paper's layout: per-rat and LORO F1/accuracy cells, mean over seeds."""
  rats = [f"rat{k}" for k in config.folds]
  lines = [
    f"# Table 3 ({config.dataset}, seeds {list(config.seeds)}; "
    "LBP + SVM is deterministic: one run)",
    "",
    "Per-rat and LORO cells: F1/Accuracy (%), mean over seeds. LORO = confusion matrices "
    "summed over the folds.",
    "",
    "| Method | " + " | ".join(r.replace("rat", "Rat") for r in rats) + " | LORO |",
    "|---" * (len(rats) + 2) + "|",
  ]
  for m, d in methods.items():
    cells = [
      f"{d['per_rat'][r]['f1']['mean']:.4f}/{d['per_rat'][r]['accuracy']['mean']:.2f}" for r in rats
    ]
    cells.append(f"{d['loro']['f1']['mean']:.4f}/{d['loro']['accuracy']['mean']:.2f}")
    lines.append(f"| {titles[m]} | " + " | ".join(cells) + " |")
  return lines


def _table3_statistics(methods: dict, titles: dict, config) -> list[str]:
  """Mean ± std, bootstrap CIs and the paired tests against PainSeeker."""
  lines = [
    "",
    "## Statistics",
    "",
    f"Mean ± std over seeds; 95% CI: stratified bootstrap over test images "
    f"({config.bootstrap} resamples), each scoring every seed's predictions and averaging them "
    "(a CI of the mean over these seeds: image sampling only, the seed spread is not in it); "
    "vs. PainSeeker: exact McNemar p (of the errors, i.e. accuracy) and the paired-bootstrap F1 "
    "difference ΔF1 = PainSeeker − method per seed "
    "(images stratified by rat) "
    "(positive: PainSeeker better; the single LBP + SVM run is compared with PainSeeker's first "
    "seed); last column: the difference of the means over the seeds both have finished (all "
    "of PainSeeker's against the one LBP + SVM run), with a two-level "
    "bootstrap (images stratified by rat, and each method's seeds drawn with replacement) and "
    "its bootstrap p; the seeds are named when they are not all of the table's. With few "
    "seeds that interval holds only part of the seed spread and is too narrow (measured "
    'coverage: docs/results.md "How far the two-level interval reaches"). A method with '
    "one finished run has no ± std.",
    "",
    "| Method | seeds | LORO F1 | 95% CI | LORO Acc (%) | 95% CI | McNemar p vs PainSeeker "
    "| ΔF1 [95% CI] | ΔF1 of seed means [95% CI], p |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for m, d in methods.items():
    ci = d["bootstrap_ci"]
    vs = d.get("vs_painseeker", {})
    p = ", ".join(f"{v['mcnemar']['p_value']:.3g}" for v in vs.values()) or "—"
    diff = ", ".join(_diff_ci(v["paired_bootstrap_f1"]) for v in vs.values()) or "—"
    seed_means = d.get("vs_painseeker_mean")
    mean_cell = "—"
    if seed_means:
      mean_cell = f"{_diff_ci(seed_means['f1'])}, {_p(seed_means['f1'], config)}"
      used = sorted(set(seed_means["painseeker_seeds"]) | set(seed_means["seeds"]))
      if used != sorted(config.seeds) and not _is_lbp(m):
        mean_cell += f" (seeds {', '.join(map(str, used))})"
    seeds = "one run" if _is_lbp(m) else ", ".join(map(str, d["seeds"]))
    one = len(d["seeds"]) == 1
    lines.append(
      f"| {titles[m]} | {seeds} | {_fmt(d['loro']['f1'], 4, one)} | "
      f"[{ci['f1'][0]:.3f}, {ci['f1'][1]:.3f}] | {_fmt(d['loro']['accuracy'], 2, one)} | "
      f"[{ci['accuracy'][0]:.1f}, {ci['accuracy'][1]:.1f}] | {p} | {diff} | {mean_cell} |"
    )
  return lines


def _table3_vs_best_lbp(report: dict, titles: dict, config) -> list[str]:
  """The deep methods against the best LBP + SVM variant."""
  vs = report.get("vs_best_lbp")
  if not vs:
    return []
  lines = [
    "",
    f"## Deep methods against the best LBP + SVM ({titles[vs['lbp']]})",
    "",
    'Method − that LBP variant (chosen by its LORO F1, as the paper\'s "best LBP" column: picked '
    "on the test scores among the variants, so it flatters LBP): the difference of the seed "
    "means with the two-level bootstrap of the Statistics section; positive: the deep method "
    "is better.",
    "",
    "| Method | ΔF1 [95% CI], p | ΔAcc (points) [95% CI], p |",
    "|---|---|---|",
  ]
  for m, d in vs["methods"].items():
    f1, acc = d["f1"], d["accuracy"]
    lines.append(
      f"| {titles[m]} | {_diff_ci(f1)}, {_p(f1, config)} | {acc['diff']:+.1f} "
      f"[{acc['ci'][0]:+.1f}, {acc['ci'][1]:+.1f}], {_p(acc, config)} |"
    )
  return lines


def _table3_ranking(methods: dict, titles: dict) -> list[str]:
  """ROC AUC of p_pain: within each rat and pooled (the threshold-free view)."""
  some = next(iter(methods.values()), {})
  if "ranking_auc" not in some:
    return []
  rats = list(some["ranking_auc"]["per_rat"])
  lines = [
    "",
    "## Ranking (ROC AUC of p_pain)",
    "",
    "Threshold-free: the chance that a pain image scores above a no-pain image, mean ± std over "
    "seeds. Within a rat it asks whether the model orders that animal's faces; pooled, all "
    "animals' scores are ranked together. A pooled AUC below the rats' mean means the animals' "
    "scores sit at different heights, which the fixed threshold (p_pain > 0.5) turns into "
    "errors on whole animals.",
    "",
    "| Method | " + " | ".join(r.capitalize() for r in rats) + " | mean of rats | pooled |",
    "|---" * (len(rats) + 3) + "|",
  ]
  cell = lambda ms: "—" if ms is None else f"{ms['mean']:.3f}"
  for m, d in methods.items():
    a = d["ranking_auc"]
    row = [cell(a["per_rat"].get(r)) for r in rats]
    one = len(d["seeds"]) == 1
    row += [_fmt(a["within_mean"], 3, one) if a["within_mean"] else "—"]
    row += [_fmt(a["pooled"], 3, one) if a["pooled"] else "—"]
    lines.append(f"| {titles[m]} | " + " | ".join(row) + " |")
  return lines


def _table3_pose_bins(methods: dict, titles: dict, config) -> list[str]:
  """F1/accuracy per head-pose bin (data sets that know the pose)."""
  if not any("pose_bins" in d for d in methods.values()):
    return []
  names = [n for n, _, _ in POSE_BINS]
  counts = next(iter(methods.values()))["pose_bins"]
  lines = [
    "",
    "## By head pose (|yaw|: frontal < 20°, moderate 20-50°, extreme ≥ 50°)",
    "",
    "F1/Accuracy (%), mean over seeds.",
    "",
    "| Method | " + " | ".join(f"{n} (n={counts.get(n, {}).get('n', 0)})" for n in names) + " |",
    "|---" * (len(names) + 1) + "|",
  ]
  for m, d in methods.items():
    pb = d.get("pose_bins", {})
    cells = [
      f"{pb[n]['f1']['mean']:.4f}/{pb[n]['accuracy']['mean']:.2f}" if n in pb else "—"
      for n in names
    ]
    lines.append(f"| {titles[m]} | " + " | ".join(cells) + " |")

  def cell(r):
    acc = r["accuracy"]
    return (
      f"ΔF1 {_diff_ci(r['f1'])}, p {_p(r['f1'], config)}; ΔAcc {acc['diff']:+.1f} "
      f"[{acc['ci'][0]:+.1f}, {acc['ci'][1]:+.1f}], p {_p(acc, config)}"
    )

  return lines + _paired_table(
    methods,
    titles,
    "pose_bins",
    names,
    cell,
    "PainSeeker − method within each bin: the difference of the seed means (over the seeds of "
    "the Statistics section's last column) with the two-level "
    "bootstrap of the Statistics section (images stratified by rat and seeds resampled), "
    "ΔF1 and Δaccuracy (points), 95% CI, bootstrap p.",
  )


def _paired_table(methods, titles, key, columns, cell, caption) -> list[str]:
  """A table of the methods' `vs_painseeker_mean[key]` ({column: difference}), one row per
  method that has it, `cell(difference)` per column ("—" where absent)."""
  paired = {
    m: d["vs_painseeker_mean"][key]
    for m, d in methods.items()
    if key in d.get("vs_painseeker_mean", {})
  }
  if not paired:
    return []
  lines = ["", caption, "", "| Method | " + " | ".join(columns) + " |"]
  lines.append("|---" * (len(columns) + 1) + "|")
  for m, by_column in paired.items():
    cells = [cell(by_column[c]) if c in by_column else "—" for c in columns]
    lines.append(f"| {titles[m]} | " + " | ".join(cells) + " |")
  return lines


def _table3_attention(methods: dict, titles: dict, config) -> list[str]:
  """Share of the most attended regions on AU landmarks, per pose bin, with chance."""
  if not any("attention_localisation" in d for d in methods.values()):
    return []
  names = [n for n, _, _ in POSE_BINS]
  lines = [
    "",
    f"## Attention localisation (share of the K_h={config.loss.k_h} largest beta on "
    "grid cells holding a visible AU landmark; chance = share of such cells)",
    "",
    "| Method | " + " | ".join(names) + " |",
    "|---" * (len(names) + 1) + "|",
  ]
  for m, d in methods.items():
    if "attention_localisation" in d:
      al = d["attention_localisation"]
      cells = [
        f"{al[n]['share']['mean']:.3f} (chance {al[n]['chance']['mean']:.3f})" if n in al else "—"
        for n in names
      ]
      lines.append(f"| {titles[m]} | " + " | ".join(cells) + " |")
  chance_rows = [
    f"| {titles[m]} | "
    + " | ".join(
      f"{_diff_ci(d['attention_vs_chance'][c])}, p {_p(d['attention_vs_chance'][c], config)}"
      if c in d["attention_vs_chance"]
      else "—"
      for c in ["all", *names]
    )
    + " |"
    for m, d in methods.items()
    if "attention_vs_chance" in d
  ]
  if chance_rows:
    lines += [
      "",
      "Share − chance (per image, averaged; 95% CI and p: bootstrap over images stratified by "
      "rat, seeds resampled; positive: the top regions fall on AU landmarks more often than "
      "regions drawn at random).",
      "",
      "| Method | " + " | ".join(["all", *names]) + " |",
      "|---" * (len(names) + 2) + "|",
      *chance_rows,
    ]
  return lines + _paired_table(
    methods,
    titles,
    "attention_share",
    ["all", *names],
    lambda r: f"{_diff_ci(r)}, p {_p(r, config)}",
    "PainSeeker − method in that share (difference of the seed means over the seeds of the "
    "Statistics section's last column, two-level bootstrap as "
    "for ΔF1: images stratified by rat, seeds resampled; 95% CI, bootstrap p; negative: the "
    "method puts more of its attention on the landmarks).",
  )


def _table3_au(methods: dict, titles: dict, config) -> list[str]:
  """Per-AU scores of the methods with grimace AU heads."""
  if not any("au" in d for d in methods.values()):
    return []
  lines = [
    "",
    "## Grimace action units (methods with AU heads)",
    "",
    "Over the test images whose AU was scored, pooled over the folds: mean ± std over seeds "
    f"[95% CI of the seed mean, stratified image bootstrap, {config.bootstrap} resamples: image "
    "sampling only]; one run: its score alone. "
    "QWK: Cohen's kappa with quadratic weights; MAE: |expected score − label| (levels 0-2); "
    "grimace score: mean over an image's scored AUs.",
    "",
    "| Method | AU | n | Accuracy (%) | Macro-F1 | QWK | MAE |",
    "|---|---|---|---|---|---|---|",
  ]

  for m, d in methods.items():
    one = len(d["seeds"]) == 1

    def cell(ms, digits, one=one):
      return f"{_fmt(ms, digits, one)} [{ms['ci'][0]:.{digits}f}, {ms['ci'][1]:.{digits}f}]"

    for name, a in d.get("au", {}).items():
      if name == "grimace_score" or not a["n"]:
        continue
      lines.append(
        f"| {titles[m]} | {name} | {a['n']} | {cell(a['accuracy'], 1)} | "
        f"{cell(a['macro_f1'], 3)} | {cell(a['qwk'], 3)} | {cell(a['mae'], 3)} |"
      )
    g = d.get("au", {}).get("grimace_score")
    if g:
      lines.append(f"| {titles[m]} | grimace score | {g['n']} | — | — | — | {cell(g['mae'], 3)} |")
  return lines


def _table3_paper() -> list[str]:
  return [
    "",
    "## Reported in the paper (real RatsPain, LORO F1/Accuracy %)",
    "",
    "| PainSeeker | PainSeeker w/o PRSC | ResNet-18 | best LBP + SVM |",
    "|---|---|---|---|",
    "| " + " | ".join(f"{f:.4f}/{a:.2f}" for f, a in PAPER_LORO.values()) + " |",
    "",
  ]


def table3_markdown(report: dict, config) -> str:
  """table3.md: scores, statistics, pose bins, attention localisation, AU scores (methods with
  AU heads), the paper's numbers."""
  methods = report["methods"]
  titles = {m: loro.method_title(derive(config, METHODS[m])) for m in methods}
  missing = report.get("missing") or []
  lines = (
    _table3_scores(methods, titles, config)
    + [f"\n**Warning**: {w}." for w in report.get("warnings") or []]
    + (["", f"Not finished yet ({len(missing)} runs): {', '.join(missing)}."] if missing else [])
    + _table3_statistics(methods, titles, config)
    + _table3_vs_best_lbp(report, titles, config)
    + _table3_ranking(methods, titles)
    + _table3_pose_bins(methods, titles, config)
    + _table3_attention(methods, titles, config)
    + _table3_au(methods, titles, config)
    + _table3_paper()
  )
  return "\n".join(lines)


def write_attention_figure(config, workdir: str, lookup) -> str | None:
  """Fig. 4: PainSeeker vs. w/o PRSC attention on pain faces, one per pose bin
  (or on `config.attention_files`, filenames of the data set)."""
  seed = config.seeds[0]
  data = {
    m: layout.read_attention(layout.run_dir(workdir, m, seed))
    for m in ("painseeker", "painseeker_wo_prsc")
  }
  names = [str(n) for n in data["painseeker"]["filename"]]
  index = {m: {str(n): i for i, n in enumerate(d["filename"])} for m, d in data.items()}
  preds = {
    r["filename"]: r for r in layout.read_predictions(layout.run_dir(workdir, "painseeker", seed))
  }
  chosen = []
  files = list(config.get("attention_files", ()) or ())
  if files:
    missing = [f for f in files if f not in index["painseeker"]]
    if missing:
      raise ValueError(f"config.attention_files: not test images of this run: {missing[:5]}")
    chosen = [(f, f) for f in files]
  elif lookup is not None:
    for name, lo, hi in POSE_BINS:
      cands = [n for n in names if preds[n]["pain"] == 1 and lo <= abs(lookup[n][0]) < hi]
      if cands:  # the most confidently recognised pain face of the bin
        best = max(cands, key=lambda n: preds[n]["p_pain"])
        chosen.append((best, f"{name} pain, yaw {lookup[best][0]:+.0f}°"))
  if not chosen:
    return None
  rats = sorted({f"rat{preds[n]['rat_id']}" for n, _ in chosen})
  sources = input_pipeline.get_sources(config.dataset, rats, config.data_dir, config.manual_dir)
  by_name = {}
  for src in sources.values():
    for i in range(len(src)):
      rec = src[i]
      n = rec["filename"].decode() if isinstance(rec["filename"], bytes) else str(rec["filename"])
      if any(n == c for c, _ in chosen):
        by_name[n] = input_pipeline.decode_resize(rec["image"], 224)
  examples = [
    {
      "image": by_name[n],
      "title": t,
      "betas": [data[m]["beta"][index[m][n]] for m in ("painseeker", "painseeker_wo_prsc")],
    }
    for n, t in chosen
  ]
  path = os.path.join(workdir, "figure4_attention.png")
  figures.attention_figure(examples, path)
  return path


# ---------------------------------------------------------------------------
# Sensitivity (Fig. 5).


def run_sensitivity(config, workdir: str) -> dict:
  """Each of lambda, delta, K_h varied over its grid, the others at their defaults.

  sensitivity.json and the figure are rewritten after every finished run, so
  a partly filled work directory shows the curves so far (points without a
  finished run are null in the JSON and gaps in the figure).
  """
  defaults, jobs, points = sensitivity_plan(config, workdir)  # checked before anything is written
  os.makedirs(workdir, exist_ok=True)
  report = lambda: sensitivity_report(config, workdir, defaults, points)
  _schedule(jobs, after_each=report)
  return report()


def sensitivity_plan(config, workdir: str):
  """(defaults, jobs, points) of the sweep: jobs = (label, config, run dir), each
  setting once, seed-major; points = {param: {value: [run dirs, one per seed]}}."""
  defaults = {p: config.loss[p] for p in config.sweep}
  jobs, points = [], {}
  for s in config.seeds:  # seed-major: a partly filled work directory holds whole curves
    for p, values in config.sweep.items():
      for v in values:
        setting = dict(defaults, **{p: v})
        tag = ",".join(f"{k}={setting[k]:g}" for k in sorted(setting))
        wd = layout.run_dir(workdir, tag, s)
        jobs.append(
          (
            f"{p}={v:g} seed {s}",
            derive(config, {f"loss.{k}": x for k, x in setting.items()}, s),
            wd,
          )
        )
        points.setdefault(p, {}).setdefault(v, []).append(wd)
  unique = list(
    {w: (label, c, w) for label, c, w in jobs}.values()
  )  # the defaults appear in every sweep
  return defaults, unique, points


def sensitivity_report(config, workdir: str, defaults: dict, points: dict) -> dict:
  """Writes sensitivity.json / .md and figure5_sensitivity.png from the finished runs.

  points: {param: {value: [run dirs, one per seed]}}. A point's mean ± std is
  over its finished runs (`finished` counts them); none finished: nulls.
  """
  runs = {w for vals in points.values() for wds in vals.values() for w in wds}
  finished = {w: layout.read_results(w)["loro"] for w in runs if layout.is_finished(w)}
  preds = functools.cache(layout.read_predictions)
  sweeps = {}
  for p, vals in points.items():
    sweeps[p] = []
    default_wds = vals.get(defaults[p], [])
    for v, wds in vals.items():
      done = [w for w in wds if w in finished]
      ms = {
        k: stats.mean_std([finished[w][k] for w in done]) if done else {"mean": None, "std": None}
        for k in ("f1", "accuracy")
      }
      point = {
        "value": v,
        **{f"{k}_{s}": x for k, d in ms.items() for s, x in d.items()},
        "finished": len(done),
        "runs": wds,
        # each seed's run (in config.seeds order; None: not finished), for the paired view
        **{f"{k}_per_seed": [finished[w][k] if w in finished else None for w in wds] for k in ms},
      }
      # against the default on the seeds both have finished (one list entry per seed): in a
      # partly filled sweep a setting's first seeds are not set against other seeds' defaults
      pairs = [(w, d) for w, d in zip(wds, default_wds) if w in finished and d in finished]
      if v != defaults[p] and pairs:
        point["vs_default"] = _vs_default(
          [preds(w) for w, _ in pairs], [preds(d) for _, d in pairs], config
        )
        point["vs_default_seeds"] = len(pairs)
      sweeps[p].append(point)
  total = len(runs)
  out = {
    "config": json.loads(config.to_json_best_effort()),
    "defaults": defaults,
    "finished_runs": len(finished),
    "total_runs": total,
    "sweeps": sweeps,
    "warnings": layout.fingerprint_warnings(sorted(finished)),
  }
  layout.write_json(os.path.join(workdir, "sensitivity.json"), out)
  layout.write_atomic(os.path.join(workdir, "sensitivity.md"), sensitivity_markdown(out, config))
  title = None if len(finished) == total else f"partial: {len(finished)} of {total} runs finished"
  figures.sensitivity_figure(sweeps, os.path.join(workdir, "figure5_sensitivity.png"), title=title)
  return out


def _vs_default(rows_by_run: list, default_rows_by_run: list, config) -> dict:
  """A setting's F1 / accuracy minus the default's: the difference of the means over the given
  runs (the seeds both have finished), with the two-level bootstrap CI and p value (images
  stratified by rat, seeds resampled; `_seed_mean_diffs`)."""
  first = rows_by_run[0]
  y, rat_ids = _labels(first)
  preds = lambda runs: _seed_preds(first, dict(enumerate(runs)))  # runs x images, first's order
  return _seed_mean_diffs(y, preds(rows_by_run), preds(default_rows_by_run), rat_ids, config)


def sensitivity_markdown(report: dict, config) -> str:
  """Fig. 5's numbers as a table per swept parameter; '—' where no run finished."""
  names = {"lambda_prsc": "lambda", "delta": "delta", "k_h": "K_h"}
  defaults = ", ".join(f"{names.get(k, k)} {v:g}" for k, v in report["defaults"].items())
  lines = [
    f"# Sensitivity ({config.dataset}, seeds {list(config.seeds)}; "
    f"{report['finished_runs']} of {report['total_runs']} runs finished)",
    "",
    f"LORO F1 / accuracy (%), mean ± std over the finished seeds (a single seed: its value), "
    f"and each seed's run in the order of the seeds ('—': not finished); "
    f"one parameter varied at a time, the others at their defaults ({defaults}). Δ: the "
    "setting's mean minus the default's over the seeds both have finished, on the same images, "
    "with a two-level bootstrap 95% CI and p value (images stratified by rat, and those seeds "
    "resampled: with one seed the interval covers image sampling only, and with a few it holds "
    "only part of the seed spread and is too narrow; measured coverage: docs/results.md "
    '"How far the two-level interval reaches").',
    "",
    *[f"**Warning**: {w}.\n" for w in report.get("warnings") or []],
  ]

  def cell(d, k, digits):
    if not d["finished"]:
      return "—"
    spread = f" ± {d[k + '_std']:.{digits}f}" if d["finished"] > 1 else ""
    return f"{d[k + '_mean']:.{digits}f}{spread}"

  def versus(d, k, default, default_finished):
    if d["value"] == default:
      return "(default)"
    if "vs_default" not in d:
      return "—"
    r = d["vs_default"][k]
    n = d["vs_default_seeds"]
    fewer = (
      f" (on the {n} seed{'s' if n > 1 else ''} both finished)"
      if n < max(d["finished"], default_finished)
      else ""
    )
    return f"{_diff_ci(r)}, p {_p(r, config)}{fewer}"

  for p, pts in report["sweeps"].items():
    lines += [
      f"| {names.get(p, p)} | F1 | Accuracy (%) | ΔF1 vs. default [95% CI], p "
      "| Δaccuracy (points) [95% CI], p | seeds finished | each seed (F1/acc.) |",
      "|---|---|---|---|---|---|---|",
    ]
    default = report["defaults"][p]
    default_finished = next((d["finished"] for d in pts if d["value"] == default), 0)
    for d in sorted(pts, key=lambda d: d["value"]):
      vs = [versus(d, k, default, default_finished) for k in ("f1", "accuracy")]
      seeds = zip(d.get("f1_per_seed", []), d.get("accuracy_per_seed", []))
      each = ", ".join("—" if f is None else f"{f:.4f}/{a:.2f}" for f, a in seeds)
      lines.append(
        f"| {d['value']:g} | {cell(d, 'f1', 4)} | {cell(d, 'accuracy', 2)} | {vs[0]} | {vs[1]} | "
        f"{d['finished']} of {len(d['runs'])} | {each} |"
      )
    lines.append("")
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# Two runs side by side (`painseeker compare-runs`).


def compare_runs(run_a: str, run_b: str, n_boot: int = 2000) -> dict:
  """Two finished runs scored on the same test images, paired image by image (a − b).

  For a change of anything one run has and the other has not: a method, a
  parameter, a seed, a backend or a machine. Returns the pooled scores of each
  (`loro_metrics`, per animal and pooled), the share of images both predict
  alike, the exact McNemar test, and ΔF1 / Δaccuracy with the paired bootstrap
  of `stats.paired_bootstrap_diff`, images resampled within each animal (seed
  0, `n_boot` resamples). Raises ValueError, naming the runs, when one is not
  finished or the two scored other images or other labels; `warnings` says when they
  scored another build of the data (or were fine-tuned from other trunks).
  """
  rows = []
  for wd in (run_a, run_b):
    if not layout.is_finished(wd):
      raise ValueError(
        f"{wd}: not a finished run (no {layout.RESULTS_JSON}); give the directory of one run, "
        "e.g. <workdir>/runs/<method>/seed0 of an experiment, or finish it first"
      )
    rows.append(layout.read_predictions(wd))
  try:
    a, b = _align(*rows)
  except ValueError:
    raise ValueError(
      f"{run_a} scored {len(rows[0])} images and {run_b} {len(rows[1])}, not the same ones: "
      "only runs on the same test images can be paired"
    ) from None
  changed = [r["filename"] for r, s in zip(a, b) if r["pain"] != s["pain"]]
  if changed:
    raise ValueError(
      f"{run_a} and {run_b} give {changed[0]} (and {len(changed) - 1} more) other pain labels: "
      "the data sets differ"
    )
  warnings = layout.fingerprint_warnings([run_a, run_b])
  key = "rat_id" if "rat_id" in a[0] else "animal_id"
  y = np.array([r["pain"] for r in a])
  groups = np.array([r[key] for r in a])
  pa, pb = np.array([r["pred"] for r in a]), np.array([r["pred"] for r in b])
  names = np.array([f"rat{g}" if key == "rat_id" else str(g) for g in groups])
  return {
    "runs": {"a": run_a, "b": run_b},
    "images": len(y),
    "scores": {
      "a": metrics_lib.loro_metrics(y, pa, names),
      "b": metrics_lib.loro_metrics(y, pb, names),
    },
    "agreement": float(np.mean(pa == pb)),
    "agreement_per_group": {
      g: float(np.mean(pa[names == g] == pb[names == g])) for g in dict.fromkeys(names)
    },
    "mcnemar": stats.mcnemar(y, pa, pb),
    **{
      k: stats.paired_bootstrap_diff(y, pa, pb, metric=k, n_boot=n_boot, seed=0, groups=groups)
      for k in ("f1", "accuracy")
    },
    "bootstrap": n_boot,
    # another data build or trunk: the difference is not the runs' alone
    "warnings": warnings,
  }


def comparison_markdown(c: dict) -> str:
  """`compare_runs`'s result as a short Markdown report."""
  sa, sb, acc = c["scores"]["a"], c["scores"]["b"], c["accuracy"]
  cfg = ml_collections.ConfigDict({"bootstrap": c["bootstrap"]})
  lines = [
    f"a: {c['runs']['a']}",
    f"b: {c['runs']['b']}",
    "",
    "| | F1 a | F1 b | accuracy a (%) | accuracy b (%) | same prediction (%) |",
    "|---|---|---|---|---|---|",
  ]
  for g in sa["per_group"]:
    ga, gb = sa["per_group"][g], sb["per_group"][g]
    lines.append(
      f"| {g} | {ga['f1']:.4f} | {gb['f1']:.4f} | {ga['accuracy']:.2f} | {gb['accuracy']:.2f} | "
      f"{100 * c['agreement_per_group'][g]:.1f} |"
    )
  pa, pb = sa["pooled"], sb["pooled"]
  lines += [
    f"| **pooled** ({c['images']} images) | {pa['f1']:.4f} | {pb['f1']:.4f} | "
    f"{pa['accuracy']:.2f} | {pb['accuracy']:.2f} | {100 * c['agreement']:.1f} |",
    "",
    f"a − b, paired bootstrap ({c['bootstrap']} resamples, images within each animal), 95% CI:",
    f"- F1 {_diff_ci(c['f1'])}, p {_p(c['f1'], cfg)}",
    f"- accuracy (points) {acc['diff']:+.1f} [{acc['ci'][0]:+.1f}, {acc['ci'][1]:+.1f}], "
    f"p {_p(acc, cfg)}",
    f"- McNemar (exact): a right and b wrong on {c['mcnemar']['b']} images, the reverse on "
    f"{c['mcnemar']['c']}, p {c['mcnemar']['p_value']:.3g}",
    *[f"\n**Warning**: {w}; the difference is not the runs' alone." for w in c["warnings"]],
  ]
  return "\n".join(lines) + "\n"
