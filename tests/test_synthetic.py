"""Tests for the procedural RatsPain twin (tfds_ratspain.ratspain.synthetic)."""

import collections
import dataclasses
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import ROOT
from PIL import Image

from tfds_ratspain import build
from tfds_ratspain.ratspain import synthetic


@pytest.fixture(scope="module")
def full_plan():
  return synthetic.plan(0)


@pytest.fixture(scope="module")
def frontal_spec(full_plan):
  return next(s for s in full_plan if s.split == "rat1" and abs(s.head_pose[0]) < 10)


def _decode(jpeg: bytes) -> np.ndarray:
  im = Image.open(io.BytesIO(jpeg))
  assert im.format == "JPEG"
  return np.asarray(im)


def test_constants():
  assert synthetic.IMAGE_SIZE == 256
  assert synthetic.SPLITS[-1] == "low_confidence" and len(synthetic.SPLITS) == 7
  assert len(synthetic.LANDMARK_NAMES) == 7 and len(synthetic.AU_NAMES) == 4
  assert sum(sum(c) for c in synthetic.PER_RAT_COUNTS.values()) == 1138


def test_plan_exact_counts(full_plan):
  assert len(full_plan) == 1138 + synthetic.NUM_LOW_CONFIDENCE
  counts = collections.Counter((s.split, s.pain_level) for s in full_plan)
  for rat, (n0, n1, n2) in synthetic.PER_RAT_COUNTS.items():
    split = f"rat{rat}"
    assert (counts[(split, 0)], counts[(split, 1)], counts[(split, 2)]) == (n0, n1, n2)
    assert all(s.rat_id == rat for s in full_plan if s.split == split)
  lc = [s for s in full_plan if s.split == "low_confidence"]
  assert len(lc) == synthetic.NUM_LOW_CONFIDENCE == 157
  assert all(s.pain_level == -1 for s in lc)
  assert {s.rat_id for s in lc} == set(range(1, 7))
  # Splits come in SPLITS order.
  order = [synthetic.SPLITS.index(s.split) for s in full_plan]
  assert order == sorted(order)


def test_plan_filenames_unique(full_plan):
  names = [s.filename for s in full_plan]
  assert len(set(names)) == len(names)
  for s in full_plan:
    prefix = "low_confidence/lc_" if s.split == "low_confidence" else f"{s.split}/{s.split}_"
    assert s.filename.startswith(prefix) and s.filename.endswith(".jpg")


def test_labels_are_rounded_mean_half_up(full_plan):
  # Rule: round half up of mean(AU) == (sum + 2) // 4.
  assert [synthetic.pain_level_from_au((0, 0, 0, s)) for s in range(3)] == [0, 0, 1]
  assert synthetic.pain_level_from_au((1, 1, 0, 0)) == 1  # mean 0.5 -> 1
  assert synthetic.pain_level_from_au((2, 2, 1, 1)) == 2  # mean 1.5 -> 2
  assert synthetic.pain_level_from_au((2, 1, 1, 1)) == 1  # mean 1.25 -> 1
  for s in full_plan:
    assert len(s.au_scores) == 4 and all(a in (0, 1, 2) for a in s.au_scores)
    mean = sum(s.au_scores) / 4
    assert s.true_pain_level == int(np.floor(mean + 0.5))
    if s.pain_level >= 0:
      assert s.pain_level == s.true_pain_level
    # Rendered intensities are the scores plus a small jitter.
    assert np.all(np.abs(np.subtract(s.au_intensity, s.au_scores)) <= 0.75)


def test_aus_correlated_but_not_identical(full_plan):
  au = np.array([s.au_scores for s in full_plan if s.pain_level >= 0], float)
  corr = np.corrcoef(au.T)
  assert np.all(corr[np.triu_indices(4, 1)] > 0.2)
  assert np.mean(np.all(au == au[:, :1], axis=1)) < 0.6  # raters disagree


def test_low_confidence_is_ambiguous(full_plan):
  for s in full_plan:
    if s.split == "low_confidence":
      mean = sum(s.au_scores) / 4
      assert min(abs(mean - 0.5), abs(mean - 1.5)) <= 0.25


def test_plan_deterministic_and_seeded():
  a, b = synthetic.plan(3, 4), synthetic.plan(3, 4)
  assert a == b
  assert synthetic.plan(0, 4) != a


@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_max_per_split(full_plan, n):
  sub = synthetic.plan(0, max_per_split=n)
  by_name = {s.filename: s for s in full_plan}
  assert all(by_name[s.filename] == s for s in sub)  # a subset of the full plan
  full_order = [s.filename for s in full_plan]
  assert [s.filename for s in sub] == [f for f in full_order if f in {s.filename for s in sub}]
  per_split = collections.Counter(s.split for s in sub)
  assert set(per_split) == set(synthetic.SPLITS)
  for split in synthetic.SPLITS:
    assert per_split[split] == n  # every split has >= 12 examples
    if n >= 2 and split != "low_confidence":
      assert {int(s.pain_level > 0) for s in sub if s.split == split} == {0, 1}


def test_render_outputs(frontal_spec):
  ex = synthetic.render(frontal_spec)
  assert set(ex) == {
    "image",
    "filename",
    "rat_id",
    "pain_level",
    "pain",
    "au_scores",
    "head_pose",
    "landmarks",
    "landmark_visible",
  }
  assert isinstance(ex["image"], bytes)
  img = _decode(ex["image"])
  assert img.shape == (256, 256, 3) and img.dtype == np.uint8
  assert 40 < img.mean() < 240 and img.std() > 10
  assert ex["filename"] == frontal_spec.filename
  assert ex["rat_id"] == frontal_spec.rat_id
  assert ex["pain_level"] == frontal_spec.pain_level
  assert ex["pain"] == int(frontal_spec.pain_level > 0)
  assert ex["au_scores"].dtype == np.int64 and ex["au_scores"].shape == (4,)
  assert tuple(ex["au_scores"]) == frontal_spec.au_scores
  assert ex["head_pose"].dtype == np.float32 and ex["head_pose"].shape == (3,)
  np.testing.assert_allclose(ex["head_pose"], frontal_spec.head_pose, atol=1e-4)
  assert ex["landmarks"].dtype == np.float32 and ex["landmarks"].shape == (7, 2)
  assert ex["landmark_visible"].dtype == np.bool_ and ex["landmark_visible"].shape == (7,)


def test_render_low_confidence(full_plan):
  spec = next(s for s in full_plan if s.split == "low_confidence")
  ex = synthetic.render(spec)
  assert ex["pain_level"] == -1 and ex["pain"] == -1
  assert tuple(ex["au_scores"]) == spec.au_scores and 1 <= ex["rat_id"] <= 6


def test_landmarks_nan_exactly_where_not_visible():
  for spec in synthetic.plan(0, max_per_split=3):
    ex = synthetic.render(spec)
    lm, vis = ex["landmarks"], ex["landmark_visible"]
    assert np.all(np.isnan(lm[~vis]))
    assert np.all(np.isfinite(lm[vis]))
    assert np.all((lm[vis] >= 0) & (lm[vis] <= 1))


def test_frontal_face_landmarks(frontal_spec):
  spec = dataclasses.replace(
    frontal_spec, head_pose=(0.0, 0.0, 0.0), occluder="none", offset=(0.0, 0.0)
  )
  ex = synthetic.render(spec)
  assert ex["landmark_visible"].all()
  lm = dict(zip(synthetic.LANDMARK_NAMES, ex["landmarks"]))
  # Animal's left is image right; eyes above the nose, ears above the eyes.
  assert lm["left_eye"][0] > 0.5 > lm["right_eye"][0]
  assert lm["left_ear"][0] > 0.5 > lm["right_ear"][0]
  assert abs(lm["nose"][0] - 0.5) < 0.02
  assert lm["left_ear"][1] < lm["left_eye"][1] < lm["nose"][1]


@pytest.mark.parametrize(
  "yaw,far,near", [(75.0, "left_eye", "right_eye"), (-75.0, "right_eye", "left_eye")]
)
def test_extreme_yaw_hides_far_eye(frontal_spec, yaw, far, near):
  spec = dataclasses.replace(frontal_spec, head_pose=(yaw, 0.0, 0.0), occluder="none")
  vis = dict(zip(synthetic.LANDMARK_NAMES, synthetic.render(spec)["landmark_visible"]))
  assert not vis[far] and vis[near] and vis["nose"]


def test_orbital_tightening_changes_eye(frontal_spec):
  # Same image apart from the orbital AU: the eye region must differ clearly.
  base = dataclasses.replace(
    frontal_spec, head_pose=(0.0, 0.0, 0.0), occluder="none", blur=0.0, noise=0.0, jpeg_quality=95
  )
  a = dataclasses.replace(base, au_intensity=(0.0, 0.0, 0.0, 0.0))
  b = dataclasses.replace(base, au_intensity=(2.0, 0.0, 0.0, 0.0))
  ea, eb = synthetic.render(a), synthetic.render(b)
  ia, ib = _decode(ea["image"]).astype(float), _decode(eb["image"]).astype(float)
  x, y = (ea["landmarks"][0] * 256).astype(int)
  win = (slice(y - 12, y + 12), slice(x - 16, x + 16))
  assert np.abs(ia[win] - ib[win]).mean() > 15
  # Red eye pixels shrink a lot when the eye narrows to a slit.
  red = lambda im: np.sum((im[win][..., 0] - im[win][..., 1]) > 90)
  assert red(ib) < 0.5 * red(ia)


def test_render_deterministic(frontal_spec):
  assert synthetic.render(frontal_spec)["image"] == synthetic.render(frontal_spec)["image"]


def test_generate_deterministic_across_workers():
  seq = list(synthetic.generate(seed=1, max_per_split=2, num_workers=0))
  par = list(synthetic.generate(seed=1, max_per_split=2, num_workers=2))
  assert len(seq) == len(par) == 2 * len(synthetic.SPLITS)
  specs = synthetic.plan(1, 2)
  assert [(s.split, s.filename) for s in specs] == [(sp, k) for sp, k, _ in seq]
  for (s1, k1, e1), (s2, k2, e2) in zip(seq, par):
    assert (s1, k1) == (s2, k2)
    assert e1["image"] == e2["image"]
    np.testing.assert_array_equal(e1["landmarks"], e2["landmarks"])
    np.testing.assert_array_equal(e1["landmark_visible"], e2["landmark_visible"])


# Builds synthetic_mini in a fresh process whose JAX runtime is up (as when training
# builds the data on first use), rendering every split in worker processes, and
# prints the start methods of the process pools it made.
_BUILD_AFTER_JAX = """
import concurrent.futures, json, sys
import jax
jax.devices()  # starts JAX's threads and its os.fork() warning
methods = []
class _Pool(concurrent.futures.ProcessPoolExecutor):
  def __init__(self, *args, mp_context=None, **kwargs):
    methods.append(mp_context.get_start_method() if mp_context else "default")
    super().__init__(*args, mp_context=mp_context, **kwargs)
concurrent.futures.ProcessPoolExecutor = _Pool
from tfds_ratspain import build
from tfds_ratspain.ratspain import ratspain_dataset_builder
ratspain_dataset_builder.PARALLEL_MIN_EXAMPLES = 1
build.prepare("synthetic_mini", data_dir=sys.argv[1])
print(json.dumps(methods))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the builder renders in one process")
def test_build_after_jax_no_fork_warning_same_bytes(tmp_path, mini_data_dir):
  """Worker processes do not fork the JAX process (no "os.fork() was called" warning),
  and the images are byte-identical to a build rendered in one process."""
  warn = ["-W", "always::RuntimeWarning", "-W", "always::DeprecationWarning"]
  proc = subprocess.run(
    [sys.executable, *warn, "-c", _BUILD_AFTER_JAX, str(tmp_path)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "fork()" not in proc.stderr, proc.stderr[-4000:]
  methods = json.loads(proc.stdout.strip().splitlines()[-1])
  assert len(methods) == len(synthetic.SPLITS) and not {"fork", "default"} & set(methods), methods
  skip = {"image": tfds.decode.SkipDecoding()}
  pooled = build.builder("synthetic_mini", str(tmp_path)).as_data_source(decoders=skip)
  serial = build.builder("synthetic_mini", mini_data_dir).as_data_source(decoders=skip)
  for split in synthetic.SPLITS:
    assert len(pooled[split]) == len(serial[split]) > 0
    for a, b in zip(pooled[split], serial[split]):
      assert a["filename"] == b["filename"] and a["image"] == b["image"], split
      np.testing.assert_array_equal(a["landmarks"], b["landmarks"])


def _within_rat_corr(specs, values):
  """Correlation of `values` with the binary label after removing per-rat means."""
  y = np.array([float(s.pain_level > 0) for s in specs])
  x = np.asarray(values, float)
  rats = np.array([s.rat_id for s in specs])
  for r in np.unique(rats):
    m = rats == r
    y[m] -= y[m].mean()
    x[m] -= x[m].mean()
  return float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))


def test_no_shortcuts_in_plan(full_plan):
  lab = [s for s in full_plan if s.pain_level >= 0]
  nuisances = {
    "abs_yaw": [abs(s.head_pose[0]) for s in lab],
    "yaw": [s.head_pose[0] for s in lab],
    "pitch": [s.head_pose[1] for s in lab],
    "roll": [s.head_pose[2] for s in lab],
    "brightness": [s.light[2] for s in lab],
    "light_azimuth": [s.light[0] for s in lab],
    "scale": [s.scale for s in lab],
    "offset_x": [s.offset[0] for s in lab],
    "offset_y": [s.offset[1] for s in lab],
    "jpeg_quality": [s.jpeg_quality for s in lab],
    "blur": [s.blur for s in lab],
    "noise": [s.noise for s in lab],
    "session": [s.session for s in lab],
    "occluded": [s.occluder != "none" for s in lab],
  }
  nuisances.update({f"bg_{k}": [s.background == k for s in lab] for k in synthetic.BACKGROUNDS})
  for name, values in nuisances.items():
    assert abs(_within_rat_corr(lab, values)) < 0.1, name


def test_rendered_brightness_not_a_shortcut(full_plan):
  # Mean image brightness of rendered frontal-ish images is unrelated to pain within a rat.
  specs = [s for s in full_plan if s.split == "rat4"][:60]
  bright = [_decode(synthetic.render(s)["image"]).mean() for s in specs]
  assert abs(_within_rat_corr(specs, bright)) < 0.35
