"""Data set code: the TFDS builder `ratspain` (RatsPain and its synthetic twin) and `grimace`
(a lab's own grimace-scored images, tfds_ratspain/grimace/README.md).

Importing this package registers both builders with TFDS, so
`tfds.builder("ratspain/synthetic")` and `tfds.data_source(...)` find them.
"""

from tfds_ratspain.grimace import grimace_dataset_builder  # noqa: F401  (registers the builder)
from tfds_ratspain.ratspain import ratspain_dataset_builder  # noqa: F401  (registers the builder)
