"""TFDS builder tests for `grimace` (stock DatasetBuilderTestCase; it reads back through
tf.data, so it needs the `[test]` extra's TensorFlow, and builds TFRecord files: the
builder's own default, array_record, has no tf.data reader).

dummy_data/rgs and dummy_data/mgs are small lab directories (labels.csv + images/,
three animals with non-numeric ids each, real RatsPain crops and generated images):
see the grimace README for what each row covers.
"""

import pytest

pytest.importorskip("tensorflow", reason="DatasetBuilderTestCase reads back with tf.data")

import tensorflow_datasets as tfds  # noqa: E402

from tfds_ratspain.grimace import grimace_dataset_builder  # noqa: E402
from tfds_ratspain.ratspain.ratspain_dataset_builder_test import _TFRecordBuilds  # noqa: E402

DUMMY_DATA = grimace_dataset_builder.Builder.code_path.parent / "dummy_data"


class GrimaceRgsTest(_TFRecordBuilds, tfds.testing.DatasetBuilderTestCase):
  """Config `rgs` on dummy_data/rgs."""

  DATASET_CLASS = grimace_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["rgs"]
  EXAMPLE_DIR = str(DUMMY_DATA / "rgs")
  SKIP_CHECKSUMS = True
  SPLITS = {"animal_M12": 2, "animal_rat_3": 2, "animal_F_7": 2, "unlabelled": 2}


class GrimaceMgsTest(_TFRecordBuilds, tfds.testing.DatasetBuilderTestCase):
  """Config `mgs` on dummy_data/mgs."""

  DATASET_CLASS = grimace_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["mgs"]
  EXAMPLE_DIR = str(DUMMY_DATA / "mgs")
  SKIP_CHECKSUMS = True
  SPLITS = {"animal_C57_1": 2, "animal_C57_2": 2, "animal_BALB_c_3": 2, "unlabelled": 1}


if __name__ == "__main__":
  tfds.testing.test_main()
