"""grimace: a lab's own grimace-scored face images (Rat or Mouse Grimace Scale).

Builder configs (the scale; both read `dl_manager.manual_dir`, see
MANUAL_DOWNLOAD_INSTRUCTIONS and `tfds_ratspain/grimace/manual.py`):
  * `rgs`: Rat Grimace Scale, `au_scores` = (orbital, ear, nose, whisker).
  * `mgs`: Mouse Grimace Scale, `au_scores` = (orbital, nose, cheek, ear, whisker).

Splits are named from the data: `animal_<id>` per animal with labelled images
(the id with every character outside [A-Za-z0-9] replaced by `_`; a
leave-one-animal-out fold is a split expression such as
`animal_M12+animal_rat_3`), plus `unlabelled` (rows without pain_level and
without any AU score; only present when there are such rows, never used for
training or evaluation). The original id is the `animal_id` feature of every
example, and `info.metadata["animal_ids"]` maps each animal split to its id.

`info.metadata` (a tfds.core.MetadataDict, saved as metadata.json with the
build) holds:
  * "scale": "rgs" or "mgs"; "au_names": the AU columns in `au_scores` order;
  * "animal_ids": {split name: animal id}, in order of first appearance;
  * "manual_fingerprint": `manual.fingerprint` of the manual directory read
    (labels.csv and its images' sizes and times), "manual_dir": its real path;
    `tfds_ratspain.grimace.build.prepare` refuses to reuse a build whose
    fingerprint differs from the directory it is given.

Builds are written as array_record files unless another file format is asked
for, as the ratspain builder does, so that `tfds.data_source` reads them
without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from tfds_ratspain.grimace import manual
from tfds_ratspain.ratspain.ratspain_dataset_builder import ArrayRecordByDefault

SCALES = manual.SCALES
LEVEL_NAMES = manual.LEVEL_NAMES
PAIN_NAMES = ("no_pain", "pain")
UNLABELLED_SPLIT = manual.UNLABELLED_SPLIT
# Keys of info.metadata.
ANIMAL_IDS = "animal_ids"
FINGERPRINT = "manual_fingerprint"

MANUAL_DOWNLOAD_INSTRUCTIONS = (
  """\
Put your lab's scored face images in the manual directory (by default
<data_dir>/downloads/manual, or pass --manual_dir=DIR):

"""
  + manual.LAYOUT_HELP
  + """
Then build it (config rgs for rats, mgs for mice):
    python -m tfds_ratspain build-grimace --scale=rgs --manual_dir=DIR [--data_dir=DIR]
or with the stock command:
    tfds build tfds_ratspain/grimace --config=rgs --manual_dir=DIR
"""
)


@dataclasses.dataclass
class GrimaceConfig(tfds.core.BuilderConfig):
  scale: str = "rgs"


class Builder(ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for a lab's grimace-scored images (manual directory)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
    GrimaceConfig(name="rgs", scale="rgs", description="Rat Grimace Scale (4 action units)."),
    GrimaceConfig(name="mgs", scale="mgs", description="Mouse Grimace Scale (5 action units)."),
  ]
  DEFAULT_CONFIG_NAME = "rgs"

  def _info(self) -> tfds.core.DatasetInfo:
    num_aus = len(SCALES[self.builder_config.scale])
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "filename": tfds.features.Text(),
          "animal_id": tfds.features.Text(),
          "pain_level": tfds.features.ClassLabel(names=LEVEL_NAMES),
          "pain": tfds.features.ClassLabel(names=PAIN_NAMES),
          "au_scores": tfds.features.Tensor(shape=(num_aus,), dtype=np.int32),
          "session": tfds.features.Text(),
          "condition": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "pain"),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    scale = self.builder_config.scale
    # Fingerprint first: a change during the build makes it look stale, never fresh.
    fingerprint = manual.fingerprint(manual_dir)
    # Everything is validated (and every image decoded once) before writing.
    records = manual.scan(manual_dir, scale)
    animal_ids = manual.animal_splits(records)
    self.info.metadata.update(
      {
        "scale": scale,
        "au_names": list(SCALES[scale]),
        ANIMAL_IDS: animal_ids,
        FINGERPRINT: fingerprint,
        "manual_dir": manual.real_path(manual_dir),
      }
    )
    names = list(animal_ids) + [UNLABELLED_SPLIT]
    # Only splits with images: TFDS cannot write an empty split.
    return {
      s: self._generate_examples([r for r in records if r.split == s])
      for s in names
      if any(r.split == s for r in records)
    }

  def _generate_examples(self, records):
    for r in records:
      yield (
        r.filename,
        {
          "image": manual.load_rgb_jpeg(r.path),
          "filename": r.filename,
          "animal_id": r.animal_id,
          "pain_level": r.pain_level,
          "pain": -1 if r.pain_level < 0 else int(r.pain_level > 0),
          "au_scores": np.asarray(r.au_scores, np.int32),
          "session": r.session,
          "condition": r.condition,
        },
      )
