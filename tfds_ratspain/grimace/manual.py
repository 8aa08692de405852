"""Reads and validates a lab's grimace-scored manual directory (no TensorFlow).

Layout: `labels.csv` at the top of the manual directory and the images under
`images/` (sub-folders allowed); see `LAYOUT_HELP`. `scan(manual_dir, scale)`
checks every row and every image *before* anything is written and returns one
`Record` per row. Every error is a ManualDataError (the RatsPain reader's
class) naming the file, CSV line (1-based, the header is line 1) or column,
and saying what to do.

Rules:
  * Label: `pain_level` when given; else the rounded mean of the known AU
    scores, halves rounded UP (`label_from_aus`: mean 0.5 -> 1, 1.5 -> 2, as in
    RatsPain's rounded mean, not Python's round-half-even); else the row is
    unlabelled (split `unlabelled`, pain_level -1).
  * One split per animal, `animal_<id>` with every character of the id outside
    [A-Za-z0-9] replaced by `_` (`split_name`). Two ids whose split names are
    equal, ignoring case (split names become file names, and some file systems
    ignore case), are refused. Every animal needs a labelled image (it is a
    test fold of leave-one-animal-out), and at least two animals are needed.
  * A `filename` may not leave images/: no `..` out of it, no absolute path,
    and its real path (symbolic links resolved) must lie inside the real path
    of images/, itself inside the manual directory.
  * Each file once (by real path) and each image content once (by the bytes of
    its RGB JPEG): a duplicate names both lines.
  * Images follow the RatsPain reader's rules (`manual.load_rgb_jpeg`): JPEG,
    PNG, BMP, TIFF or WebP, at most MAX_IMAGE_PIXELS pixels, stored as RGB JPEG.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re

from painseeker_jax.scales import SCALES  # noqa: F401  (re-exported: the scales' AU columns)
from tfds_ratspain.ratspain import manual
from tfds_ratspain.ratspain.manual import IMAGE_EXTENSIONS, ManualDataError, load_rgb_jpeg

LEVEL_NAMES = manual.LEVEL_NAMES
REQUIRED_COLUMNS = ("filename", "animal_id")
TEXT_COLUMNS = ("session", "condition")
OPTIONAL_COLUMNS = ("pain_level",) + TEXT_COLUMNS
UNLABELLED_SPLIT = "unlabelled"
SPLIT_PREFIX = "animal_"
# Longest animal id: its split name goes into file names (at most 255 bytes).
MAX_ANIMAL_ID_LENGTH = 64
_NOT_WORD = re.compile(r"[^A-Za-z0-9]")

LAYOUT_HELP = """\
Layout of a grimace manual directory:

  labels.csv     one row per image, header first, e.g. (scale rgs):
                   filename,animal_id,pain_level,au_orbital,au_ear,au_nose,au_whisker,session
                   M12/day1_001.jpg,M12,0,0,0,0,0,baseline
                   M12/day2_004.png,M12,,1,2,1,,post-op
                   rat-3/a.jpg,rat-3,severe,,,,,post-op
                   rat-3/b.jpg,rat-3,,,,,,post-op
  images/        the images; `filename` is relative to images/ (sub-folders allowed)

Columns: filename and animal_id (any non-empty text; at least two animals, each
with a labelled image) are required. Optional: pain_level (0/1/2 or
no_pain/moderate/severe), the action-unit columns of the scale (rgs: au_orbital,
au_ear, au_nose, au_whisker; mgs: au_orbital, au_nose, au_cheek, au_ear,
au_whisker; each 0, 1, 2, or -1/empty when not scorable), session and condition
(free text). A row without pain_level is labelled with the mean of its known AU
scores rounded half up (0.5 -> 1, 1.5 -> 2); a row with neither goes to the
`unlabelled` split. labels.csv is comma-separated (not ';' or tabs), names each
column once, and each row has exactly as many fields as the header (rows of only
commas, as spreadsheets leave at the end, are skipped). Images
are JPEG, PNG, BMP, TIFF or WebP and must lie inside images/ (no `..`, absolute
paths or symbolic links leading out).
"""


@dataclasses.dataclass(frozen=True)
class Record:
  """One row of labels.csv, validated."""

  split: str  # animal_<sanitized id> or unlabelled
  filename: str  # path relative to images/, '/'-separated, normalized
  path: str  # path on disk
  line: int  # line of labels.csv (header = 1)
  animal_id: str  # as written in the CSV (stripped)
  pain_level: int  # 0, 1, 2 or -1 (unlabelled)
  au_scores: tuple[int, ...]  # one per AU of the scale, 0..2 or -1 (not scorable)
  session: str
  condition: str


def _error(where: str, problem: str) -> ManualDataError:
  return ManualDataError(f"{where}: {problem}\n\n{LAYOUT_HELP}")


def check_scale(scale: str) -> tuple[str, ...]:
  """The AU columns of `scale`; ValueError for an unknown scale."""
  if scale not in SCALES:
    raise ValueError(f"unknown grimace scale {scale!r}; choose one of {', '.join(SCALES)}")
  return SCALES[scale]


def label_from_aus(au_scores) -> int:
  """Rounded mean of the known (>= 0) AU scores, halves rounded up; -1 if none is known.

  Exact integer arithmetic: floor(sum / n + 1/2) = (2 * sum + n) // (2 * n),
  e.g. (1, 0) -> 1 (mean 0.5), (2, 1) -> 2 (1.5), (1, 0, 0) -> 0, (2, 1, 1) -> 1.
  With four known scores this is RatsPain's rule `(sum + 2) // 4`.
  """
  known = [int(a) for a in au_scores if int(a) >= 0]
  if not known:
    return -1
  return (2 * sum(known) + len(known)) // (2 * len(known))


def split_name(animal_id: str) -> str:
  """`animal_` + the id with every character outside [A-Za-z0-9] replaced by `_`."""
  return SPLIT_PREFIX + _NOT_WORD.sub("_", animal_id)


def _check_header(csv_path: str, header: list[str], scale: str) -> None:
  aus = SCALES[scale]
  accepted = REQUIRED_COLUMNS + OPTIONAL_COLUMNS + aus
  missing = [c for c in REQUIRED_COLUMNS if c not in header]
  if missing:
    raise _error(
      csv_path,
      f"line 1: missing column(s) {', '.join(missing)} in the header "
      f"{','.join(header) or '(empty file)'}; add them",
    )
  for c in header:
    other = [s for s, cols in SCALES.items() if s != scale and c in cols]
    if c not in accepted and other:
      raise _error(
        csv_path,
        f"line 1: column {c} is an action unit of the {'/'.join(other)} scale, not of the "
        f"{scale} scale (its AU columns: {', '.join(aus)}); remove the column or build with "
        f"--scale={other[0]}",
      )
  unknown = [c for c in header if c not in accepted]
  if unknown:
    raise _error(
      csv_path,
      f"line 1: unknown column(s) {', '.join(unknown)}; the {scale} scale accepts "
      f"{', '.join(accepted)}; rename or remove them",
    )


def _parse_au(value: str | None, column: str, where: str) -> int:
  v = (value or "").strip()
  if not v:
    return -1
  try:
    score = int(v)
  except ValueError:
    raise _error(
      where,
      f"column {column} holds {value!r}, not an integer; write 0, 1, 2, or -1 or nothing "
      "when the action unit cannot be scored",
    ) from None
  if score not in (-1, 0, 1, 2):
    raise _error(
      where,
      f"column {column} holds {score}, outside 0..2; write 0, 1, 2, or -1 or nothing when "
      "the action unit cannot be scored",
    )
  return score


def _image_path(image_root: str, filename: str, where: str) -> tuple[str, str]:
  """(normalized '/'-separated name, path) of `filename` under images/; refuses escapes."""
  name = filename.strip().replace("\\", "/")
  if not name:
    raise _error(where, "empty filename; give the image's path relative to images/")
  if name.startswith("/") or os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
    raise _error(
      where,
      f"filename {filename!r} is an absolute path; give it relative to images/ "
      "(copy the image into images/ first)",
    )
  norm = os.path.normpath(name).replace(os.sep, "/")
  if norm == ".." or norm.startswith("../") or norm == ".":
    raise _error(
      where,
      f"filename {filename!r} points outside images/; copy the image into images/ and give "
      "its path relative to images/",
    )
  return norm, os.path.join(image_root, *norm.split("/"))


def _check_file(path: str, name: str, images_real: str, where: str) -> str:
  """The real path of an existing image file inside images/ (ManualDataError otherwise)."""
  if not os.path.isfile(path):
    raise _error(where, f"image {name!r} not found (looked for {path}); add it or remove the row")
  real = os.path.realpath(path)
  if not manual.is_inside(real, images_real):
    raise _error(
      where,
      f"image {name!r} ({path}) is a symbolic link (or lies under one) to {real}, outside "
      f"{images_real}; copy the image into images/ instead of linking to it",
    )
  ext = os.path.splitext(name)[1].lower()
  if ext not in IMAGE_EXTENSIONS:
    raise _error(
      where,
      f"image {name!r}: unsupported file type {ext or '(none)'}; expected one of "
      f"{', '.join(IMAGE_EXTENSIONS)}",
    )
  return real


def _parse_row(row: dict[str, str], line: int, where: str, scale: str, image_root: str) -> Record:
  name, path = _image_path(image_root, row.get("filename") or "", where)
  animal = (row.get("animal_id") or "").strip()
  if not animal:
    raise _error(where, "empty animal_id; give the animal's identifier (e.g. M12 or rat-3)")
  if len(animal) > MAX_ANIMAL_ID_LENGTH:
    raise _error(
      where, f"animal_id {animal!r} is longer than {MAX_ANIMAL_ID_LENGTH} characters; shorten it"
    )
  aus = tuple(_parse_au(row.get(c), c, where) for c in SCALES[scale])
  level_text = (row.get("pain_level") or "").strip()
  if level_text:
    level = manual.parse_level(level_text, f"{where}, column pain_level", LAYOUT_HELP)
  else:
    level = label_from_aus(aus)
  text = {c: (row.get(c) or "").strip() for c in TEXT_COLUMNS}
  split = UNLABELLED_SPLIT if level < 0 else split_name(animal)
  return Record(split, name, path, line, animal, level, aus, text["session"], text["condition"])


def _check_animals(records: list[Record], csv_path: str) -> None:
  """Every animal has a labelled row, at least two animals, split names do not collide."""
  lines: dict[str, list[int]] = {}
  for r in records:
    lines.setdefault(r.animal_id, []).append(r.line)
  labelled = {r.animal_id for r in records if r.pain_level >= 0}
  for animal, at in lines.items():
    if animal not in labelled:
      raise _error(
        f"{csv_path}, line(s) {', '.join(map(str, at))}",
        f"animal {animal!r} has no labelled image (no pain_level and no AU score), so it "
        "cannot be a test fold; score at least one of its images or remove its rows",
      )
  if len(lines) < 2:
    raise _error(
      csv_path,
      f"only one animal ({', '.join(map(repr, lines))}) has labelled images; "
      "leave-one-animal-out needs at least two: add the rows of another animal",
    )
  seen: dict[str, str] = {}
  for animal, at in lines.items():
    key = split_name(animal).lower()
    if key in seen:
      first = seen[key]
      raise _error(
        f"{csv_path}, lines {lines[first][0]} and {at[0]}",
        f"animal ids {first!r} (line {lines[first][0]}) and {animal!r} (line {at[0]}) give "
        f"the same split name {split_name(first)!r} (characters outside A-Z, a-z, 0-9 become "
        "_, case is ignored); rename one of them",
      )
    seen[key] = animal


def read_rows(manual_dir: str, scale: str) -> list[Record]:
  """Validates labels.csv and the image paths (no image is decoded)."""
  check_scale(scale)
  if not manual_dir or not os.path.isdir(manual_dir):
    raise _error(str(manual_dir), "manual directory not found")
  csv_path = os.path.join(manual_dir, "labels.csv")
  image_root = os.path.join(manual_dir, "images")
  if not os.path.isfile(csv_path):
    raise _error(csv_path, "labels.csv missing; write it at the top of the manual directory")
  rows = manual.read_csv(
    csv_path, lambda h: _check_header(csv_path, h, scale), LAYOUT_HELP, REQUIRED_COLUMNS
  )
  if not os.path.isdir(image_root):
    raise _error(image_root, "folder missing; put the images under images/")
  manual_real = os.path.realpath(manual_dir)
  images_real = os.path.realpath(image_root)
  if not manual.is_inside(images_real, manual_real):
    raise _error(
      image_root,
      f"a symbolic link to {images_real}, outside the manual directory; copy the images in",
    )
  records = []
  by_real: dict[str, int] = {}
  for row, line in rows:
    where = f"{csv_path}, line {line}"
    r = _parse_row(row, line, where, scale, image_root)
    real = _check_file(r.path, r.filename, images_real, where)
    if real in by_real:
      raise _error(
        where,
        f"image {r.filename!r} is the file of line {by_real[real]} again (duplicate filename "
        "row); each image may appear once: remove one of the rows",
      )
    by_real[real] = line
    records.append(r)
  _check_animals(records, csv_path)
  return records


def scan(manual_dir: str, scale: str) -> list[Record]:
  """Validates everything (rows, paths, animals, images) and returns the records.

  Raises ManualDataError naming the line, column or file on any problem listed
  in the module docstring. Every image is decoded once here, so no bad file
  can surface mid-build.
  """
  records = read_rows(manual_dir, scale)
  csv_path = os.path.join(manual_dir, "labels.csv")
  seen: dict[str, Record] = {}
  for r in records:
    where = f"{csv_path}, line {r.line}"
    try:
      digest = hashlib.sha1(load_rgb_jpeg(r.path)).hexdigest()
    except ManualDataError as e:
      raise ManualDataError(f"{where}: {e}") from None
    if digest in seen:
      first = seen[digest]
      raise _error(
        where,
        f"image {r.filename!r} is the same image as {first.filename!r} (line {first.line}); "
        "an image may appear once: remove one of the rows (and its file)",
      )
    seen[digest] = r
  return records


def animal_splits(records: list[Record]) -> dict[str, str]:
  """Split name -> animal id of the animal splits, in order of first appearance in labels.csv."""
  out: dict[str, str] = {}
  for r in records:
    if r.pain_level >= 0:
      out.setdefault(r.split, r.animal_id)
  return out


def fingerprint(manual_dir: str) -> str:
  """SHA-256 of what a build reads: labels.csv's bytes and the size and
  modification time of each file its `filename` column names.

  Cheap (no image is read) and tolerant (an invalid CSV or a missing file
  still gives a fingerprint). An edit, an added or removed row or a replaced
  image changes it; so does a copy that does not keep modification times
  (e.g. `cp -r` without -p), which makes `prepare` ask for a rebuild.
  """
  csv_path = os.path.join(manual_dir, "labels.csv")
  image_root = os.path.join(manual_dir, "images")
  h = hashlib.sha256(b"grimace-manual/1\0")
  try:
    with open(csv_path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise _error(csv_path, f"cannot read labels.csv ({e.strerror})") from None
  h.update(b"%d\0" % len(data) + data)
  rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig", errors="replace"))))
  header = [c.strip() for c in rows[0]] if rows else []
  col = header.index("filename") if "filename" in header else -1
  names = sorted({r[col].strip() for r in rows[1:] if 0 <= col < len(r)})
  for name in names:
    try:
      st = os.stat(os.path.join(image_root, name.replace("\\", "/")))
      entry = f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n"
    except (OSError, ValueError):
      entry = f"{name}\0missing\n"
    h.update(entry.encode("utf-8", errors="replace"))
  return h.hexdigest()


def real_path(path: str) -> str:
  """os.path.realpath (here, so that the builder module needs no `os` call but fspath)."""
  return os.path.realpath(path)
