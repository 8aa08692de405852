"""RatsPain: rat facial-expression pain images of 6 rats (Liu et al. 2025).

Builder configs (same schema):
  * `real`: the real set, read from `dl_manager.manual_dir` (request it from
    the authors, see MANUAL_DOWNLOAD_INSTRUCTIONS).
  * `synthetic`: the embedded procedural twin with RatsPain's exact per-rat
    label counts (1,138 labelled + 157 low-confidence images, 256x256).
  * `synthetic_mini`: the first 12 images of each split of the twin, for
    smoke runs and tests (seconds to build).
  * `synthetic_dev`: the same generator with another seed (1): other faces,
    poses and labels drawn from the same distributions, with the same per-rat
    label counts. For tuning recipes (docs/results.md "Recipe study"), so that
    nothing is tuned on the `synthetic` folds that are reported.

Splits are `rat1` ... `rat6` (one per animal: a leave-one-rat-out fold is a
split expression such as `rat1+rat2+rat3+rat4+rat5`) and `low_confidence`
(no image-level label; never used for training or LORO).

Builds are written as array_record files unless another file format is
asked for (`file_format=` or the stock `tfds build --file_format=`), so both
`python -m tfds_ratspain build` and the stock `tfds build` command make what
`tfds.data_source(...)` and the trainer read, without TensorFlow. An existing
build is read in the format it was written in.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from tfds_ratspain.ratspain import manual, synthetic

SPLITS = synthetic.SPLITS
RAT_SPLITS = SPLITS[:-1]
LEVEL_NAMES = ("no_pain", "moderate", "severe")
PAIN_NAMES = ("no_pain", "pain")
MINI_PER_SPLIT = 12
# Format of new builds when none is asked for (the TFDS default is TFRecord,
# which `tfds.data_source` cannot read).
DEFAULT_FILE_FORMAT = "array_record"
# Synthetic splits with at least this many images render in worker processes.
PARALLEL_MIN_EXAMPLES = 32

MANUAL_DOWNLOAD_INSTRUCTIONS = (
  """\
RatsPain is released by its authors on request only (see
https://github.com/xhzongyuan/RatsPain for the contact; ask by e-mail for
the data set and agree to its terms). Place the files you receive in the
manual directory (by default <data_dir>/downloads/manual, or pass
--manual_dir=DIR) in one of these layouts:

"""
  + manual.LAYOUTS_HELP
  + """
Then build it:
    tfds build tfds_ratspain/ratspain --config=real --manual_dir=DIR
or, without TensorFlow:
    python -m tfds_ratspain build --config=real --manual_dir=DIR
"""
)


@dataclasses.dataclass
class RatsPainConfig(tfds.core.BuilderConfig):
  synthetic: bool = False
  max_per_split: int | None = None
  seed: int = 0


class ArrayRecordByDefault:
  """Builder mixin: without an explicit `file_format` TFDS takes the one of an existing build
  (dataset_info.json), else TFRecord; a new build here is array_record (readable with
  `tfds.data_source`, no TensorFlow). Shared by the `ratspain` and `grimace` builders."""

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    if file_format is None and not (self.data_path / "dataset_info.json").exists():
      self.info.set_file_format(DEFAULT_FILE_FORMAT, override=True)


class Builder(ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for RatsPain and its synthetic twin."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
    RatsPainConfig(name="real", description="The real RatsPain set (manual download)."),
    RatsPainConfig(
      name="synthetic",
      synthetic=True,
      description="Procedural synthetic twin with RatsPain's label counts.",
    ),
    RatsPainConfig(
      name="synthetic_mini",
      synthetic=True,
      max_per_split=MINI_PER_SPLIT,
      description=f"At most {MINI_PER_SPLIT} images per split of the twin.",
    ),
    RatsPainConfig(
      name="synthetic_dev",
      synthetic=True,
      seed=1,
      description="The twin's generator with seed 1, for tuning (never for reported results).",
    ),
  ]
  DEFAULT_CONFIG_NAME = "real"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "filename": tfds.features.Text(),
          "rat_id": np.int32,
          "pain_level": tfds.features.ClassLabel(names=LEVEL_NAMES),
          "pain": tfds.features.ClassLabel(names=PAIN_NAMES),
          "au_scores": tfds.features.Tensor(shape=(4,), dtype=np.int32),
          "head_pose": tfds.features.Tensor(shape=(3,), dtype=np.float32),
          "landmarks": tfds.features.Tensor(shape=(7, 2), dtype=np.float32),
          "landmark_visible": tfds.features.Tensor(shape=(7,), dtype=np.bool_),
        }
      ),
      supervised_keys=("image", "pain"),
      homepage="https://doi.org/10.3389/fvets.2025.1619794",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    if self.builder_config.synthetic:
      specs = synthetic.plan(self.builder_config.seed, self.builder_config.max_per_split)
      return {s: self._generate_examples([x for x in specs if x.split == s]) for s in SPLITS}
    # Everything is validated (and every image decoded once) before writing.
    records = manual.scan(os.fspath(dl_manager.manual_dir))
    # Only splits with images: TFDS cannot write an empty split.
    return {
      s: self._generate_examples([r for r in records if r.split == s])
      for s in SPLITS
      if any(r.split == s for r in records)
    }

  def _generate_examples(self, items):
    """Yields (key, example); items are synthetic ExampleSpecs or manual Records."""
    if self.builder_config.synthetic:
      yield from self._generate_synthetic(items)
    else:
      yield from self._generate_real(items)

  def _generate_synthetic(self, specs):
    # Worker processes start with forkserver/spawn (never fork: this process
    # may run JAX or TensorFlow threads); the images do not depend on it.
    workers = min(os.cpu_count() or 1, 8) if len(specs) >= PARALLEL_MIN_EXAMPLES else 0
    examples = synthetic.render_many(specs, workers, chunksize=8)
    for s, ex in zip(specs, examples):
      yield s.filename, _example(ex)

  def _generate_real(self, records):
    nan2 = np.full((7, 2), np.nan, np.float32)
    for r in records:
      yield (
        r.filename,
        {
          "image": manual.load_rgb_jpeg(r.path),
          "filename": r.filename,
          "rat_id": r.rat_id,
          "pain_level": r.pain_level,
          "pain": -1 if r.pain_level < 0 else int(r.pain_level > 0),
          "au_scores": np.asarray(r.au_scores, np.int32),
          "head_pose": np.full((3,), np.nan, np.float32),
          "landmarks": nan2,
          "landmark_visible": np.zeros((7,), np.bool_),
        },
      )


def _example(ex: dict) -> dict:
  """The renderer's dict with the dtypes of the schema."""
  return {
    "image": ex["image"],
    "filename": ex["filename"],
    "rat_id": int(ex["rat_id"]),
    "pain_level": int(ex["pain_level"]),
    "pain": int(ex["pain"]),
    "au_scores": np.asarray(ex["au_scores"], np.int32),
    "head_pose": np.asarray(ex["head_pose"], np.float32),
    "landmarks": np.asarray(ex["landmarks"], np.float32),
    "landmark_visible": np.asarray(ex["landmark_visible"], np.bool_),
  }
