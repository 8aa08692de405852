"""Metric writer: TensorBoard event files + console, without TensorFlow.

The part of CLU's `MetricWriter` interface the trainer uses
(`write_scalars(step, scalars)`, `close()`). CLU's own writers are not used because importing
`clu.metric_writers` imports TensorFlow (its package init loads the TF summary
writer), and no training code path may import TensorFlow; the event files are
written with tensorboardX instead and read by the stock `tensorboard`.
"""

from __future__ import annotations

import json
import logging
import os
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
  """Writes scalars to `<logdir>` (TensorBoard event files) and, when `jsonl` is given, one
  JSON line per call to that file (`{"step": ..., name: value, ...}`, appended: a resumed fold
  may repeat the steps after its last checkpoint; the last line of a step is the one that holds;
  a line cut by a crash stays on a line of its own, which `read_jsonl_metrics` skips).
  """

  def __init__(self, logdir: str, jsonl: str | None = None):
    self._tb = SummaryWriter(logdir)
    self._jsonl = jsonl

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for name, value in scalars.items():
      self._tb.add_scalar(name, float(value), global_step=step)
    if self._jsonl:
      line = json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}})
      with open(self._jsonl, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
          f.seek(-1, os.SEEK_END)
          if f.read(1) != b"\n":  # the last write was cut (a crash): end that line first
            line = "\n" + line
        f.write((line + "\n").encode("utf-8"))

  def close(self) -> None:
    self._tb.close()


def read_jsonl_metrics(path: str) -> list[dict]:
  """The records of a `MetricWriter` JSON-lines file, one per step (the last written), by step.
  A line that is not a whole record (a write cut by a crash; the resumed fold wrote that step
  again) is skipped with a warning naming it."""
  by_step = {}
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        try:
          record = json.loads(line)
          by_step[int(record["step"])] = record
        except (ValueError, KeyError, TypeError):
          logging.getLogger("painseeker").warning(
            "%s, line %d: not a whole metrics record (a write cut by a crash?); skipped", path, n
          )
  return [by_step[s] for s in sorted(by_step)]
