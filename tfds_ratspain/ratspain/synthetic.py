"""Procedural "synthetic twin" of RatsPain (pure numpy + PIL).

The real RatsPain images cannot be redistributed, so this module draws
look-alike close-up face crops of albino laboratory rats with exactly the
per-rat label counts of the real set (1,138 labelled images of 6 rats plus
157 low-confidence images).

Image model
-----------
The head is a small set of ellipsoids in 3-D head coordinates (cranium,
muzzle, whisker pads, nose, eyes with eyelid rims, two ears with a pink
inner pinna, lower jaw, body), rotated by the head pose and projected
orthographically onto a fixed camera. A per-pixel z-buffer resolves depth, so
parts turning away foreshorten and disappear behind the head (at large yaw the
far eye and far ear are hidden). Whiskers are 3-D polylines, drawn where their
roots pass the z-buffer test. Rendering is done at 2x supersampling, then
box-downsampled to 256x256 and JPEG-compressed.

Coordinates: head x = the animal's left (image right in a frontal view),
y = up, z = towards the camera. Pose: ``R = Rz(roll) Rx(-pitch) Ry(yaw) B``
where ``B`` is a fixed 28 degree nose-down tilt (the camera looks at the rat
slightly from above, as in the real crops). Positive yaw turns the nose to
image right (the far eye is then ``left_eye``), positive pitch lifts the
nose, positive roll turns the face counter-clockwise in the image.
Landmarks are normalised ``(x, y)`` image coordinates, ``x`` to the right and
``y`` down, both in [0, 1]; NaN where the part is hidden, occluded by a paw,
or outside the image.

Pain cues
---------
Pain is visible only through the four Rat Grimace Scale action units, each
scored 0/1/2 and rendered with intensity ``score + small jitter``:

* ``orbital``: the eye aperture narrows towards a slit, the lid rim widens.
* ``ear``: ears narrow, turn outwards, tilt back (pink pinna foreshortens)
  and rotate outwards.
* ``nose``: the muzzle bulge and whisker pads flatten, the muzzle lengthens.
* ``whisker``: whiskers are pulled back, bunched together and straightened.

Label rule: ``pain_level = round_half_up(mean(au_scores))``, i.e.
``(sum(au_scores) + 2) // 4``: sums 0-1 -> 0 (no pain), 2-5 -> 1 (moderate),
6-8 -> 2 (severe). A mean of exactly 0.5 gives 1 and 1.5 gives 2. The binary
``pain`` is ``pain_level > 0``.

Nuisance factors (pose, background, lighting, scale, position, blur, noise,
JPEG quality, occluders) are drawn from a random stream that never sees the
labels, so within a rat none of them correlates with pain. Each rat has its
own identity (head size, fur tint, ear shape, eye spacing and size, muzzle
length, typical pose range, session lighting and backgrounds).

More rats
---------
`plan(seed, max_per_split)` is the twin of RatsPain (six rats). `plan_rats(seed,
num_rats, per_rat)` plans any number of rats with the same generator (the
leave-one-animal-out demo, `tfds_ratspain.grimace.twin_lab_dir`): rats 1..6
keep their identities, rats 7.. get identities drawn within the range of the
six (`rat_identity`), and rat k has the label proportions of twin rat
((k - 1) mod 6) + 1.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import itertools
import math
import multiprocessing
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 256
SPLITS = ("rat1", "rat2", "rat3", "rat4", "rat5", "rat6", "low_confidence")
PER_RAT_COUNTS = {
  1: (56, 163, 2),
  2: (102, 108, 0),
  3: (148, 50, 0),
  4: (138, 92, 0),
  5: (63, 116, 3),
  6: (34, 62, 1),
}  # no/moderate/severe
NUM_LOW_CONFIDENCE = 157
LANDMARK_NAMES = (
  "left_eye",
  "right_eye",
  "left_ear",
  "right_ear",
  "nose",
  "left_whisker_pad",
  "right_whisker_pad",
)
AU_NAMES = ("orbital", "ear", "nose", "whisker")
BACKGROUNDS = ("cage", "bedding", "bench", "dark")
OCCLUDERS = ("none", "paw", "bars", "paw+bars")

_SS = 2  # supersampling factor
_RES = IMAGE_SIZE * _SS  # internal render resolution
_BASE_TILT = 28.0  # degrees, nose down, baked into the frontal pose


def pain_level_from_au(au_scores) -> int:
  """Rounded mean of the four AU scores, rounding halves up: (sum + 2) // 4."""
  return (int(sum(int(a) for a in au_scores)) + 2) // 4


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
  """Everything needed to render one image; fully determined by `plan`."""

  split: str
  filename: str
  rat_id: int
  pain_level: int  # -1 for low_confidence
  au_scores: tuple[int, int, int, int]
  head_pose: tuple[float, float, float]  # yaw, pitch, roll (degrees)
  seed: int  # textures, noise, occluder placement ...
  au_intensity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
  session: int = 0
  background: str = "dark"
  scale: float = 1.0  # relative head size in the frame
  offset: tuple[float, float] = (0.0, 0.0)  # head shift, fraction of the image
  light: tuple[float, float, float] = (0.0, 30.0, 1.0)  # azimuth, elevation (deg), gain
  jpeg_quality: int = 90
  blur: float = 0.0  # Gaussian blur radius at 256 px
  noise: float = 2.0  # sensor noise std (0..255 scale)
  occluder: str = "none"

  @property
  def true_pain_level(self) -> int:
    return pain_level_from_au(self.au_scores)


# --------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Rat:
  size: float  # head scale
  tint: tuple[float, float, float]
  ear_w: float
  ear_h: float
  ear_pink: tuple[float, float, float]
  eye_az: float  # degrees from the midline (eye spacing)
  eye_el: float
  eye_r: float
  eye_col: tuple[float, float, float]
  muzzle: float  # muzzle length factor
  yaw: tuple[float, float, bool]  # centre, spread, bimodal (+-centre)
  pitch: float  # mean pitch
  sessions: tuple[tuple[float, float, tuple[float, float, float], tuple[float, ...]], ...]
  # session: (light gain, light azimuth, light colour, background probabilities)


_RATS = {
  1: _Rat(
    1.00,
    (0.96, 0.94, 0.92),
    0.44,
    0.47,
    (0.93, 0.62, 0.63),
    36,
    14,
    0.165,
    (0.55, 0.05, 0.09),
    1.00,
    (0.0, 17.0, False),
    0.0,
    (
      (1.00, -25, (1.0, 0.98, 0.95), (0.2, 0.2, 0.2, 0.4)),
      (0.90, 20, (0.98, 0.98, 1.0), (0.1, 0.3, 0.4, 0.2)),
    ),
  ),
  2: _Rat(
    0.94,
    (0.97, 0.93, 0.90),
    0.40,
    0.50,
    (0.95, 0.58, 0.60),
    40,
    12,
    0.155,
    (0.50, 0.03, 0.07),
    1.08,
    (42.0, 17.0, True),
    -3.0,
    (
      (1.05, 10, (1.0, 0.96, 0.90), (0.4, 0.2, 0.1, 0.3)),
      (0.85, -30, (0.95, 0.97, 1.0), (0.2, 0.4, 0.2, 0.2)),
    ),
  ),
  3: _Rat(
    1.05,
    (0.95, 0.95, 0.94),
    0.47,
    0.44,
    (0.90, 0.66, 0.66),
    34,
    16,
    0.175,
    (0.60, 0.06, 0.10),
    0.94,
    (0.0, 30.0, False),
    4.0,
    (
      (0.95, 0, (1.0, 1.0, 1.0), (0.1, 0.3, 0.3, 0.3)),
      (1.10, 30, (1.0, 0.95, 0.88), (0.3, 0.1, 0.2, 0.4)),
    ),
  ),
  4: _Rat(
    0.98,
    (0.98, 0.92, 0.88),
    0.42,
    0.49,
    (0.96, 0.60, 0.58),
    38,
    13,
    0.16,
    (0.52, 0.04, 0.06),
    1.02,
    (25.0, 22.0, True),
    -2.0,
    (
      (0.92, -15, (1.0, 0.97, 0.93), (0.3, 0.3, 0.2, 0.2)),
      (1.00, 25, (0.96, 0.98, 1.0), (0.2, 0.2, 0.3, 0.3)),
    ),
  ),
  5: _Rat(
    1.02,
    (0.95, 0.93, 0.93),
    0.45,
    0.45,
    (0.92, 0.64, 0.66),
    37,
    15,
    0.17,
    (0.58, 0.05, 0.08),
    0.98,
    (-15.0, 30.0, False),
    2.0,
    (
      (1.08, 15, (1.0, 0.99, 0.97), (0.25, 0.25, 0.25, 0.25)),
      (0.88, -20, (0.97, 0.96, 1.0), (0.1, 0.2, 0.2, 0.5)),
    ),
  ),
  6: _Rat(
    0.91,
    (0.97, 0.95, 0.90),
    0.39,
    0.46,
    (0.94, 0.60, 0.62),
    39,
    13,
    0.15,
    (0.48, 0.03, 0.06),
    1.05,
    (35.0, 25.0, True),
    -1.0,
    (
      (1.00, -10, (1.0, 0.97, 0.92), (0.3, 0.2, 0.3, 0.2)),
      (0.95, 35, (0.97, 0.99, 1.0), (0.2, 0.3, 0.1, 0.4)),
    ),
  ),
}


# --------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------

_AU_PROPENSITY = np.array([1.35, 1.15, 0.9, 0.8])  # orbital is the most frequent cue
_ALL_AU = np.array(list(itertools.product(range(3), repeat=4)))
# Distribution of the AU sum given the label (labelled images) ...
_SUM_GIVEN_LABEL = {
  0: {0: 0.45, 1: 0.55},
  1: {2: 0.2, 3: 0.3, 4: 0.3, 5: 0.2},
  2: {6: 0.55, 7: 0.3, 8: 0.15},
}
# ... and for low-confidence images (means near a label boundary).
_SUM_LOW_CONF = {1: 0.25, 2: 0.4, 5: 0.15, 6: 0.2}


def _sample_au(rng: np.random.Generator, total: int) -> tuple[int, ...]:
  """AU scores with a given sum: correlated (low spread) but not identical."""
  cand = _ALL_AU[_ALL_AU.sum(1) == total]
  spread = ((cand - cand.mean(1, keepdims=True)) ** 2).sum(1)
  w = np.exp(-1.2 * spread) * np.prod(_AU_PROPENSITY[None] ** cand, axis=1)
  return tuple(int(a) for a in cand[rng.choice(len(cand), p=w / w.sum())])


def _choice(rng, probs: dict):
  keys = list(probs)
  p = np.array([probs[k] for k in keys], float)
  return keys[rng.choice(len(keys), p=p / p.sum())]


def _nuisance(rng: np.random.Generator, rat: int) -> dict:
  """Label-independent factors; always consumes the same number of variates."""
  r = rat_identity(rat)
  u = rng.random(12)
  g = rng.normal(size=8)
  session = int(u[0] < 0.5)
  gain, az, _, bg_p = r.sessions[session]
  sign = (1.0 if u[1] < 0.5 else -1.0) if r.yaw[2] else 1.0
  yaw = float(np.clip(sign * r.yaw[0] + r.yaw[1] * g[0], -75, 75))
  pitch = float(np.clip(r.pitch + 9.0 * g[1], -25, 25))
  roll = float(np.clip(7.0 * g[2], -20, 20))
  bg = BACKGROUNDS[int(np.searchsorted(np.cumsum(bg_p) / sum(bg_p), u[2]))]
  occ = OCCLUDERS[int(u[3] < 0.25) + 2 * int(u[4] < 0.15)]
  return dict(
    head_pose=(round(yaw, 3), round(pitch, 3), round(roll, 3)),
    session=session,
    background=bg,
    occluder=occ,
    scale=round(float(r.size * math.exp(0.06 * g[3])), 4),
    offset=(round(float(0.035 * g[4]), 4), round(float(0.035 * g[5]), 4)),
    light=(
      round(float(az + 25 * g[6]), 2),
      round(float(25 + 30 * u[5]), 2),
      round(float(gain * math.exp(0.08 * g[7])), 4),
    ),
    jpeg_quality=int(55 + 41 * u[6]),
    blur=round(float(0.3 + 1.0 * u[7]) if u[8] < 0.35 else 0.0, 3),
    noise=round(float(1.0 + 5.0 * u[9]), 3),
    seed=int(rng.integers(0, 2**62)),
  )


def _intensity(rng, au) -> tuple[float, ...]:
  return tuple(round(float(np.clip(a + rng.normal(0, 0.15), 0.0, 2.3)), 3) for a in au)


def _rat_specs(seed: int, rat: int, counts) -> list[ExampleSpec]:
  """The labelled examples of one rat: `counts` = (no pain, moderate, severe) images."""
  labels = np.repeat(np.arange(3), counts)
  rng_lab = np.random.default_rng([seed, rat, 1])  # label stream
  rng_nui = np.random.default_rng([seed, rat, 2])  # nuisance stream (never sees labels)
  rng_lab.shuffle(labels)
  specs = []
  for i, lab in enumerate(labels):
    au = _sample_au(rng_lab, _choice(rng_lab, _SUM_GIVEN_LABEL[int(lab)]))
    assert pain_level_from_au(au) == lab
    specs.append(
      ExampleSpec(
        split=f"rat{rat}",
        filename=f"rat{rat}/rat{rat}_{i:04d}.jpg",
        rat_id=rat,
        pain_level=int(lab),
        au_scores=au,
        au_intensity=_intensity(rng_lab, au),
        **_nuisance(rng_nui, rat),
      )
    )
  return specs


def _low_confidence_specs(rng_lab, rng_nui, count: int, num_rats: int) -> list[ExampleSpec]:
  """Unlabelled examples (AU means near a label boundary) of rats drawn from 1..num_rats."""
  specs = []
  for i in range(count):
    rat = int(rng_lab.integers(1, num_rats + 1))
    au = _sample_au(rng_lab, _choice(rng_lab, _SUM_LOW_CONF))
    specs.append(
      ExampleSpec(
        split="low_confidence",
        filename=f"low_confidence/lc_{i:04d}.jpg",
        rat_id=rat,
        pain_level=-1,
        au_scores=au,
        au_intensity=_intensity(rng_lab, au),
        **_nuisance(rng_nui, rat),
      )
    )
  return specs


@functools.lru_cache(maxsize=8)
def _full_plan(seed: int) -> tuple[ExampleSpec, ...]:
  specs = []
  for rat in range(1, 7):
    specs += _rat_specs(seed, rat, PER_RAT_COUNTS[rat])
  rng_lab = np.random.default_rng([seed, 7, 1])
  rng_nui = np.random.default_rng([seed, 7, 2])
  specs += _low_confidence_specs(rng_lab, rng_nui, NUM_LOW_CONFIDENCE, 6)
  return tuple(specs)


def plan(seed: int = 0, max_per_split: int | None = None) -> list[ExampleSpec]:
  """Deterministic list of all examples, in split order (rat1..rat6, low_confidence).

  `max_per_split=None` gives exactly PER_RAT_COUNTS and NUM_LOW_CONFIDENCE.
  `max_per_split=n` keeps at most n examples per split, taken from the full
  plan (same filenames, same images); in every rat split both binary classes
  are kept when n >= 2 (about half each, as available).
  """
  full = list(_full_plan(int(seed)))
  if max_per_split is None:
    return full
  n = int(max_per_split)
  keep = set()
  for split in SPLITS:
    items = [s for s in full if s.split == split]
    if split == "low_confidence" or n < 2:
      keep.update(s.filename for s in items[: max(n, 0)])
      continue
    neg = [s for s in items if s.pain_level == 0]
    pos = [s for s in items if s.pain_level > 0]
    n_neg = min(len(neg), max(1, n // 2))
    n_pos = min(len(pos), n - n_neg)
    n_neg = min(len(neg), n - n_pos)
    keep.update(s.filename for s in neg[:n_neg] + pos[:n_pos])
  return [s for s in full if s.filename in keep]


POOL_FIRST_RAT = 1001  # pretraining pool identities: never one of the twin's six or a lab twin's


def pool_plan(seed: int, num_rats: int, per_rat: int) -> list[ExampleSpec]:
  """A pretraining pool (issue #21): `per_rat` images of each of `num_rats` new identities
  (rats POOL_FIRST_RAT, POOL_FIRST_RAT + 1, ...; `rat_identity` draws them from the six's
  ranges), with the twin's nuisance factors (head pose, light, background, occluders, camera).

  The AU scores are drawn independently and uniformly (0/1/2 each) from a stream that nothing
  else reads, so no head pose, identity or other factor carries pain information; they are
  kept (`au_scores`) only to check that, and `pain_level` is -1 (never a target).
  """
  specs = []
  for rat in range(POOL_FIRST_RAT, POOL_FIRST_RAT + int(num_rats)):
    rng_au = np.random.default_rng([seed, rat, 11])
    rng_nui = np.random.default_rng([seed, rat, 12])
    for i in range(int(per_rat)):
      au = tuple(int(a) for a in rng_au.integers(0, 3, size=4))
      specs.append(
        ExampleSpec(
          split="pool",
          filename=f"pool/rat{rat}_{i:05d}.jpg",
          rat_id=rat,
          pain_level=-1,
          au_scores=au,
          au_intensity=_intensity(rng_au, au),
          **_nuisance(rng_nui, rat),
        )
      )
  return specs


def label_counts(rat: int, n: int) -> tuple[int, int, int]:
  """(no pain, moderate, severe) counts of `n` images of rat `rat` in `plan_rats`: the
  proportions of twin rat ((rat - 1) mod 6) + 1 (largest remainders), with at least one image
  of each binary class when n >= 2."""
  base = np.array(PER_RAT_COUNTS[(rat - 1) % 6 + 1], float)
  share = n * base / base.sum()
  counts = np.floor(share).astype(int)
  for i in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
    counts[i] += 1
  if n >= 2 and counts[0] == 0:
    counts[0], counts[int(np.argmax(counts))] = 1, counts[int(np.argmax(counts))] - 1
  if n >= 2 and counts[1:].sum() == 0:
    counts[1], counts[0] = 1, counts[0] - 1
  return tuple(int(c) for c in counts)


def plan_rats(
  seed: int = 0, num_rats: int = 12, per_rat: int = 40, num_unlabelled: int = 0
) -> list[ExampleSpec]:
  """A twin with `num_rats` rats of `per_rat` labelled images each (`label_counts`), plus
  `num_unlabelled` low-confidence images (split `low_confidence`, pain_level -1) of rats drawn
  at random; same generator, label rule and nuisance model as `plan`, in split order (rat1..,
  low_confidence). Deterministic in its arguments."""
  if num_rats < 1 or per_rat < 1 or num_unlabelled < 0:
    raise ValueError(
      f"plan_rats: num_rats={num_rats}, per_rat={per_rat} must be >= 1 and "
      f"num_unlabelled={num_unlabelled} >= 0"
    )
  specs = []
  for rat in range(1, num_rats + 1):
    specs += _rat_specs(seed, rat, label_counts(rat, per_rat))
  rng_lab = np.random.default_rng([seed, 0, 3])
  rng_nui = np.random.default_rng([seed, 0, 4])
  return specs + _low_confidence_specs(rng_lab, rng_nui, num_unlabelled, num_rats)


@functools.cache
def rat_identity(rat: int) -> _Rat:
  """The identity of rat `rat`: the twin's own for 1..6; beyond, drawn (from a stream of the
  rat number only) uniformly within the range of the six: head size, tints, ears, eyes,
  muzzle, pose (yaw centre, spread and bimodality; mean pitch); the sessions (lighting,
  backgrounds) of one of the six."""
  if rat in _RATS:
    return _RATS[rat]
  if rat < 1:
    raise ValueError(f"rat {rat}: rats are numbered from 1")
  rng = np.random.default_rng([20250, rat])
  six = list(_RATS.values())

  def between(values):
    return float(rng.uniform(min(values), max(values)))

  def colour(field):
    return tuple(between([getattr(r, field)[c] for r in six]) for c in range(3))

  return _Rat(
    size=between([r.size for r in six]),
    tint=colour("tint"),
    ear_w=between([r.ear_w for r in six]),
    ear_h=between([r.ear_h for r in six]),
    ear_pink=colour("ear_pink"),
    eye_az=between([r.eye_az for r in six]),
    eye_el=between([r.eye_el for r in six]),
    eye_r=between([r.eye_r for r in six]),
    eye_col=colour("eye_col"),
    muzzle=between([r.muzzle for r in six]),
    yaw=(
      between([r.yaw[0] for r in six]),
      between([r.yaw[1] for r in six]),
      bool(rng.random() < 0.5),
    ),
    pitch=between([r.pitch for r in six]),
    sessions=six[int(rng.integers(len(six)))].sessions,
  )


# --------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------


def _rx(a):
  c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
  return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
  c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
  c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def pose_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """Head-to-camera rotation (see module docstring for the conventions)."""
  return _rz(roll) @ _rx(-pitch) @ _ry(yaw) @ _rx(_BASE_TILT)


def _unit(v):
  v = np.asarray(v, float)
  return v / np.linalg.norm(v)


def _frame(normal, up):
  """Columns (side, up, normal) of an orthonormal frame."""
  n = _unit(normal)
  s = np.cross(up, n)
  s = s / np.linalg.norm(s)
  return np.stack([s, np.cross(n, s), n], axis=1)


def _surface(center, axes, radii, d):
  """Point and unit normal on an ellipsoid in local direction d (unit)."""
  d = _unit(d)
  radii = np.asarray(radii, float)
  p = center + axes @ (radii * d)
  n = _unit(axes @ (d / radii))
  return p, n


# Materials: colour, specular strength, specular exponent, textured (fur)
_MAT_FUR, _MAT_EYE, _MAT_LID, _MAT_EAR, _MAT_PINNA, _MAT_NOSE, _MAT_PAD, _MAT_BODY = range(8)


def _build_head(rat: _Rat, inten):
  """Ellipsoids, landmark points and whisker polylines in head coordinates."""
  o, e, n, w = (float(x) for x in inten)
  parts = []  # (center, axes, radii, material, landmark index or -1)
  lms = [None] * 7  # (point, indices of the parts that show it)
  eye3 = np.eye(3)

  cran_c = np.array([0.0, 0.12, -0.35])
  cran_r = np.array([0.95, 0.80, 1.05])
  parts.append((cran_c, eye3, cran_r, _MAT_FUR))
  parts.append((np.array([0.0, -1.05, -1.5]), eye3, np.array([1.3, 1.0, 1.35]), _MAT_BODY))
  # Cheeks: fill the face between cranium and muzzle.
  parts.append((np.array([0.0, -0.18, 0.05]), eye3, np.array([0.78, 0.58, 0.72]), _MAT_FUR))
  # Muzzle: tilted down a little; flattens (less bulge) and lengthens with `nose`.
  mz_axes = _frame([0, -0.22, 1.0], [0, 1, 0])
  mz_r = np.array(
    [0.50 * (1 - 0.12 * n), 0.42 * (1 - 0.17 * n), 0.78 * rat.muzzle * (1 + 0.13 * n)]
  )
  mz_c = np.array([0.0, -0.22, 0.42 + 0.06 * n])
  parts.append((mz_c, mz_axes, mz_r, _MAT_FUR))
  # Lower jaw / chin.
  parts.append((mz_c + np.array([0, -0.24, -0.05]), mz_axes, mz_r * [0.62, 0.42, 0.8], _MAT_FUR))
  # Nose tip.
  p, nn = _surface(mz_c, mz_axes, mz_r, [0, 0.05, 1])
  nose_axes = _frame(nn, [0, 1, 0])
  nose_r = np.array([0.15 * (1 - 0.1 * n), 0.10 * (1 - 0.15 * n), 0.07])
  parts.append((p - 0.02 * nn, nose_axes, nose_r, _MAT_NOSE))
  lms[4] = (p - 0.02 * nn + nn * nose_r[2], (len(parts) - 1,))
  nose_tip = p

  whiskers = []
  for side, (i_eye, i_ear, i_pad) in ((1.0, (0, 2, 5)), (-1.0, (1, 3, 6))):
    # Eye on the cranium; the aperture narrows towards a slit with `orbital`.
    d = [
      side * math.sin(math.radians(rat.eye_az)) * math.cos(math.radians(rat.eye_el)),
      math.sin(math.radians(rat.eye_el)),
      math.cos(math.radians(rat.eye_az)) * math.cos(math.radians(rat.eye_el)),
    ]
    p, nn = _surface(cran_c, eye3, cran_r, d)
    fr = _frame(nn, [0, 1, 0])
    re = rat.eye_r
    eye_r = np.array([re * (1 - 0.1 * o), re * max(0.1, 0.92 - 0.40 * o), 0.42 * re])
    lid_r = np.array([re * (1.1 + 0.3 * o), eye_r[1] * 1.12 + 0.02 + 0.02 * o, 0.33 * re])
    c_eye = p - 0.03 * nn
    parts.append((c_eye, fr, lid_r, _MAT_LID))
    parts.append((c_eye, fr, eye_r, _MAT_EYE))
    lms[i_eye] = (c_eye + nn * eye_r[2], (len(parts) - 2, len(parts) - 1))

    # Ear: narrows, turns outwards, tilts back and rotates outwards with `ear`.
    d = [side * 0.62, 0.78, -0.18]
    p, nn = _surface(cran_c, eye3, cran_r, d)
    turn = math.radians(22 + 30 * e)
    tilt = math.radians(8 + 32 * e)
    normal = np.array([side * math.sin(turn), 0.0, math.cos(turn)])
    normal = _rx(-math.degrees(tilt)) @ normal
    roll = math.radians(12 + 22 * e)
    up = np.array([side * math.sin(roll), math.cos(roll), 0.0])
    fr = _frame(normal, up)
    ew = rat.ear_w * (1 - 0.24 * e)
    eh = rat.ear_h * (1 + 0.06 * e)
    c_ear = p + fr[:, 1] * eh * 0.62 - nn * 0.05
    parts.append((c_ear, fr, np.array([ew, eh, 0.05]), _MAT_EAR))
    parts.append(
      (
        c_ear + fr[:, 2] * 0.035 - fr[:, 1] * 0.04 * eh,
        fr,
        np.array([0.76 * ew, 0.76 * eh, 0.04]),
        _MAT_PINNA,
      )
    )
    lms[i_ear] = (c_ear, (len(parts) - 2, len(parts) - 1))

    # Whisker pad on the muzzle: the bulge flattens with `nose`.
    p, nn = _surface(mz_c, mz_axes, mz_r, [side * 0.62, -0.28, 0.72])
    fr = _frame(nn, [0, 1, 0])
    pad_r = np.array([0.25, 0.21, 0.17 * (1 - 0.4 * n)])
    c_pad = p - 0.06 * nn
    parts.append((c_pad, fr, pad_r, _MAT_PAD))
    lms[i_pad] = (c_pad + nn * pad_r[2], (len(parts) - 1,))

    # Whiskers: pulled back, bunched and straightened with `whisker`.
    az0 = math.radians(28 - 38 * w)  # angle forward of the sideways direction
    spread = math.radians(20 * (1 - 0.38 * w))
    curl = 0.32 * (1 - 0.45 * w)
    for row in range(3):
      for col in range(3):
        a, b = (-0.45 + 0.4 * col), (-0.55 + 0.5 * row)
        root = c_pad + fr @ (pad_r * np.array([a * side, b, 0]))
        root = root + nn * pad_r[2] * math.sqrt(max(0.0, 1 - a * a - b * b))
        el = (1 - row) * spread + math.radians(-6)
        az = az0 + (col - 1) * spread * 0.35
        dvec = np.array(
          [side * math.cos(el) * math.cos(az), math.sin(el), math.cos(el) * math.sin(az)]
        )
        length = 1.0 + 0.12 * col - 0.1 * abs(row - 1)
        t = np.linspace(0, 1, 6)[:, None]
        bend = np.array([0.0, -1.0, -0.4])
        pts = root + length * (t * dvec + curl * t * t * bend)
        whiskers.append(pts)

  # Philtrum / mouth line below the nose.
  mouth = [
    nose_tip + np.array([0, -0.08, 0.0]),
    nose_tip + np.array([0, -0.17, -0.04]),
    nose_tip + np.array([0.09, -0.22, -0.09]),
    nose_tip + np.array([-0.09, -0.22, -0.09]),
  ]
  return parts, lms, whiskers, mouth


# --------------------------------------------------------------------------
# Textures and backgrounds
# --------------------------------------------------------------------------


def _resize(a: np.ndarray, size: int, resample=Image.BILINEAR) -> np.ndarray:
  return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((size, size), resample))


@functools.lru_cache(maxsize=1)
def _fur_texture() -> np.ndarray:
  """Fixed streaky fur texture (multiplicative, mean 1), 2x the render size."""
  rng = np.random.default_rng(20250)
  size = 2 * _RES
  noise = rng.normal(size=(size, size)).astype(np.float32)
  acc = np.zeros_like(noise)
  for k in range(7):
    acc += np.roll(noise, (2 * k, k), axis=(0, 1))
  acc /= acc.std()
  low = _resize(rng.normal(size=(40, 40)), size)
  tex = 1.0 + 0.05 * acc + 0.012 * low / low.std()
  return tex.astype(np.float32)


def _low_noise(rng, cells: int, size: int) -> np.ndarray:
  x = _resize(rng.normal(size=(cells, cells)), size)
  return x / (x.std() + 1e-6)


def _background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  ang = rng.uniform(0, 2 * np.pi)
  grad = (np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5))[..., None]
  if kind == "cage":
    base = rng.uniform(0.08, 0.3)
    col = np.array([base, base * rng.uniform(0.95, 1.05), base * rng.uniform(1.0, 1.2)])
    img = col * (1 + 0.8 * grad) + 0.03 * _low_noise(rng, 6, size)[..., None]
    th = rng.normal(0, 0.08)
    period = rng.uniform(0.07, 0.13)
    width = rng.uniform(0.012, 0.025)
    phase = rng.uniform(0, period)
    coord = (xx * math.cos(th) + yy * math.sin(th) + phase) % period
    prof = np.clip(1 - np.abs(coord - width) / width, 0, 1)
    metal = rng.uniform(0.55, 0.8)
    img = img * (1 - prof[..., None]) + (metal * (0.75 + 0.25 * prof))[..., None] * prof[..., None]
    if rng.random() < 0.5:  # horizontal cross bar
      yb = rng.uniform(0.1, 0.9)
      hprof = np.clip(1 - np.abs(yy - yb) / 0.015, 0, 1)[..., None]
      img = img * (1 - hprof) + metal * hprof
  elif kind == "bedding":
    col = np.array([rng.uniform(0.65, 0.85), rng.uniform(0.52, 0.68), rng.uniform(0.3, 0.45)])
    chips = _resize(rng.random((36, 36)), size, Image.NEAREST)
    chips2 = _resize(rng.random((90, 90)), size, Image.NEAREST)
    shade = 0.55 + 0.3 * chips + 0.25 * chips2 + 0.08 * _low_noise(rng, 5, size)
    img = col * shade[..., None] * (1 + 0.4 * grad)
  elif kind == "bench":
    c0 = rng.uniform(0.6, 0.9)
    col = np.array([c0, c0 * rng.uniform(0.95, 1.02), c0 * rng.uniform(0.9, 1.05)])
    img = col * (1 + 0.5 * grad) + 0.03 * _low_noise(rng, 4, size)[..., None]
    edge = rng.uniform(0.55, 0.95)
    lower = (yy > edge + 0.05 * (xx - 0.5) * rng.normal())[..., None]
    img = np.where(lower, img * rng.uniform(0.45, 0.8), img)
  else:  # dark plastic with a soft highlight
    base = rng.uniform(0.1, 0.32)
    img = np.full((size, size, 3), base, np.float32) * (1 + 0.6 * grad)
    hx, hy = rng.uniform(0, 1, 2)
    blob = np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * rng.uniform(0.05, 0.2) ** 2))
    img = (
      img + rng.uniform(0.1, 0.45) * blob[..., None] + 0.02 * _low_noise(rng, 8, size)[..., None]
    )
  return np.clip(img, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _rasterize(parts, R, scale, cx, cy, size):
  """z-buffer of ellipsoids (orthographic). Returns zbuf, part index, normals (unnormalised)."""
  zbuf = np.full((size, size), -np.inf, np.float32)
  ibuf = np.full((size, size), -1, np.int16)
  nbuf = np.zeros((size, size, 3), np.float32)
  for k, (c, axes, radii, _) in enumerate(parts):
    c = R @ c
    A = R @ axes
    M = A * radii
    Q = ((A / radii**2) @ A.T).tolist()  # python floats keep the arrays float32
    ext = np.sqrt((M**2).sum(1))
    u0 = max(int(math.floor(cx + scale * (c[0] - ext[0]))), 0)
    u1 = min(int(math.ceil(cx + scale * (c[0] + ext[0]))) + 1, size)
    v0 = max(int(math.floor(cy - scale * (c[1] + ext[1]))), 0)
    v1 = min(int(math.ceil(cy - scale * (c[1] - ext[1]))) + 1, size)
    if u0 >= u1 or v0 >= v1:
      continue
    c0, c1, c2 = (float(x) for x in c)
    dx = ((np.arange(u0, u1, dtype=np.float32) + (0.5 - cx)) * (1.0 / scale) - c0)[None, :]
    dy = ((np.arange(v0, v1, dtype=np.float32) + (0.5 - cy)) * (-1.0 / scale) - c1)[:, None]
    a = Q[2][2]
    b = (2 * Q[0][2]) * dx + (2 * Q[1][2]) * dy
    cc = (Q[0][0] * dx) * dx + ((2 * Q[0][1]) * dx) * dy + (Q[1][1] * dy) * dy - 1.0
    disc = b * b - (4 * a) * cc
    hit = disc >= 0
    if not hit.any():
      continue
    dz = (np.sqrt(np.maximum(disc, 0)) - b) * (0.5 / a)
    z = dz + c2
    sub = zbuf[v0:v1, u0:u1]
    upd = hit & (z > sub)
    sub[upd] = z[upd]
    ibuf[v0:v1, u0:u1][upd] = k
    ddx = np.broadcast_to(dx, upd.shape)[upd]
    ddy = np.broadcast_to(dy, upd.shape)[upd]
    ddz = dz[upd]
    nsub = nbuf[v0:v1, u0:u1]
    nsub[upd] = np.stack(
      [
        Q[0][0] * ddx + Q[0][1] * ddy + Q[0][2] * ddz,
        Q[1][0] * ddx + Q[1][1] * ddy + Q[1][2] * ddz,
        Q[2][0] * ddx + Q[2][1] * ddy + Q[2][2] * ddz,
      ],
      axis=1,
    )
  return zbuf, ibuf, nbuf


def _materials(rat: _Rat):
  fur = np.array(rat.tint)
  return (
    np.array(
      [
        fur,  # fur
        rat.eye_col,  # eye
        fur * np.array([0.86, 0.72, 0.73]),  # lid rim
        fur * np.array([1.0, 0.9, 0.88]),  # ear back
        rat.ear_pink,  # pinna
        (0.92, 0.56, 0.6),  # nose
        fur * np.array([0.99, 0.93, 0.92]),  # whisker pad
        fur * 0.97,  # body
      ],
      np.float32,
    ),
    np.array([0.05, 0.9, 0.05, 0.1, 0.15, 0.35, 0.05, 0.05], np.float32),
    np.array([8, 250, 8, 10, 12, 40, 8, 8], np.float32),
  )


def _project(R, pts, scale, cx, cy):
  q = np.atleast_2d(pts) @ R.T
  return cx + scale * q[:, 0], cy - scale * q[:, 1], q[:, 2]


def _zvisible(zbuf, u, v, z, tol):
  size = zbuf.shape[0]
  ui, vi = int(math.floor(u)), int(math.floor(v))
  if not (0 <= ui < size and 0 <= vi < size):
    return False
  return bool(zbuf[vi, ui] <= z + tol)


def _draw_paw(draw: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, rng, size, fur):
  x = rng.uniform(0.15, 0.85) * size
  y = rng.uniform(0.88, 1.0) * size
  rw, rh = rng.uniform(0.09, 0.13) * size, rng.uniform(0.07, 0.1) * size
  furc = tuple(int(255 * c * k * rng.uniform(0.88, 0.96)) for c, k in zip(fur, (1.0, 0.86, 0.84)))
  pink = (int(rng.uniform(220, 245)), int(rng.uniform(140, 170)), int(rng.uniform(140, 165)))
  for d in (draw, mask):
    d.ellipse([x - rw, y - rh, x + rw, y + rh * 2], fill=furc if d is draw else 255)
  for t in range(4):
    ang = math.radians(-140 + t * 33 + rng.normal(0, 4))
    tx, ty = x + 1.05 * rw * math.cos(ang), y + 1.15 * rh * math.sin(ang)
    r = 0.024 * size
    for d in (draw, mask):
      d.ellipse([tx - r, ty - 1.4 * r, tx + r, ty + 1.4 * r], fill=pink if d is draw else 255)


def _draw_bars(img: Image.Image, rng, size):
  layer = Image.new("L", (size, size), 0)
  d = ImageDraw.Draw(layer)
  n = int(rng.integers(1, 4))
  th = rng.normal(0, 0.1)
  x0 = rng.uniform(0, size)
  gap = rng.uniform(0.18, 0.35) * size
  width = int(rng.uniform(0.018, 0.035) * size)
  for i in range(n):
    x = (x0 + i * gap) % size
    d.line(
      [(x - size * math.tan(th), -5), (x + size * math.tan(th), size + 5)], fill=235, width=width
    )
  layer = layer.filter(ImageFilter.GaussianBlur(1.5))
  metal = int(rng.uniform(110, 200))
  img.paste(Image.new("RGB", (size, size), (metal, metal, int(metal * 1.03))), (0, 0), layer)


def render(spec: ExampleSpec) -> dict:
  """Renders one example (see module docstring); depends only on `spec`."""
  rng = np.random.default_rng(spec.seed)
  rat = rat_identity(spec.rat_id)
  size = _RES
  scale = size * 0.40 * spec.scale
  cx = size * (0.5 + spec.offset[0])
  cy = size * (0.53 + spec.offset[1])
  R = pose_matrix(*spec.head_pose)
  parts, lms, whiskers, mouth = _build_head(rat, spec.au_intensity)

  zbuf, ibuf, nrm = _rasterize(parts, R, scale, cx, cy, size)
  cols, spec_k, spec_p = _materials(rat)
  part_mat = np.array([p[3] for p in parts], np.int16)

  # Lighting (session gain/colour, per-image direction).
  az, el, gain = spec.light
  light_col = np.array(rat.sessions[spec.session][2], np.float32)
  ld = np.array(
    [
      math.sin(math.radians(az)) * math.cos(math.radians(el)),
      math.sin(math.radians(el)),
      math.cos(math.radians(az)) * math.cos(math.radians(el)),
    ],
    np.float32,
  )
  half = _unit(ld + np.array([0, 0, 1.0])).astype(np.float32)

  fg = ibuf >= 0
  idx = np.flatnonzero(fg)
  mat = part_mat[ibuf.reshape(-1)[idx]]
  nf = nrm.reshape(-1, 3)[idx]
  nf /= np.sqrt((nf**2).sum(-1, keepdims=True)) + 1e-8
  # Smooth the creases where fur ellipsoids meet: blur the unit normals of the
  # fur parts in screen space (8-bit, with PIL), then renormalise.
  furry_n = np.isin(mat, (_MAT_FUR, _MAT_BODY, _MAT_PAD))
  enc = np.full((size * size, 3), 128, np.uint8)
  enc[idx[furry_n]] = (nf[furry_n] * 127.0 + 128.0).astype(np.uint8)
  enc = Image.fromarray(enc.reshape(size, size, 3)).filter(ImageFilter.BoxBlur(size // 40))
  nf[furry_n] = np.asarray(enc, np.float32).reshape(-1, 3)[idx[furry_n]] - 128.0
  nf /= np.sqrt((nf**2).sum(-1, keepdims=True)) + 1e-8
  # (explicit dot products: a BLAS matvec here may spawn threads that fight the workers)
  ndl = np.clip(nf[:, 0] * ld[0] + nf[:, 1] * ld[1] + nf[:, 2] * ld[2], 0, 1)
  shade = (0.7 + 0.36 * ndl) * (0.84 + 0.16 * np.sqrt(np.clip(nf[:, 2], 0, 1)))
  tex = _fur_texture()
  ox, oy = rng.integers(0, tex.shape[0] - size, 2)
  furry = (mat != _MAT_EYE) & (mat != _MAT_NOSE)
  t = tex[oy : oy + size, ox : ox + size].reshape(-1)[idx[furry]]
  shade[furry] *= t
  colr = cols[mat] * shade[:, None]
  shiny = ~furry
  ns = nf[shiny]
  ndh = np.clip(ns[:, 0] * half[0] + ns[:, 1] * half[1] + ns[:, 2] * half[2], 0, 1)
  colr[shiny] += (spec_k[mat[shiny]] * ndh ** spec_p[mat[shiny]])[:, None]

  # Background (drawn at the output size, upsampled) with a soft contact shadow.
  bg = _background(rng, spec.background, IMAGE_SIZE)
  sil = (
    Image.fromarray((fg * 255).astype(np.uint8))
    .reduce(_SS)
    .filter(ImageFilter.BoxBlur(IMAGE_SIZE // 40))
  )
  bg *= 1 - 0.35 * np.asarray(sil, np.float32)[..., None] / 255.0
  bg = Image.fromarray((bg * 255 + 0.5).astype(np.uint8)).resize((size, size), Image.BILINEAR)
  img = np.asarray(bg, np.float32).reshape(-1, 3).copy()
  img[idx] = colr * 255.0
  img *= gain * light_col
  np.clip(img, 0, 255, out=img)
  pil = Image.fromarray(img.reshape(size, size, 3).astype(np.uint8))

  # Whiskers and mouth line (drawn where their roots are visible).
  wmask = Image.new("L", (size, size), 0)
  wd = ImageDraw.Draw(wmask)
  for pts in whiskers:
    u, v, z = _project(R, pts, scale, cx, cy)
    if not _zvisible(zbuf, u[0], v[0], z[0], 0.05):
      continue
    for j in range(len(u) - 1):
      uj, vj = int(math.floor(u[j + 1])), int(math.floor(v[j + 1]))
      if 0 <= uj < size and 0 <= vj < size and zbuf[vj, uj] > z[j + 1] + 0.05:
        break  # passes behind the head
      wd.line([(u[j], v[j]), (u[j + 1], v[j + 1])], fill=int(220 - 30 * j), width=2)
    r = 2.2
    wd.ellipse([u[0] - r, v[0] - r, u[0] + r, v[0] + r], fill=200)
  box = wmask.getbbox()
  if box:
    wcol = Image.new(
      "RGB",
      (box[2] - box[0], box[3] - box[1]),
      tuple(int(min(255, c * gain)) for c in (95, 80, 80)),
    )
    pil.paste(wcol, box[:2], wmask.crop(box).point(lambda x: int(x * 0.75)))
  draw = ImageDraw.Draw(pil)
  u, v, z = _project(R, np.array(mouth), scale, cx, cy)
  mcol = tuple(int(c * min(gain, 1.0)) for c in (150, 95, 100))
  if all(_zvisible(zbuf, u[i], v[i], z[i], 0.08) for i in range(2)):
    draw.line([(u[0], v[0]), (u[1], v[1])], fill=mcol, width=3)
    for i in (2, 3):
      if _zvisible(zbuf, u[i], v[i], z[i], 0.1):
        draw.line([(u[1], v[1]), (u[i], v[i])], fill=mcol, width=3)

  # Occluders.
  occ = Image.new("L", (size, size), 0)
  if "paw" in spec.occluder:
    _draw_paw(draw, ImageDraw.Draw(occ), rng, size, rat.tint)
  if "bars" in spec.occluder:
    _draw_bars(pil, rng, size)
  occ_mask = np.asarray(occ) > 127

  # Landmarks.
  landmarks = np.full((7, 2), np.nan, np.float32)
  visible = np.zeros((7,), np.bool_)
  # A landmark is visible when its own part is the front-most surface at its
  # pixel (not hidden by the head or another part), inside the image and not
  # under a paw.
  for i, (pt, own) in enumerate(lms):
    u, v, _ = _project(R, pt, scale, cx, cy)
    u, v = float(u[0]), float(v[0])
    ui, vi = int(math.floor(u)), int(math.floor(v))
    if 0 <= ui < size and 0 <= vi < size and ibuf[vi, ui] in own and not occ_mask[vi, ui]:
      visible[i] = True
      landmarks[i] = (u / size, v / size)

  # Camera: downsample, blur, sensor noise, JPEG.
  pil = pil.reduce(_SS)
  if spec.blur > 0:
    pil = pil.filter(ImageFilter.GaussianBlur(spec.blur))
  arr = np.asarray(pil, np.float32)
  arr = arr + rng.normal(0, spec.noise, arr.shape).astype(np.float32)
  pil = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
  buf = io.BytesIO()
  pil.save(buf, format="JPEG", quality=int(spec.jpeg_quality))

  return {
    "image": buf.getvalue(),
    "filename": spec.filename,
    "rat_id": int(spec.rat_id),
    "pain_level": int(spec.pain_level),
    "pain": -1 if spec.pain_level < 0 else int(spec.pain_level > 0),
    "au_scores": np.asarray(spec.au_scores, np.int64),
    "head_pose": np.asarray(spec.head_pose, np.float32),
    "landmarks": landmarks,
    "landmark_visible": visible,
  }


def safe_mp_context(method: str | None = None) -> multiprocessing.context.BaseContext:
  """The multiprocessing context used to render in worker processes.

  The default is `forkserver` where the platform has it, else `spawn`: both
  start workers from a fresh process. The platform default on Linux before
  Python 3.14, `fork`, copies the calling process with its threads; JAX (also
  TensorFlow, grain) runs threads, so a fork can deadlock (JAX warns
  "os.fork() was called ..."). Pass `method` to force one. As with any
  non-fork start method, the workers import the main script, so a script that
  builds at import time needs the `if __name__ == "__main__":` guard.
  """
  if method is None:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
  return multiprocessing.get_context(method)


def render_many(
  specs, num_workers: int | None = None, *, mp_context: str | None = None, chunksize: int = 4
) -> Iterator[dict]:
  """Yields `render(spec)` for every spec, in order.

  Rendering runs in `num_workers` processes (None -> os.cpu_count(); 0 or 1
  -> in this process) started with `safe_mp_context(mp_context)`. Each image
  depends only on its spec, so the output is byte-identical whatever the
  number of workers or the start method.
  """
  specs = list(specs)
  workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
  if workers <= 1 or len(specs) < 2:
    yield from map(render, specs)
    return
  with concurrent.futures.ProcessPoolExecutor(
    min(workers, len(specs)), mp_context=safe_mp_context(mp_context)
  ) as pool:
    yield from pool.map(render, specs, chunksize=chunksize)


def generate(
  seed: int = 0,
  max_per_split: int | None = None,
  num_workers: int | None = None,
  *,
  mp_context: str | None = None,
) -> Iterator[tuple[str, str, dict]]:
  """Yields (split, key, example) for every planned example, in plan order.

  The key is the (unique) filename. Rendering runs in `num_workers` processes
  (None -> os.cpu_count(); 0 or 1 -> in this process), see `render_many`.
  Each example depends only on its spec, so the output is byte-identical
  whatever `num_workers`. `mp_context` picks the multiprocessing start method
  (default: forkserver or spawn, safe in a process running JAX).
  """
  specs = plan(seed, max_per_split)
  for s, ex in zip(specs, render_many(specs, num_workers, mp_context=mp_context)):
    yield s.split, s.filename, ex
