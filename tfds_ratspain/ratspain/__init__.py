"""TFDS builder for RatsPain (real set from a manual download, or the synthetic twin)."""
