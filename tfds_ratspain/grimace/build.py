"""Preparing the `grimace` builder without TensorFlow (array_record files).

  prepare("rgs", "/path/to/lab_dir", data_dir=DIR)        # -> the build's path
  python -m tfds_ratspain build-grimace --scale=rgs --manual_dir=DIR [--data_dir=DIR]

A lab's directory changes over time, while TFDS keeps one build per
<data_dir>/grimace/<scale>/<version>. Each build therefore records the
fingerprint of the manual directory it was made from (`manual.fingerprint`:
labels.csv's bytes and the size and modification time of every image it
names), and `prepare` reuses a build only for a directory with the same
fingerprint. For another one it raises DataError asking for `--overwrite`
(or another --data_dir) rather than rebuilding on its own: a silent rebuild
would delete a build that other runs may be reading or whose results were
reported, and a mistyped --manual_dir would replace a good build; the error
costs one flag and says which build and which directory differ.
"""

from __future__ import annotations

import os
import shlex

import tensorflow_datasets as tfds

from tfds_ratspain.build import ARRAY_RECORD, DataError, build_once, remove_stale_incomplete
from tfds_ratspain.grimace import grimace_dataset_builder as gb
from tfds_ratspain.grimace import manual

__all__ = ["DataError", "SCALES", "animal_ids", "builder", "prepare"]

SCALES = tuple(c.name for c in gb.Builder.BUILDER_CONFIGS)


def _open(scale: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  if scale not in SCALES:
    raise DataError(f"unknown grimace scale {scale!r}; choose one of {', '.join(SCALES)}")
  return gb.Builder(config=scale, data_dir=data_dir)


def _fix_command(b: tfds.core.DatasetBuilder, scale: str, manual_dir: str) -> str:
  return shlex.join(
    [
      "python",
      "-m",
      "tfds_ratspain",
      "build-grimace",
      f"--scale={scale}",
      f"--manual_dir={manual_dir}",
      f"--data_dir={os.fspath(b.data_dir_root)}",
      "--overwrite",
    ]
  )


def _check_build(b: tfds.core.DatasetBuilder, scale: str, manual_dir: str) -> None:
  """DataError unless the finished build is array_record and made from `manual_dir`'s state."""
  fix = _fix_command(b, scale, manual_dir)
  if ARRAY_RECORD not in b.info.available_file_formats():
    fmt = b.info.file_format.value if b.info.file_format else "an unknown format"
    raise DataError(
      f"grimace/{scale} in {b.data_dir} was built as {fmt} files, but training reads "
      "array_record files with tfds.data_source. Rebuild it (this deletes the old build "
      f"first):\n    {fix}"
    )
  metadata = b.info.metadata or {}
  built = metadata.get(gb.FINGERPRINT)
  try:
    current = manual.fingerprint(manual_dir)
  except manual.ManualDataError as e:
    raise DataError(f"invalid grimace manual directory: {e}") from None
  if built != current:
    source = metadata.get("manual_dir") or "an unknown directory"
    raise DataError(
      f"grimace/{scale} in {b.data_dir} was built from {source} as it was then, and "
      f"{manual_dir} now differs (labels.csv or the images it names were changed, added or "
      "removed, or copied without keeping their times). It is not reused, so that no run "
      "reads a stale build. Rebuild it from this directory (this deletes the old build "
      f"first):\n    {fix}\nor pass another --data_dir to keep both."
    )


def builder(scale: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """The `grimace/<scale>` builder (prepared or not); DataError for an unknown scale."""
  return _open(scale, data_dir)


def animal_ids(b: tfds.core.DatasetBuilder) -> dict[str, str]:
  """Split name -> animal id of a finished build (from info.metadata["animal_ids"])."""
  return dict((b.info.metadata or {}).get(gb.ANIMAL_IDS, {}))


def prepare(
  scale: str, manual_dir: str, data_dir: str | None = None, overwrite: bool = False
) -> str:
  """Builds `grimace/<scale>` from `manual_dir` and returns the build's path.

  A finished build is reused only if it is array_record and was made from
  this directory's current state (same fingerprint, see the module
  docstring); otherwise DataError says to rebuild with `overwrite`. The
  directory is validated in full (`manual.scan`) before anything is written
  or deleted: on invalid input DataError names the CSV line, column or file,
  `data_dir` stays untouched and an existing build is kept even with
  `overwrite`. TFDS writes into a temporary folder renamed when complete; the
  `incomplete.*` folders a killed build leaves are removed once this scale's
  build is finished.
  """
  b = _open(scale, data_dir)
  if not manual_dir or not os.path.isdir(manual_dir):
    raise DataError(
      f"the grimace manual directory {manual_dir!r} is missing.\n\n"
      f"{gb.MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )
  manual_dir = os.fspath(manual_dir)
  if b.is_prepared() and not overwrite:
    return _reuse(b, scale, manual_dir)
  try:  # Validate before TFDS writes (or this deletes) anything.
    manual.scan(manual_dir, scale)
  except manual.ManualDataError as e:
    raise DataError(f"invalid grimace manual directory: {e}") from None
  return build_once(
    b,
    lambda: _open(scale, data_dir),
    lambda b: _reuse(b, scale, manual_dir),
    manual_dir,
    overwrite,
    (manual.ManualDataError, "invalid grimace manual directory"),
  )


def _reuse(b: tfds.core.DatasetBuilder, scale: str, manual_dir: str) -> str:
  """A finished build: removes what killed builds left beside it, checks that it is array_record
  and made from this directory's current state, returns its path."""
  remove_stale_incomplete(b)
  _check_build(b, scale, manual_dir)
  return os.fspath(b.data_dir)
