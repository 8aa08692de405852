"""The grimace scales and their action units (AUs), shared by the data set builders, the AU
heads and `painseeker predict`. Kept free of TensorFlow, TFDS and JAX.

Each scale lists its AU columns in the order of the AU heads and of the data's `au_scores`
(0, 1, 2 per AU; -1 = not scorable).
"""

SCALES = {
  # Rat Grimace Scale (Sotocinal et al. 2011, Mol. Pain 7:55), in RatsPain's order.
  "rgs": ("au_orbital", "au_ear", "au_nose", "au_whisker"),
  # Mouse Grimace Scale (Langford et al. 2010, Nat. Methods 7:447).
  "mgs": ("au_orbital", "au_nose", "au_cheek", "au_ear", "au_whisker"),
}
