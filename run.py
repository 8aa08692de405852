r"""Runs the experiment of a config: `painseeker run` (painseeker_jax/cli.py).

  python run.py --config=configs/loro.py:synthetic            # quick start
  python run.py --config=configs/loro.py --workdir=runs/real  # paper protocol
  python run.py --config=configs/loro.py:synthetic --config.model.name=resnet18

  python run.py --config=configs/table3.py:synthetic       # Table 3 (9 methods x seeds)
  python run.py --config=configs/sensitivity.py:synthetic  # Fig. 5

Rerunning the same command on the same --workdir resumes where it stopped.
"""

import sys

from painseeker_jax import cli

if __name__ == "__main__":
  sys.exit(cli.main(["run", *sys.argv[1:]]))
