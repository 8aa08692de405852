"""Metric writer: TensorBoard event files + console, without TensorFlow.

Same interface as CLU's `MetricWriter` (`write_scalars(step, scalars)`,
`flush()`, `close()`). CLU's own writers are not used because importing
`clu.metric_writers` imports TensorFlow (its package init loads the TF summary
writer), and no training code path may import TensorFlow; the event files are
written with tensorboardX instead and read by the stock `tensorboard`.
"""

from __future__ import annotations

from collections.abc import Mapping

import logging
from tensorboardX import SummaryWriter


class MetricWriter:
  """Writes scalars to `<logdir>` (TensorBoard) and to the absl log."""

  def __init__(self, logdir: str, console: bool = False):
    self._tb = SummaryWriter(logdir)
    self._console = console

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for name, value in scalars.items():
      self._tb.add_scalar(name, float(value), global_step=step)
    if self._console:
      logging.getLogger("painseeker").info("[%d] %s", step, ", ".join(f"{k}={float(v):.6g}" for k, v in scalars.items()))

  def flush(self) -> None:
    self._tb.flush()

  def close(self) -> None:
    self._tb.close()
