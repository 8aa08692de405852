r"""The paper's Fig. 5: sensitivity of PainSeeker to lambda, delta and K_h.

Each parameter varied over the paper's grid with the other two at their
defaults (lambda 0.1, delta 0.2, K_h 5); the default setting is trained once and
shared by the three sweeps (13 settings x seeds x 6 folds).

  python run.py --config=configs/sensitivity.py:synthetic --workdir=runs/sensitivity_synthetic
  python run.py --config=configs/sensitivity.py:real --config.manual_dir=DIR \
    --workdir=runs/sensitivity_real

The sweep of docs/results.md ("Fig. 5 with the fitted recipe"; its 21 runs are kept in
docs/records/sensitivity_fitted): the default and each parameter's extremes, three seeds,

  python run.py --config=configs/sensitivity.py:synthetic --workdir=runs/sensitivity_fitted \
    --config.seeds=0,1,2 --config.sweep.lambda_prsc=0.05,0.1,1.5 \
    --config.sweep.delta=0.05,0.2,0.5 --config.sweep.k_h=3,5,20

Outputs: sensitivity.json and sensitivity.md (F1 / accuracy mean ± std per
value, and each value's difference from the default with a bootstrap CI) and
figure5_sensitivity.png (three panels), rewritten after every finished run: a
partly filled work directory shows its curves so far (the figure says how many
runs are missing; unfinished points are gaps, null in the JSON).

K_h up to 20 needs K >= 21 regions: the synthetic variant trains at 160 px
(a 5 x 5 grid, K = 25) instead of the quick start's 96 px (K = 9); the real
variant uses the paper's 224 px (K = 49). Expected runtime: hours on 2 CPU cores
(13 LORO runs per seed), minutes on one GPU; the measured runtimes are in
docs/results.md ("Fig. 5" sections). The work directory fills incrementally: run it in pieces.
"""

import ml_collections

from configs import loro


def get_config(arg: str = "real"):
  c = loro.get_config(arg)
  c.name = f"sensitivity_{arg}"
  c.experiment = "sensitivity"
  if arg == "synthetic":
    c.image_size, c.resize_size = 160, 184
  c.sweep = ml_collections.ConfigDict()
  c.sweep.lambda_prsc = (0.05, 0.1, 0.5, 1.0, 1.5)
  c.sweep.delta = (0.05, 0.1, 0.15, 0.2, 0.5)
  c.sweep.k_h = (3, 5, 10, 15, 20)
  c.seeds = (0,)
  c.bootstrap = 2000  # resamples of each setting's difference from the default
  return c
