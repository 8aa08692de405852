"""Metric writer: TensorBoard event files + console, without TensorFlow.

The part of CLU's `MetricWriter` interface the trainer uses
(`write_scalars(step, scalars)`, `close()`). CLU's own writers are not used because importing
`clu.metric_writers` imports TensorFlow (its package init loads the TF summary
writer), and no training code path may import TensorFlow; the event files are
written with tensorboardX instead and read by the stock `tensorboard`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from tensorboardX import SummaryWriter


class _TqdmHandler(logging.StreamHandler):
  """Writes through tqdm so that log lines do not break the progress bars."""

  def emit(self, record):
    from tqdm.auto import tqdm

    try:
      tqdm.write(self.format(record), file=self.stream)
    except Exception:  # noqa: BLE001 - logging must never raise
      self.handleError(record)


def console_logging(quiet_libraries: bool = True) -> logging.Logger:
  """Our progress messages (logger "painseeker") to stderr with a time stamp;
  absl INFO messages of the libraries (orbax, tfds log a lot) hidden unless
  `quiet_libraries` is False."""
  from absl import logging as absl_logging

  if quiet_libraries:
    absl_logging.set_verbosity(absl_logging.WARNING)
  log = logging.getLogger("painseeker")
  if not log.handlers:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
  log.setLevel(logging.INFO)
  log.propagate = False
  return log


class MetricWriter:
  """Writes scalars to `<logdir>` (TensorBoard event files)."""

  def __init__(self, logdir: str):
    self._tb = SummaryWriter(logdir)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for name, value in scalars.items():
      self._tb.add_scalar(name, float(value), global_step=step)

  def close(self) -> None:
    self._tb.close()
