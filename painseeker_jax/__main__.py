"""`python -m painseeker_jax COMMAND ...`: the `painseeker` command (see cli.py)."""

import sys

from painseeker_jax import cli

if __name__ == "__main__":
  sys.exit(cli.main())
