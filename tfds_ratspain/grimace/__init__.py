"""TFDS builder `grimace` for a lab's own grimace-scored face images (manual directory).

Importing this package registers the builder with TFDS, so
`tfds.builder("grimace/rgs", data_dir=...)` and `tfds.data_source(...)` find it.
"""

from tfds_ratspain.grimace import grimace_dataset_builder  # noqa: F401  (registers the builder)
