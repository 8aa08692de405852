"""Shared fixtures: a tiny synthetic RatsPain build, made once per test session."""

import logging
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/ and run.py live at the repository root
  sys.path.insert(0, ROOT)

REAL_SAMPLES = os.path.join(ROOT, "tests", "data", "real_samples")


_LOG = logging.getLogger("painseeker")
_PRISTINE_LOG = (list(_LOG.handlers), _LOG.level, _LOG.propagate)


@pytest.fixture(autouse=True)
def _restore_painseeker_logger():
  """A CLI run in-process (`cli.main`) sets the "painseeker" logger to its own handler with
  propagate=False, which hides later tests' messages from `caplog`. The logger is put back as
  it was before any test, before each test (a module- or session-scoped fixture may have run
  the CLI) and after it."""
  _LOG.handlers[:], _LOG.level, _LOG.propagate = _PRISTINE_LOG
  yield
  _LOG.handlers[:], _LOG.level, _LOG.propagate = _PRISTINE_LOG


@pytest.fixture(scope="session")
def mini_data_dir(tmp_path_factory):
  """TFDS data dir holding ratspain/synthetic_mini (12 images per split)."""
  from tfds_ratspain import build

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  build.prepare("synthetic_mini", data_dir=data_dir)
  return data_dir


def mini_config(data_dir, **overrides):
  """The synthetic_mini LORO config (tiny trunk, 64 px, 1 epoch) with overrides."""
  from configs import loro

  config = loro.get_config("synthetic_mini")
  config.data_dir = data_dir
  config.progress = False
  config.input.num_threads = 2
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config
