"""A made-up lab directory (labels.csv + images/) of N rats drawn by the synthetic twin.

  python -m tfds_ratspain write-lab-dir --out=DIR --animals=12 [--per_animal=40] [--scale=rgs]
      [--seed=0] [--unlabelled=N] [--image_size=256] [--overwrite]

It stands in for a lab's own scored images in the leave-one-animal-out workflow
(README, "Your own animals"): the faces are the twin's (`synthetic.plan_rats`,
same generator, label rule and nuisance model as ratspain/synthetic), written in
the layout the `grimace` builder reads (tfds_ratspain/grimace/README.md):

* `images/<id>/<id>_<i>.jpg` (unlabelled faces `<id>_unscored_<i>.jpg`), animal
  ids `R01`, `R02`, ... (as many digits as
  needed, at least two); `--image_size` below 256 downsizes the images (faster
  tests), JPEG quality as rendered.
* `labels.csv`: filename, animal_id, pain_level, the AU columns of the scale,
  session, condition. The AU columns hold the twin's scores; in about a quarter
  of the rows one AU is not scorable (written `-1` or left empty). About a
  third of the rows leave `pain_level` empty, so that the builder derives it
  from the AU scores (rounded mean, halves up); only rows whose written AU
  scores give the rendered label do (the label is never changed). `session` is
  `day1`/`day2` (the twin's lighting session), `condition` `post-op` for faces
  in pain and `baseline` or `post-op` (about 70/30) for the others.
* `--unlabelled` more faces (default: as many as animals; the twin's
  low-confidence faces of rats drawn at random) without pain_level and AU
  scores: the builder's `unlabelled` split, never trained on nor scored.

Scales: `rgs` writes the twin's four RGS action units. `mgs` maps them onto the
five MGS columns: au_orbital, au_nose, au_ear and au_whisker are the twin's,
and au_cheek copies au_nose (the twin draws no cheek; its muzzle flattening is
the nearest cue). A rat rendered as a mouse: for trying the mgs path only.

The directory is written into a temporary sibling and renamed into place when
complete, so `--out` is either the whole directory or absent; an existing
non-empty `--out` is refused unless `--overwrite` (then replaced). It gets the
mode of a folder made by mkdir (0o777 less the umask), not the temporary's 0o700.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from painseeker_jax.scales import SCALES
from tfds_ratspain.grimace.manual import label_from_aus
from tfds_ratspain.ratspain import synthetic

# The twin's AUs (synthetic.AU_NAMES order) behind each column of a scale.
TWIN_AU = {
  "rgs": {"au_orbital": 0, "au_ear": 1, "au_nose": 2, "au_whisker": 3},
  "mgs": {"au_orbital": 0, "au_nose": 2, "au_cheek": 2, "au_ear": 1, "au_whisker": 3},
}
LEVEL_BLANK_RATE = 1 / 3  # rows whose pain_level is left to the AU scores (when they agree)
AU_HIDDEN_RATE = 0.25  # rows with one AU not scorable
POST_OP_RATE = 0.3  # no-pain faces recorded after surgery


def animal_id(rat: int, num_animals: int) -> str:
  """`R01`, `R02`, ...: zero-padded to the digits of `num_animals` (at least two)."""
  return f"R{rat:0{max(2, len(str(num_animals)))}d}"


def _row(spec: synthetic.ExampleSpec, scale: str, num_animals: int) -> dict:
  """The labels.csv row of a twin face (see the module docstring); random choices from a
  stream of the spec's own seed, so a row depends only on its spec."""
  u = np.random.default_rng([spec.seed, 4711]).random(5)
  columns = list(SCALES[scale])
  aus = [spec.au_scores[TWIN_AU[scale][c]] for c in columns]
  ident = animal_id(spec.rat_id, num_animals)
  number = os.path.splitext(spec.filename)[0].rsplit("_", 1)[1]
  kind = "unscored_" if spec.pain_level < 0 else ""
  row = {
    "filename": f"{ident}/{ident}_{kind}{number}.jpg",
    "animal_id": ident,
    "pain_level": "",
    "session": f"day{spec.session + 1}",
    "condition": "post-op" if spec.pain_level > 0 or u[4] < POST_OP_RATE else "baseline",
  }
  if spec.pain_level < 0:  # unlabelled: neither a pain level nor AU scores
    return dict(row, **{c: "" for c in columns})
  written = [str(a) for a in aus]
  if u[1] < AU_HIDDEN_RATE:
    written[int(u[2] * len(columns))] = "-1" if u[3] < 0.5 else ""
  known = [int(a) if a else -1 for a in written]
  if not (u[0] < LEVEL_BLANK_RATE and label_from_aus(known) == spec.pain_level):
    row["pain_level"] = str(spec.pain_level)
  return dict(row, **dict(zip(columns, written)))


def _image(example: dict, image_size: int, quality: int) -> bytes:
  if image_size == synthetic.IMAGE_SIZE:
    return example["image"]
  img = Image.open(io.BytesIO(example["image"])).convert("RGB")
  img = img.resize((image_size, image_size), Image.LANCZOS)
  buf = io.BytesIO()
  img.save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def _check_out(out: str, overwrite: bool) -> None:
  if os.path.lexists(out) and not os.path.isdir(out):
    raise FileExistsError(f"--out {out} exists and is not a directory; choose another --out")
  if os.path.isdir(out) and os.listdir(out) and not overwrite:
    raise FileExistsError(
      f"--out {out} exists and is not empty; choose another --out or pass --overwrite "
      "(which replaces it)"
    )


def write(
  out: str,
  animals: int,
  per_animal: int = 40,
  scale: str = "rgs",
  seed: int = 0,
  unlabelled: int | None = None,
  image_size: int = synthetic.IMAGE_SIZE,
  overwrite: bool = False,
  num_workers: int | None = None,
) -> dict:
  """Writes the lab directory `out` (see the module docstring); returns a summary: `out`,
  `animals` (the ids), `labelled`, `unlabelled` (image counts) and `scale`.

  ValueError for a bad argument, FileExistsError for an existing non-empty `out` without
  `overwrite`; nothing is written then. `num_workers`: rendering processes (None: one per
  CPU; 0 or 1: this process)."""
  if scale not in TWIN_AU:
    raise ValueError(f"--scale={scale!r}; use {' or '.join(TWIN_AU)}")
  unlabelled = animals if unlabelled is None else unlabelled
  if animals < 2 or per_animal < 1 or unlabelled < 0:
    raise ValueError(
      f"--animals={animals} (>= 2: leave-one-animal-out needs two), --per_animal={per_animal} "
      f"(>= 1), --unlabelled={unlabelled} (>= 0)"
    )
  if not 32 <= image_size <= synthetic.IMAGE_SIZE:
    raise ValueError(f"--image_size={image_size}; use 32..{synthetic.IMAGE_SIZE}")
  out = os.path.abspath(out)
  _check_out(out, overwrite)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  specs = synthetic.plan_rats(seed, animals, per_animal, unlabelled)
  rows = [_row(s, scale, animals) for s in specs]
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp", dir=parent)
  try:
    # mkdtemp makes it 0o700; --out gets the mode os.makedirs would give it (umask applied).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    for row, example in zip(rows, synthetic.render_many(specs, num_workers)):
      path = os.path.join(tmp, "images", *row["filename"].split("/"))
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(_image(example, image_size, 90))
    fields = ["filename", "animal_id", "pain_level", *SCALES[scale], "session", "condition"]
    with open(os.path.join(tmp, "labels.csv"), "w", encoding="utf-8", newline="") as f:
      w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
      w.writeheader()
      w.writerows(rows)
    _check_out(out, overwrite)  # again: another process may have written it meanwhile
    if os.path.isdir(out):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old", dir=parent)
      os.replace(out, os.path.join(old, "dir"))
      os.replace(tmp, out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return {
    "out": out,
    "animals": [animal_id(k, animals) for k in range(1, animals + 1)],
    "labelled": sum(s.pain_level >= 0 for s in specs),
    "unlabelled": unlabelled,
    "scale": scale,
  }
