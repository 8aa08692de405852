"""Reads and validates a manually downloaded RatsPain directory (no TensorFlow).

Two layouts are accepted (see `LAYOUTS_HELP`); `scan(manual_dir)` detects which
one it is given, checks every row and every image *before* anything is
written, and returns one `Record` per image. Every error is a ManualDataError
that names the offending file or CSV line and says what is expected.

Rules beyond the layout itself:
  * A directory holding both layouts (labels.csv and Rat<k>/ or
    low_confidence/ folders) is refused; keep one of them.
  * labels.csv is comma-separated (a header separated by ';' or tabs, as
    Excel saves "CSV" in some locales, is refused as such) and names each
    column once. A CSV row must have exactly as many fields as the header
    (empty fields keep their commas); rows of only commas and spaces (the
    empty rows a spreadsheet leaves at the end) are skipped like blank lines.
  * Symbolic links are followed, but every image (and every folder walked in
    layout 2) must really lie inside the manual directory: its real path
    (os.path.realpath) may not leave it. Copy outside images in instead.
  * Images may have at most MAX_IMAGE_PIXELS (64,000,000) pixels, e.g. 8000x8000:
    far above a face crop (a few hundred pixels a side) or a camera frame (8K
    UHD is 33 MP), and below PIL's own decompression-bomb limit, whose warning
    or error it replaces. The limit is checked on the header, before decoding.
  * Every per-image failure (reading, decoding, size, colour conversion,
    re-encoding to JPEG), whatever PIL raises, is a ManualDataError naming the
    file.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re
import warnings
from collections.abc import Callable, Iterable

from PIL import Image, ImageOps

from painseeker_jax.images import IMAGE_EXTENSIONS, to_rgb  # noqa: F401  (re-exported)

NUM_RATS = 6
LEVEL_NAMES = ("no_pain", "moderate", "severe")
AU_COLUMNS = ("au_orbital", "au_ear", "au_nose", "au_whisker")
REQUIRED_COLUMNS = ("filename", "rat_id", "pain_level")
OPTIONAL_COLUMNS = ("confidence",) + AU_COLUMNS
# Files that file managers leave behind; never treated as images.
_IGNORED_FILES = ("thumbs.db", "desktop.ini")
# Largest accepted image (width * height): 8000x8000. Below PIL's
# Image.MAX_IMAGE_PIXELS (89,478,485), so PIL never warns on an accepted image.
MAX_IMAGE_PIXELS = 64_000_000

LAYOUTS_HELP = """\
Accepted layouts of the manual directory:

  1. A CSV file `labels.csv` at the top with the header
         filename,rat_id,pain_level
     and optional columns confidence (high/low), au_orbital, au_ear, au_nose,
     au_whisker. `filename` is relative to the sub-folder `images/` (sub-folders
     allowed), `rat_id` is 1..6, `pain_level` is 0/1/2 or no_pain/moderate/severe.
     Rows with confidence=low or an empty pain_level go to the `low_confidence`
     split (rat_id may then be empty). AU columns hold 0, 1, 2 or are empty.

  2. A folder tree  Rat<k>/<level>/<image>  with k in 1..6 and <level> one of
     0, 1, 2, no_pain, moderate, severe (case-insensitive), plus optionally
     low_confidence/[<anything>/]<image> for images without an image-level label.

Images may be JPEG, PNG, BMP, TIFF or WebP, in colour or grayscale, of at most
64,000,000 pixels (e.g. 8000x8000); they are stored as RGB JPEG (EXIF rotation
applied, alpha composited on white). Use one layout only (not labels.csv and
Rat<k>/ folders together). Symbolic links may not lead out of the manual
directory.
"""


class ManualDataError(ValueError):
  """The manual directory does not hold a valid RatsPain layout."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One image of the manual directory, validated."""

  split: str  # rat1..rat6 or low_confidence
  filename: str  # path relative to the layout's image root, '/'-separated
  path: str  # absolute path on disk
  rat_id: int  # 1..6, 0 if unknown (low_confidence only)
  pain_level: int  # 0, 1, 2 or -1 (unlabelled)
  au_scores: tuple[int, int, int, int]  # 0..2 or -1


def _error(where: str, problem: str, help_text: str = LAYOUTS_HELP) -> ManualDataError:
  return ManualDataError(f"{where}: {problem}\n\n{help_text}")


def parse_level(value: str, where: str, help_text: str = LAYOUTS_HELP) -> int:
  """'0'/'1'/'2' or a level name (case-insensitive) -> 0..2.

  Raises ManualDataError naming `where`, followed by `help_text` (the layout
  help of the data set being read).
  """
  v = value.strip().lower().replace(" ", "_").replace("-", "_")
  if v in ("0", "1", "2"):
    return int(v)
  if v in LEVEL_NAMES:
    return LEVEL_NAMES.index(v)
  raise _error(
    where,
    f"unknown pain level {value!r}; expected 0, 1, 2, no_pain, moderate or severe",
    help_text,
  )


def _parse_rat(value: str, where: str) -> int:
  try:
    rat = int(value.strip())
  except ValueError:
    raise _error(where, f"rat_id {value!r} is not a number; expected 1..{NUM_RATS}") from None
  if not 1 <= rat <= NUM_RATS:
    raise _error(where, f"unknown rat {rat}; RatsPain has rats 1..{NUM_RATS}")
  return rat


def _parse_au(value: str | None, column: str, where: str) -> int:
  if value is None or not value.strip():
    return -1
  v = value.strip()
  if v not in ("0", "1", "2"):
    raise _error(where, f"column {column} holds {value!r}; expected 0, 1, 2 or empty")
  return int(v)


_REPLACE_HINT = (
  "Replace it with a JPEG/PNG/BMP/TIFF/WebP image or remove it (and its labels.csv row)."
)


def _too_large(path: str, pixels: str) -> ManualDataError:
  return ManualDataError(
    f"{path}: image too large ({pixels}); at most {MAX_IMAGE_PIXELS:,} pixels (e.g. "
    "8000x8000) are accepted. Downscale or crop it, or remove it (and its labels.csv row)."
  )


def _bomb_pixels(e: Exception) -> str:
  """'N pixels' from PIL's DecompressionBomb message, else the message itself."""
  m = re.search(r"\((\d+) pixels\)", str(e))
  return f"{int(m.group(1)):,} pixels" if m else str(e)


def _describe(e: BaseException) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def load_rgb_jpeg(path: str) -> bytes:
  """Decodes any supported image and returns RGB JPEG bytes.

  Baseline RGB JPEGs without an EXIF rotation are returned unchanged (no
  re-compression); everything else (PNG, grayscale, RGBA, CMYK, 16-bit,
  EXIF-rotated) is converted. Raises ManualDataError naming the file if it
  cannot be read, decoded, converted or re-encoded (whatever PIL raises), or
  if it has more than MAX_IMAGE_PIXELS pixels (checked before decoding).
  """
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise ManualDataError(f"{path}: cannot read the file ({e.strerror}).") from None
  try:
    with warnings.catch_warnings():
      # PIL warns above Image.MAX_IMAGE_PIXELS (and raises above twice that):
      # both become the size error below, never a bare warning.
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      img = Image.open(io.BytesIO(raw))
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise _too_large(path, _bomb_pixels(e)) from None
  except Exception as e:  # corrupt files make PIL raise almost any type
    raise ManualDataError(
      f"{path}: not a decodable image ({_describe(e)}). {_REPLACE_HINT}"
    ) from None
  width, height = img.size
  if width * height > MAX_IMAGE_PIXELS:
    raise _too_large(path, f"{width}x{height} = {width * height:,} pixels")
  try:
    img.load()
    orientation = img.getexif().get(0x0112, 1)
  except Exception as e:
    raise ManualDataError(
      f"{path}: not a decodable image ({_describe(e)}). {_REPLACE_HINT}"
    ) from None
  if img.format == "JPEG" and img.mode == "RGB" and orientation == 1:
    return raw
  try:
    img = ImageOps.exif_transpose(img)
    img = to_rgb(img)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=95)
  except Exception as e:
    raise ManualDataError(
      f"{path}: decoded, but cannot be converted to an RGB JPEG ({_describe(e)}). "
      "Re-save it as a plain RGB JPEG or PNG, or remove it (and its labels.csv row)."
    ) from None
  return out.getvalue()


def _is_candidate_file(name: str) -> bool:
  return not name.startswith(".") and name.lower() not in _IGNORED_FILES


def is_inside(real: str, root_real: str) -> bool:
  """Whether the real path `real` is `root_real` or lies under it (both from os.path.realpath)."""
  return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _check_inside(path: str, manual_real: str, where: str, subject: str) -> None:
  """Refuses `path` if its real path (links resolved) leaves the manual directory."""
  real = os.path.realpath(path)
  if not is_inside(real, manual_real):
    raise _error(
      where,
      f"{subject} is a symbolic link (or lies under one) to {real}, outside the manual "
      f"directory {manual_real}; copy it into the manual directory instead of linking to it",
    )


def _walk_files(root: str, manual_real: str) -> list[str]:
  """Candidate files under `root`, following links that stay inside the manual directory."""
  out = []
  seen: dict[str, str] = {}  # real path -> first folder read there
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    _check_inside(dirpath, manual_real, dirpath, "this folder")
    real = os.path.realpath(dirpath)
    if real in seen:
      raise _error(
        dirpath,
        f"the same folder as {seen[real]} (through a symbolic link); each image may appear "
        "once, remove the link",
      )
    seen[real] = dirpath
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for f in sorted(filenames):
      if _is_candidate_file(f):
        path = os.path.join(dirpath, f)
        _check_inside(path, manual_real, path, "this image")
        out.append(path)
  return out


def _rel(path: str, root: str) -> str:
  return os.path.relpath(path, root).replace(os.sep, "/")


def _check_separator(
  csv_path: str, header: list[str], required: Iterable[str], help_text: str
) -> None:
  """Refuses a header separated by semicolons or tabs (what Excel saves as "CSV" where the
  list separator is ';'): read with commas it is one column that none of `required` is."""
  if any(c in header for c in required):
    return
  for sep, name in ((";", "semicolons (;)"), ("\t", "tabs")):
    if any(sep in h for h in header):
      raise _error(
        f"{csv_path}, line 1",
        f"the header is separated by {name}, but the file must be comma-separated (,): "
        "export it again with a comma as the field separator (LibreOffice asks for it; Excel "
        "uses the system's list separator) or replace the separators with commas",
        help_text,
      )


def read_csv(
  csv_path: str,
  check_header: Callable[[list[str]], None],
  help_text: str = LAYOUTS_HELP,
  required: Iterable[str] = REQUIRED_COLUMNS,
) -> list[tuple[dict[str, str], int]]:
  """The rows of a UTF-8 CSV file as (column -> value, 1-based line number) pairs.

  A header separated by semicolons or tabs rather than commas (none of the `required`
  columns found) is refused as such. Then `check_header(header)` is called with the
  stripped header fields before any row is read (it raises on a missing or unknown
  column), and a column named twice is refused. Blank lines and rows of nothing but
  commas and spaces (the empty rows a spreadsheet leaves at the end) are skipped. Raises
  ManualDataError (naming the file and line, followed by `help_text`) for these and for a
  row with more or fewer fields than the header, a file that is not UTF-8, or a file
  without rows.
  """
  try:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      header = [h.strip() for h in next(reader, [])]
      _check_separator(csv_path, header, required, help_text)
      check_header(header)
      twice = sorted({c for c in header if c and header.count(c) > 1})
      if twice:
        raise _error(
          f"{csv_path}, line 1",
          f"column(s) {', '.join(twice)} appear twice in the header; keep one of each",
          help_text,
        )
      rows = []
      for fields in reader:
        if not "".join(fields).strip():  # a blank line, or only commas (and spaces)
          continue
        where = f"{csv_path}, line {reader.line_num}"
        if len(fields) != len(header):
          more = len(fields) > len(header)
          raise _error(
            where,
            f"has {len(fields)} field(s) but the header has {len(header)} "
            f"({','.join(header)}); expected exactly {len(header)} comma-separated "
            "fields per row: "
            + (
              "remove the surplus fields (quote a value that holds a comma)"
              if more
              else "add the missing ones (an empty value keeps its comma, e.g. a.jpg,1,)"
            ),
            help_text,
          )
        rows.append((dict(zip(header, fields)), reader.line_num))
  except UnicodeDecodeError as e:
    raise _error(
      _first_non_utf8_line(csv_path) or csv_path, _NOT_UTF8.format(e=e), help_text
    ) from None
  if not rows:
    raise _error(csv_path, "has a header but no rows", help_text)
  return rows


_NOT_UTF8 = (
  "is not UTF-8 text ({e}); a spreadsheet saved in a regional encoding (e.g. Windows-1252 from "
  'Excel) does this: save it as "CSV UTF-8 (comma delimited)", or convert it, e.g. '
  "`iconv -f cp1252 -t utf-8 labels.csv > labels_utf8.csv`"
)


def _first_non_utf8_line(csv_path: str) -> str | None:
  """'<csv_path>, line N' of the first line that is not UTF-8, or None."""
  try:
    with open(csv_path, "rb") as f:
      for number, line in enumerate(f, 1):
        try:
          line.decode("utf-8")
        except UnicodeDecodeError:
          return f"{csv_path}, line {number}"
  except OSError:
    pass
  return None


def _check_csv_header(csv_path: str, header: list[str]) -> None:
  missing = [c for c in REQUIRED_COLUMNS if c not in header]
  if missing:
    raise _error(
      csv_path,
      f"missing column(s) {', '.join(missing)} in the header {','.join(header) or '(empty file)'}",
    )
  unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
  if unknown:
    raise _error(
      csv_path,
      f"unknown column(s) {', '.join(unknown)}; allowed: "
      f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}",
    )


def _scan_csv(manual_dir: str, manual_real: str) -> list[Record]:
  csv_path = os.path.join(manual_dir, "labels.csv")
  image_root = os.path.join(manual_dir, "images")
  rows = read_csv(csv_path, lambda header: _check_csv_header(csv_path, header))
  if not os.path.isdir(image_root):
    raise _error(image_root, "folder missing; layout 1 keeps the images under images/")
  records = []
  for row, line in rows:
    where = f"{csv_path}, line {line}"
    filename = (row.get("filename") or "").strip().replace("\\", "/")
    if not filename:
      raise _error(where, "empty filename")
    confidence = (row.get("confidence") or "high").strip().lower() or "high"
    if confidence not in ("high", "low"):
      raise _error(where, f"confidence {confidence!r}; expected high, low or empty")
    level_text = (row.get("pain_level") or "").strip()
    unlabelled = confidence == "low" or not level_text
    level = -1 if not level_text else parse_level(level_text, where)
    rat_text = (row.get("rat_id") or "").strip()
    if unlabelled and not rat_text:
      rat = 0
    elif not rat_text:
      raise _error(where, f"empty rat_id; expected 1..{NUM_RATS}")
    else:
      rat = _parse_rat(rat_text, where)
    aus = tuple(_parse_au(row.get(c), c, where) for c in AU_COLUMNS)
    path = os.path.normpath(os.path.join(image_root, filename))
    if not path.startswith(os.path.normpath(image_root) + os.sep):
      raise _error(where, f"filename {filename!r} points outside images/")
    if not os.path.isfile(path):
      raise ManualDataError(f"{where}: image {filename!r} not found (looked for {path}).")
    _check_inside(path, manual_real, where, f"image {filename!r} ({path})")
    split = "low_confidence" if unlabelled else f"rat{rat}"
    records.append(Record(split, filename, path, rat, -1 if unlabelled else level, aus))
  return records


_RAT_DIR = re.compile(r"^rat[ _-]?(\d+)$", re.IGNORECASE)


def _scan_tree(manual_dir: str, manual_real: str, top: list[str]) -> list[Record]:
  records = []
  for name in top:
    full = os.path.join(manual_dir, name)
    if not os.path.isdir(full):
      raise _error(
        full,
        "unexpected file at the top of the manual directory "
        "(expected labels.csv or folders Rat1..Rat6 and low_confidence)",
      )
    m = _RAT_DIR.match(name)
    if name.lower() == "low_confidence":
      rat = 0
    elif m:
      rat = _parse_rat(m.group(1), full)
    else:
      raise _error(full, "unknown folder; expected Rat1..Rat6 or low_confidence")
    for path in _walk_files(full, manual_real):
      rel = _rel(path, full)
      parts = rel.split("/")
      if len(parts) < 2 and rat != 0:  # low_confidence images have no level folder
        raise _error(
          path,
          "image directly under its rat folder; put it in a "
          "level folder (0/1/2 or no_pain/moderate/severe)",
        )
      if rat == 0:
        level = -1
      else:
        if len(parts) != 2:
          raise _error(path, "too deep; expected Rat<k>/<level>/<image>")
        level = parse_level(parts[0], path)
      split = "low_confidence" if rat == 0 else f"rat{rat}"
      records.append(Record(split, _rel(path, manual_dir), path, rat, level, (-1,) * 4))
  return records


def scan(manual_dir: str) -> list[Record]:
  """Detects the layout, validates everything and returns the records.

  Raises ManualDataError (naming the file or CSV line) on any problem: missing
  or unreadable directory, empty directory, both layouts at once, missing
  column, a row with too many or too few fields, unknown rat or level, missing
  image, an image outside the manual directory (symbolic link), non-image or
  corrupt file, an image over MAX_IMAGE_PIXELS, duplicate filename or
  duplicate image.
  Every image is decoded once here, so no bad file can surface mid-build.
  """
  if not manual_dir or not os.path.isdir(manual_dir):
    raise _error(str(manual_dir), "manual directory not found")
  top = sorted(n for n in os.listdir(manual_dir) if _is_candidate_file(n))
  if not top:
    raise _error(manual_dir, "the manual directory is empty")
  manual_real = os.path.realpath(manual_dir)
  if "labels.csv" in top:
    tree = [
      os.path.join(manual_dir, n)
      for n in top
      if (_RAT_DIR.match(n) or n.lower() == "low_confidence")
      and os.path.isdir(os.path.join(manual_dir, n))
    ]
    if tree:
      raise _error(
        manual_dir,
        f"holds both layouts: {os.path.join(manual_dir, 'labels.csv')} (layout 1) and the "
        f"folder(s) {', '.join(tree)} (layout 2); keep one: move either labels.csv and "
        "images/ or the Rat<k>/low_confidence folders out of the manual directory",
      )
    records = _scan_csv(manual_dir, manual_real)
  else:
    records = _scan_tree(manual_dir, manual_real, top)
  if not records:
    raise _error(manual_dir, "no images found")
  _check_unique(records)
  return records


def _check_unique(records: Iterable[Record]) -> None:
  """Supported types, unique names, unique pixels; decodes every image."""
  seen_names: dict[str, str] = {}
  seen_content: dict[str, str] = {}
  for r in records:
    ext = os.path.splitext(r.path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
      raise _error(
        r.path,
        f"unsupported file type {ext or '(none)'}; expected one of {', '.join(IMAGE_EXTENSIONS)}",
      )
    if r.filename in seen_names:
      raise _error(
        r.path,
        f"duplicate filename {r.filename!r} (also listed in "
        f"{seen_names[r.filename]}); each image may appear once",
      )
    seen_names[r.filename] = r.split
    digest = hashlib.sha1(load_rgb_jpeg(r.path)).hexdigest()  # decodes: fails early
    if digest in seen_content:
      raise _error(
        r.path,
        f"the same image as {seen_content[digest]}; an image "
        "may never be in two places (or two splits)",
      )
    seen_content[digest] = r.filename
