"""RatsPain data set code: the TFDS builder `ratspain` and its synthetic twin.

Importing this package registers the `ratspain` builder with TFDS, so
`tfds.builder("ratspain/synthetic")` and `tfds.data_source(...)` find it.
"""

from tfds_ratspain.ratspain import ratspain_dataset_builder  # noqa: F401  (registers the builder)
