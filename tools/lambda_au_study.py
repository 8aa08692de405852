r"""The weight of the grimace AU heads for configs/loao.py (issue #19), measured on a
*development* lab directory drawn by the twin's generator with seed 1 (the `synthetic_dev`
seed), never on the seed-0 faces that the README's demo and docs/results.md report.

  python tools/lambda_au_study.py --workdir=runs/lambda_au_study            # runs what is missing
  python tools/lambda_au_study.py --workdir=runs/lambda_au_study --report   # tables only

The study writes `<workdir>/lab_dev` (6 rats x 40 scored faces + 6 unscored, RGS, twin seed 1:
`python -m tfds_ratspain write-lab-dir`), builds it into `<workdir>/tfds` (its own TFDS data
dir, so a lab's build in the default one is left alone) and runs leave-one-animal-out with
`configs/loao.py` and each `loss.lambda_au` of VARIANTS in `<workdir>/lambda_au_<value>`
(rerunning resumes). The report (`<workdir>/lambda_au_study.md`, printed) has, per variant,
the pooled pain F1 and accuracy, per-AU QWK, their mean, the mean AU accuracy and MAE, the
grimace-score MAE and the wall time of the whole LOAO run.
Measured: docs/results.md "The AU heads' weight for configs/loao.py".

Decision rule (fixed before the first run): configs/loao.py takes the lambda_au > 0 with the
highest mean QWK over the four AUs; a value whose pooled pain accuracy is more than 3 points
below lambda_au = 0's (no AU heads) is excluded; a smaller lambda_au within 0.02 mean QWK of
the best is preferred (the smaller change from the paper's model).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from painseeker_jax import layout  # noqa: E402

ANIMALS, PER_ANIMAL, TWIN_SEED = 6, 40, 1
VARIANTS = (0.0, 1.0, 0.3, 3.0)  # loss.lambda_au, in the order run; 0: the paper's model, no heads
AUS = ("au_orbital", "au_ear", "au_nose", "au_whisker")


def run_dir(workdir: str, value: float) -> str:
  return os.path.join(workdir, f"lambda_au_{value:g}")


def write_lab_dir(workdir: str) -> str:
  lab = os.path.join(workdir, "lab_dev")
  if not os.path.exists(os.path.join(lab, "labels.csv")):
    cmd = [sys.executable, "-m", "tfds_ratspain", "write-lab-dir", f"--out={lab}"]
    cmd += [f"--animals={ANIMALS}", f"--per_animal={PER_ANIMAL}", f"--seed={TWIN_SEED}"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
  return lab


def run_variant(workdir: str, lab: str, value: float) -> None:
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--config=configs/loao.py"]
  cmd += [f"--config.manual_dir={lab}", f"--config.data_dir={os.path.join(workdir, 'tfds')}"]
  cmd += [f"--config.loss.lambda_au={value}", "--config.progress=False"]
  cmd += [f"--workdir={run_dir(workdir, value)}"]
  print("+", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True, cwd=ROOT)


def summary(results: dict) -> dict:
  """The figures of one variant's results.json (pooled over the animals)."""
  pooled = results["loao"]
  out = {
    "f1": pooled["f1"],
    "accuracy": pooled["accuracy"],
    "minutes": results["provenance"]["wall_seconds"]["total"] / 60,
  }
  au = pooled.get("au")
  if au:
    out["qwk"] = {a: au[a]["qwk"] for a in AUS}
    out["mean_qwk"] = float(np.mean(list(out["qwk"].values())))
    out["mean_au_accuracy"] = float(np.mean([au[a]["accuracy"] for a in AUS]))
    out["mean_au_mae"] = float(np.mean([au[a]["mae"] for a in AUS]))
    out["grimace_mae"] = au["grimace_score"]["mae"]
  return out


def choose(summaries: dict[float, dict]) -> float | None:
  """The decision rule of the module docstring; None until lambda_au = 0 and one other ran."""
  if 0.0 not in summaries:
    return None
  floor = summaries[0.0]["accuracy"] - 3.0
  ok = {v: s for v, s in summaries.items() if v > 0 and s["accuracy"] >= floor}
  if not ok:
    return None
  best = max(s["mean_qwk"] for s in ok.values())
  return min(v for v, s in ok.items() if s["mean_qwk"] >= best - 0.02)


def report(workdir: str) -> str:
  summaries = {
    v: summary(layout.read_results(run_dir(workdir, v)))
    for v in sorted(VARIANTS)
    if layout.is_finished(run_dir(workdir, v))
  }
  head = "| lambda_au | pain F1 | pain acc. (%) | " + " | ".join(f"QWK {a[3:]}" for a in AUS)
  head += " | mean QWK | mean AU acc. (%) | mean AU MAE | grimace MAE | minutes |"
  lines = [head, "|---" * head.count(" | ") + "|---|"]
  for v, s in summaries.items():
    if "qwk" in s:
      au = " | ".join(f"{s['qwk'][a]:.3f}" for a in AUS)
      au += f" | {s['mean_qwk']:.3f} | {s['mean_au_accuracy']:.1f} | {s['mean_au_mae']:.3f}"
      au += f" | {s['grimace_mae']:.3f}"
    else:
      au = " | ".join(["(no AU heads)"] + ["-"] * (len(AUS) + 3))
    lines.append(f"| {v:g} | {s['f1']:.4f} | {s['accuracy']:.2f} | {au} | {s['minutes']:.1f} |")
  chosen = choose(summaries)
  missing = [f"{v:g}" for v in sorted(VARIANTS) if v not in summaries]
  lines.append("")
  lines.append(
    f"Chosen by the rule: lambda_au = {chosen:g}." if chosen is not None else "Nothing chosen yet."
  )
  if missing:
    lines.append(f"Not finished yet: lambda_au = {', '.join(missing)}.")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "lambda_au_study"))
  p.add_argument("--report", action="store_true", help="only write the tables")
  a = p.parse_args(argv)
  workdir = os.path.abspath(a.workdir)
  if not a.report:
    lab = write_lab_dir(workdir)
    for value in VARIANTS:
      run_variant(workdir, lab, value)
  text = report(workdir)
  os.makedirs(workdir, exist_ok=True)
  layout.write_atomic(os.path.join(workdir, "lambda_au_study.md"), text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
