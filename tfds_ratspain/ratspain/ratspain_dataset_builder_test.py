"""TFDS builder tests (stock DatasetBuilderTestCase; it reads back through tf.data,
so it needs the `[test]` extra's TensorFlow, and builds TFRecord files: the
builder's own default, array_record, has no tf.data reader)."""

import pytest

pytest.importorskip("tensorflow", reason="DatasetBuilderTestCase reads back with tf.data")

import tensorflow_datasets as tfds  # noqa: E402

from tfds_ratspain.ratspain import ratspain_dataset_builder  # noqa: E402


class _TFRecordBuilds:
  """Mixin: DatasetBuilderTestCase on TFRecord builds (as `tfds build --file_format=tfrecord`)."""

  def _make_builder(self, config=None):
    return self.dataset_class(
      data_dir=self.tmp_dir, config=config, version=self.VERSION, file_format="tfrecord"
    )


class RatsPainRealTest(_TFRecordBuilds, tfds.testing.DatasetBuilderTestCase):
  """Config `real` on dummy_data/ (layout 2, real RatsPain crops + generated PNG/BMP)."""

  DATASET_CLASS = ratspain_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["real"]
  SKIP_CHECKSUMS = True
  SPLITS = {"rat1": 2, "rat2": 2, "rat3": 2, "rat4": 2, "rat5": 2, "rat6": 2, "low_confidence": 2}


class RatsPainSyntheticMiniTest(_TFRecordBuilds, tfds.testing.DatasetBuilderTestCase):
  """Config `synthetic_mini`: the procedural twin, 12 images per split."""

  DATASET_CLASS = ratspain_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["synthetic_mini"]
  SKIP_CHECKSUMS = True
  SPLITS = {s: ratspain_dataset_builder.MINI_PER_SPLIT for s in ratspain_dataset_builder.SPLITS}


if __name__ == "__main__":
  tfds.testing.test_main()
