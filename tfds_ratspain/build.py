"""Preparing the `ratspain` builder without TensorFlow (array_record files)."""

from __future__ import annotations

import os
import shutil

import tensorflow_datasets as tfds

from tfds_ratspain.ratspain import manual
from tfds_ratspain.ratspain import ratspain_dataset_builder as rb

CONFIG_NAMES = tuple(c.name for c in rb.Builder.BUILDER_CONFIGS)


class DataError(RuntimeError):
  """The data set cannot be prepared; the message says what to do."""


def builder(config: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  if config not in CONFIG_NAMES:
    raise DataError(f"unknown ratspain config {config!r}; choose one of {', '.join(CONFIG_NAMES)}")
  return rb.Builder(config=config, data_dir=data_dir, file_format="array_record")


def prepare(config: str, data_dir: str | None = None, manual_dir: str | None = None,
            overwrite: bool = False) -> str:
  """Builds `ratspain/<config>` once (a finished build is reused) and returns its path.

  Raises DataError with instructions when the real set is missing or invalid.
  TFDS writes into a temporary directory and renames it when complete, so a
  failed build leaves nothing behind.
  """
  b = builder(config, data_dir)
  if overwrite and os.path.isdir(b.data_dir):
    shutil.rmtree(b.data_dir)
    b = builder(config, data_dir)
  if b.is_prepared():
    return os.fspath(b.data_dir)
  if config == "real":
    manual_dir = manual_dir or os.path.join(os.fspath(b.data_dir_root), "downloads", "manual")
    if not os.path.isdir(manual_dir) or not any(not n.startswith(".") for n in os.listdir(manual_dir)):
      raise DataError(
          f"the real RatsPain set is not prepared in {b.data_dir_root} and the manual "
          f"directory {manual_dir} is missing or empty.\n\n{rb.MANUAL_DOWNLOAD_INSTRUCTIONS}\n"
          "For a quick start without the real data use the synthetic twin: "
          "python run.py --config=configs/loro.py:synthetic")
    try:  # Validate before TFDS writes anything (metadata, empty folders).
      manual.scan(manual_dir)
    except manual.ManualDataError as e:
      raise DataError(f"invalid RatsPain manual directory: {e}") from None
  try:
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  except manual.ManualDataError as e:
    raise DataError(f"invalid RatsPain manual directory: {e}") from None
  return os.fspath(b.data_dir)
