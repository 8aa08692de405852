"""Preparing the `ratspain` builder without TensorFlow (array_record files)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil

import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

from tfds_ratspain.ratspain import manual
from tfds_ratspain.ratspain import ratspain_dataset_builder as rb

CONFIG_NAMES = tuple(c.name for c in rb.Builder.BUILDER_CONFIGS)
ARRAY_RECORD = tfds.core.FileFormat.ARRAY_RECORD
# TFDS builds <data_dir>/ratspain/<config>/<version> in a sibling folder
# `incomplete.XXXXXX_<version>` (6 random upper-case letters or digits) that it
# renames when done; a killed build (kill -9, power loss) leaves it behind.
INCOMPLETE_DIR = re.compile(
  rf"^{re.escape(constants.INCOMPLETE_PREFIX)}[A-Z0-9]{{6}}_(?P<version>\d+\.\d+\.\d+)$"
)


class DataError(RuntimeError):
  """The data set cannot be prepared; the message says what to do."""


def _open(config: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  if config not in CONFIG_NAMES:
    raise DataError(f"unknown ratspain config {config!r}; choose one of {', '.join(CONFIG_NAMES)}")
  # No explicit file_format: a new build is array_record (the builder's default),
  # an existing one opens in the format it was written in (see _check_format).
  return rb.Builder(config=config, data_dir=data_dir)


def _check_format(b: tfds.core.DatasetBuilder, config: str, manual_dir: str | None = None) -> None:
  """Raises DataError when an existing build cannot be read with `tfds.data_source`."""
  if ARRAY_RECORD in b.info.available_file_formats():
    return
  fmt = b.info.file_format.value if b.info.file_format else "an unknown format"
  cmd = [
    "python",
    "-m",
    "tfds_ratspain",
    "build",
    f"--config={config}",
    f"--data_dir={os.fspath(b.data_dir_root)}",
  ]
  if config == "real":
    cmd.append(f"--manual_dir={manual_dir}" if manual_dir else "--manual_dir=/path/to/ratspain")
  rebuilt = (
    "rebuilt on first use with --config.manual_dir" if config == "real" else "rebuilt on first use"
  )
  raise DataError(
    f"ratspain/{config} in {b.data_dir} was built as {fmt} files (e.g. by the stock "
    "`tfds build ... --file_format=tfrecord`, or by `tfds build` before array_record became "
    "this builder's default), but training reads array_record files with tfds.data_source. "
    f"Rebuild it as array_record (this deletes the old build first):\n"
    f"    {shlex.join(cmd + ['--overwrite'])}\n"
    f"or delete the directory {b.data_dir} (it is {rebuilt})."
  )


def remove_stale_incomplete(b: tfds.core.DatasetBuilder) -> list[str]:
  """Deletes the `incomplete.XXXXXX_<version>` folders a killed build of this config left.

  Only folders matching TFDS's pattern whose finished `<version>` folder exists
  are removed: TFDS can never rename them into place (the target is there), so
  they are stale, and no running build can still finish them. The finished
  folder itself and anything else are never touched. Returns the removed paths.
  """
  config_dir = os.path.dirname(os.fspath(b.data_dir).rstrip(os.sep))
  if not os.path.isdir(config_dir):
    return []
  removed = []
  for name in sorted(os.listdir(config_dir)):
    m = INCOMPLETE_DIR.match(name)
    path = os.path.join(config_dir, name)
    if not m or os.path.islink(path) or not os.path.isdir(path):
      continue
    if not os.path.isfile(os.path.join(config_dir, m.group("version"), "dataset_info.json")):
      continue  # nothing finished yet: it may belong to a build still running
    shutil.rmtree(path, ignore_errors=True)  # best effort: never fails a finished build
    if not os.path.exists(path):
      removed.append(path)
  return removed


def builder(
  config: str, data_dir: str | None = None, manual_dir: str | None = None
) -> tfds.core.DatasetBuilder:
  """The `ratspain/<config>` builder; DataError if its existing build is not array_record."""
  b = _open(config, data_dir)
  if b.is_prepared():
    _check_format(b, config, manual_dir)
  return b


def prepare(
  config: str, data_dir: str | None = None, manual_dir: str | None = None, overwrite: bool = False
) -> str:
  """Builds `ratspain/<config>` once (a finished build is reused) and returns its path.

  Raises DataError with instructions when the real set is missing or invalid,
  or when a finished build is not array_record (`overwrite` rebuilds it).
  TFDS writes into a temporary directory and renames it when complete, so a
  failed build leaves nothing behind; the temporary `incomplete.*` folders a
  killed build (kill -9) leaves are removed once this config's build is
  finished (see `remove_stale_incomplete`). Processes that start at once on one
  data dir (several workers filling one experiment) build it once: the others
  wait for that build (`build_lock`) and then reuse it.
  """
  b = _open(config, data_dir)
  if not overwrite and b.is_prepared():
    return _reuse(b, config, manual_dir)
  if config == "real":  # validated before anything is written (metadata, folders, the lock)
    manual_dir = manual_dir or os.path.join(os.fspath(b.data_dir_root), "downloads", "manual")
    if not os.path.isdir(manual_dir) or not any(
      not n.startswith(".") for n in os.listdir(manual_dir)
    ):
      raise DataError(
        f"the real RatsPain set is not prepared in {b.data_dir_root} and the manual "
        f"directory {manual_dir} is missing or empty.\n\n{rb.MANUAL_DOWNLOAD_INSTRUCTIONS}\n"
        "For a quick start without the real data use the synthetic twin: "
        "python run.py --config=configs/loro.py:synthetic"
      )
    try:
      manual.scan(manual_dir)
    except manual.ManualDataError as e:
      raise DataError(f"invalid RatsPain manual directory: {e}") from None
  return build_once(
    b,
    lambda: _open(config, data_dir),
    lambda b: _reuse(b, config, manual_dir),
    manual_dir,
    overwrite,
    (manual.ManualDataError, "invalid RatsPain manual directory"),
  )


def _reuse(b: tfds.core.DatasetBuilder, config: str, manual_dir: str | None) -> str:
  """A finished build: removes what killed builds left beside it, checks its format, returns its
  path."""
  remove_stale_incomplete(b)
  _check_format(b, config, manual_dir)
  return os.fspath(b.data_dir)


@contextlib.contextmanager
def build_lock(b: tfds.core.DatasetBuilder):
  """Holds `<data dir>/.<builder>_<config>.build.lock` (an advisory flock, released when the
  process ends): one build of a builder config per data dir at a time."""
  root = os.fspath(b.data_dir_root)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, f".{b.name}_{b.builder_config.name}.build.lock"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _aside_path(b: tfds.core.DatasetBuilder) -> str:
  """Where `replacing` keeps a finished build while its replacement is made: beside the build
  lock in the data dir root, outside the folders TFDS reads."""
  return os.path.join(
    os.fspath(b.data_dir_root), f".{b.name}_{b.builder_config.name}_{b.version}.replaced"
  )


@contextlib.contextmanager
def replacing(b: tfds.core.DatasetBuilder):
  """`--overwrite` of a finished build (hold `build_lock`): the build is renamed aside while the
  new one is made, renamed back if that fails, and deleted once it succeeded, so a failed rebuild
  (a bad directory, a full disk, an interrupt) leaves the previous build in place. A copy left
  aside by a replacement that was killed is discarded: this one replaces it."""
  path, aside = os.fspath(b.data_dir), _aside_path(b)
  if os.path.isdir(aside):
    shutil.rmtree(aside)
  had_build = os.path.isdir(path)
  if had_build:
    os.replace(path, aside)
  try:
    yield
  except BaseException:
    if had_build:
      if os.path.isdir(path):
        shutil.rmtree(path)
      os.replace(aside, path)
    raise
  if had_build:
    shutil.rmtree(aside, ignore_errors=True)


def build_once(b, open_builder, reuse, manual_dir, overwrite: bool, invalid) -> str:
  """Builds a data set with TFDS unless a finished build can be reused; returns the build's path.

  Holds `build_lock` of the builder `b` the caller opened, so processes starting at once on one
  data dir build it once: the others wait and then reuse it. `open_builder()` gives a fresh
  builder (whether it is prepared is read again after the wait); `reuse(b)` checks a finished
  build and returns its path;
  `overwrite` rebuilds through `replacing` (a failed rebuild keeps the old build); `invalid` =
  (the manual reader's error class, a message prefix): that error, raised while TFDS reads the
  manual directory, becomes a DataError. The `incomplete.*` folders killed builds left are removed
  once the build is finished.
  """
  with build_lock(b):
    b = open_builder()
    if b.is_prepared() and not overwrite:  # another process built it while this one waited
      return reuse(b)
    error, prefix = invalid
    with replacing(b) if overwrite else contextlib.nullcontext():
      b = open_builder()
      try:
        b.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
            manual_dir=manual_dir, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
          )
        )
      except error as e:  # the directory changed since the caller's check
        raise DataError(f"{prefix}: {e}") from None
    remove_stale_incomplete(b)
    return os.fspath(b.data_dir)
