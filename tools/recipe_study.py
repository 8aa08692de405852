r"""The from-scratch recipe study (issue #18): optimizer, weight decay and schedule of the twin's
quick-start recipe, compared on the *development* twin (`ratspain/synthetic_dev`, the same
generator with seed 1), never on the `synthetic` folds that the README and docs/results.md report.

  python tools/recipe_study.py --workdir=runs/recipe_study            # runs what is missing
  python tools/recipe_study.py --workdir=runs/recipe_study --only=adamw_cosine
  python tools/recipe_study.py --workdir=runs/recipe_study --report   # tables only

Each variant is `configs/loro.py:synthetic` with `--config.dataset=synthetic_dev`, three held-out
rats (FOLDS) and its overrides (VARIANTS below), run in `<workdir>/<variant>` (about 20 min each
on 2 CPU cores; rerunning resumes). The report (`<workdir>/recipe_study.md`, printed) has, per
variant, the training curves (training accuracy and cross-entropy per epoch, mean over the
folds, from each fold's `metrics.jsonl`) and the F1/accuracy pooled over the held-out rats of
the development twin.
Measured: docs/results.md "Recipe study".

Decision rule (fixed before the cosine variant finished): the quick start takes the variant with
the highest pooled accuracy on the development twin; a variant within 2 points of a simpler one
(fewer changes from adam_l2) does not replace it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from painseeker_jax import layout, writers  # noqa: E402

# Three held-out rats of the development twin (chosen before any run): a fold of the quick-start
# recipe takes about 6.5 min on this project's 2-core CI machine, so a variant costs ~20 min.
FOLDS = (1, 2, 3)
BASE = [
  "--config=configs/loro.py:synthetic",
  "--config.dataset=synthetic_dev",
  "--config.folds=" + ",".join(map(str, FOLDS)),
]
# name -> overrides of the quick-start config (as of the study: adam_l2, constant lr 1e-3, 8 ep).
VARIANTS = {
  "adam_l2": [
    "--config.optimizer.name=adam_l2",
    "--config.optimizer.schedule=constant",
    "--config.optimizer.wd_params=all",
  ],
  "adamw": [
    "--config.optimizer.name=adamw",
    "--config.optimizer.schedule=constant",
    "--config.optimizer.wd_params=all",
  ],
  "adamw_cosine": [
    "--config.optimizer.name=adamw",
    "--config.optimizer.schedule=cosine",
    "--config.optimizer.wd_params=all",
  ],
  "adamw_cosine_kernels": [
    "--config.optimizer.name=adamw",
    "--config.optimizer.schedule=cosine",
    "--config.optimizer.wd_params=kernels",
  ],
  "adamw_cosine_12ep": [
    "--config.optimizer.name=adamw",
    "--config.optimizer.schedule=cosine",
    "--config.optimizer.wd_params=all",
    "--config.num_epochs=12",
  ],
  "adam_l2_kernels": [
    "--config.optimizer.name=adam_l2",
    "--config.optimizer.schedule=constant",
    "--config.optimizer.wd_params=kernels",
  ],
}


def run_variant(workdir: str, name: str) -> None:
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), *BASE, *VARIANTS[name]]
  cmd += ["--config.progress=False", f"--workdir={os.path.join(workdir, name)}"]
  print("+", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True, cwd=ROOT)


def curves(run: str, folds=FOLDS) -> dict[str, np.ndarray] | None:
  """Per-epoch training accuracy and cross-entropy, mean over the folds (None if unfinished)."""
  per_fold = []
  for k in folds:
    path = layout.metrics_path(run, k)
    if not os.path.exists(path):
      return None
    per_fold.append(writers.read_jsonl_metrics(path))
  epochs = min(len(r) for r in per_fold)
  return {
    name: np.mean([[r[e][name] for e in range(epochs)] for r in per_fold], axis=0)
    for name in ("accuracy", "ce", "prsc")
  }


def report(workdir: str) -> str:
  lines = [
    "| variant | overrides | train acc. per epoch (%, mean of the folds) | last train CE | "
    "last PRSC | pooled F1 | pooled acc. (%) | top-5 attention share |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for name, overrides in VARIANTS.items():
    run = os.path.join(workdir, name)
    if not layout.is_finished(run):
      continue
    res = layout.read_results(run)
    c = curves(run)
    acc = " ".join(f"{100 * a:.0f}" for a in c["accuracy"])
    beta = layout.read_attention(run)["beta"]  # the share of the K_h = 5 most attended regions
    top5 = float(np.mean(np.sort(beta, axis=1)[:, -5:].sum(axis=1)))
    lines.append(
      f"| {name} | {' '.join(o.removeprefix('--config.') for o in overrides)} | {acc} | "
      f"{c['ce'][-1]:.3f} | {c['prsc'][-1]:.3f} | {res['loro']['f1']:.4f} | "
      f"{res['loro']['accuracy']:.2f} | {top5:.3f} |"
    )
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "recipe_study"))
  p.add_argument("--only", default="", help="comma-separated variants (default: all)")
  p.add_argument("--report", action="store_true", help="only write the tables")
  a = p.parse_args(argv)
  names = [n for n in a.only.split(",") if n] or list(VARIANTS)
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
  if not a.report:
    for name in names:
      run_variant(a.workdir, name)
  text = report(a.workdir)
  os.makedirs(a.workdir, exist_ok=True)
  layout.write_atomic(os.path.join(a.workdir, "recipe_study.md"), text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
