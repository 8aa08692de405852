r"""Runs the leave-one-rat-out experiment of a config.

  python run.py --config=configs/loro.py:synthetic            # quick start
  python run.py --config=configs/loro.py --workdir=runs/real  # paper protocol
  python run.py --config=configs/loro.py:synthetic --config.model.name=resnet18

  python run.py --config=configs/table3.py:synthetic       # Table 3 (9 methods x seeds)
  python run.py --config=configs/sensitivity.py:synthetic  # Fig. 5

Rerunning the same command on the same --workdir resumes where it stopped.
"""

import logging
import os

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from painseeker_jax import experiments

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (default: runs/<config name>).")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if not flags.FLAGS["verbosity"].present:  # libraries (orbax, tfds) log a lot at INFO
    absl_logging.set_verbosity(absl_logging.WARNING)
  log = logging.getLogger("painseeker")
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  log.propagate = False
  experiments.run(config, _WORKDIR.value or os.path.join("runs", config.name))


if __name__ == "__main__":
  app.run(main)
