"""How often the two-level bootstrap's 95% interval covers the true difference of two recipes.

`stats.paired_bootstrap_diff(..., resample_runs=True)` (the seed-mean differences of Table 3,
Fig. 5 and the AU study) resamples the images within rats and each method's seeds with
replacement. With R seeds, drawing them with replacement keeps only (R - 1) / R of the
seed-to-seed variance, and a percentile interval from a handful of seeds cannot widen as a
t interval does; this measures what that costs.

Simulation (two recipes of equal quality, so the true difference is 0): 600 images of 6 rats
(100 each, half pain); each image has a difficulty shared by both recipes (its chance of
being right, drawn from Beta(7, 3), mean 0.7); each run (recipe x seed) shifts every image's
chance by its own N(0, seed_sd) offset, as a seed that lands on a better or worse solution
does; an image is right with that chance. Each cell is the share of `reps` simulated
experiments whose 95% interval of the accuracy difference of the seed means holds 0
(2,000 resamples each, as the reports use).

Run (no data needed; 45 minutes on 2 CPU cores beside a training run):
  python tools/seed_bootstrap_coverage.py
The figures go to docs/results.md "How far the two-level interval reaches".
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from painseeker_jax import stats  # noqa: E402

RATS, PER_RAT = 6, 100


def _runs(rng, y_N, chance_N, num_seeds: int, seed_sd: float) -> np.ndarray:
  """num_seeds runs' 0/1 predictions (R x N): each run shifts every image's chance of being
  right by its own N(0, seed_sd) offset."""
  offsets_R = rng.normal(0.0, seed_sd, num_seeds)[:, None]
  right_RxN = rng.random((num_seeds, len(y_N))) < np.clip(chance_N + offsets_R, 0.0, 1.0)
  return np.where(right_RxN, y_N, 1 - y_N)


def coverage(num_seeds: int, seed_sd: float, reps: int, rng: np.random.Generator) -> float:
  """Share of `reps` experiments whose two-level 95% interval of Δaccuracy holds 0."""
  n = RATS * PER_RAT
  groups = np.repeat(np.arange(RATS), PER_RAT)
  y = np.tile(np.arange(PER_RAT) % 2, RATS)
  held = 0
  for rep in range(reps):
    chance_n = rng.beta(7.0, 3.0, n)
    a, b = (_runs(rng, y, chance_n, num_seeds, seed_sd) for _ in range(2))
    r = stats.paired_bootstrap_diff(
      y, a, b, metric="accuracy", seed=rep, groups=groups, resample_runs=True
    )
    held += r["ci"][0] <= 0.0 <= r["ci"][1]
  return held / reps


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--reps", type=int, default=200, help="simulated experiments per cell")
  ap.add_argument("--seeds", default="2,3,5,10", help="numbers of seeds per recipe")
  ap.add_argument("--seed_sd", default="0,0.03,0.06", help="seed-to-seed sd of the accuracy")
  ap.add_argument("--rng", type=int, default=0, help="seed of the simulation")
  args = ap.parse_args(argv)
  rng = np.random.default_rng(args.rng)
  counts = [int(s) for s in args.seeds.split(",")]
  sds = [float(s) for s in args.seed_sd.split(",")]
  print(f"coverage of the true difference 0 by the nominal 95% interval ({args.reps} experiments)")
  print("| seed sd (accuracy points) | " + " | ".join(f"{r} seeds" for r in counts) + " |")
  print("|---" * (len(counts) + 1) + "|")
  for sd in sds:
    cells = [f"{100 * coverage(r, sd, args.reps, rng):.1f}%" for r in counts]
    print(f"| {100 * sd:g} | " + " | ".join(cells) + " |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
