r"""Runs the leave-one-rat-out experiment of a config.

  python run.py --config=configs/loro.py:synthetic            # quick start
  python run.py --config=configs/loro.py --workdir=runs/real  # paper protocol
  python run.py --config=configs/loro.py:synthetic --config.model.name=resnet18

  python run.py --config=configs/table3.py:synthetic       # Table 3 (9 methods x seeds)
  python run.py --config=configs/sensitivity.py:synthetic  # Fig. 5

Rerunning the same command on the same --workdir resumes where it stopped.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from painseeker_jax import experiments
from painseeker_jax import writers

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (default: runs/<config name>).")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  writers.console_logging(quiet_libraries=not flags.FLAGS["verbosity"].present)
  experiments.run(config, _WORKDIR.value or os.path.join("runs", config.name))


if __name__ == "__main__":
  app.run(main)
