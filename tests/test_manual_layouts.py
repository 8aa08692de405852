"""The `ratspain/real` builder on small manual directories (no TensorFlow needed).

Manual directories are built in tmp_path from generated images and from the
real crops in tests/data/real_samples (label<k>_* = pain level k). They go
through `manual.scan`, `build.prepare("real", ...)` and `tfds.data_source`.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import struct
import warnings
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import tfds_ratspain  # noqa: F401  (registers the ratspain builder)
from painseeker_jax import input_pipeline
from tfds_ratspain import build
from tfds_ratspain.ratspain import manual

REAL_SAMPLES = pathlib.Path(__file__).parent / "data" / "real_samples"
SIZE = 24

_counter = iter(range(1_000_000))


def _pixels(size=(SIZE, SIZE)) -> np.ndarray:
  """A distinct (seeded noise) RGB image of size (width, height)."""
  rng = np.random.default_rng(next(_counter))
  return rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def _write_image(path: pathlib.Path, size=(SIZE, SIZE), fmt: str | None = None) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(_pixels(size)).save(path, format=fmt)
  return path


def _copy_real(name: str, dest: pathlib.Path) -> pathlib.Path:
  dest.parent.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(REAL_SAMPLES / name, dest)
  return dest


def _write_csv(manual_dir: pathlib.Path, header: str, rows: list[str]) -> None:
  manual_dir.mkdir(parents=True, exist_ok=True)
  (manual_dir / "labels.csv").write_text("\n".join([header] + rows) + "\n", encoding="utf-8")


def _files_under(root: pathlib.Path) -> list[str]:
  return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


def _dirs_under(root: pathlib.Path) -> list[str]:
  return [os.path.join(d, s) for d, ss, _ in os.walk(root) for s in ss]


def _examples(data_dir: pathlib.Path, split: str) -> dict[str, dict]:
  """filename -> decoded example of one split of ratspain/real."""
  source = tfds.data_source("ratspain/real", data_dir=os.fspath(data_dir), split=split)
  out = {}
  for ex in source:
    name = ex["filename"].decode() if isinstance(ex["filename"], bytes) else ex["filename"]
    out[name] = ex
  assert len(out) == len(source)
  return out


def _stored_bytes(data_dir: pathlib.Path, split: str) -> dict[str, bytes]:
  """filename -> the JPEG bytes stored in the data set (image decoding skipped)."""
  b = build.builder("real", os.fspath(data_dir))
  source = b.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  out = {}
  for ex in source:
    name = ex["filename"].decode() if isinstance(ex["filename"], bytes) else ex["filename"]
    out[name] = bytes(ex["image"])
  return out


def _split_names(data_dir: pathlib.Path) -> set[str]:
  return set(build.builder("real", os.fspath(data_dir)).info.splits.keys())


def _check_real_extras(ex: dict) -> None:
  """Real data has no head pose or landmarks."""
  assert ex["head_pose"].shape == (3,) and np.isnan(ex["head_pose"]).all()
  assert ex["landmarks"].shape == (7, 2) and np.isnan(ex["landmarks"]).all()
  assert ex["landmark_visible"].shape == (7,) and not ex["landmark_visible"].any()
  assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3 and ex["image"].shape[2] == 3


def _prepare(manual_dir: pathlib.Path, data_dir: pathlib.Path) -> str:
  path = build.prepare("real", data_dir=os.fspath(data_dir), manual_dir=os.fspath(manual_dir))
  assert os.path.isdir(path)
  return path


# --------------------------------------------------------------------------
# 1. Layout 1: labels.csv + images/
# --------------------------------------------------------------------------


def test_layout1_csv_end_to_end(tmp_path):
  md = tmp_path / "manual"
  img = md / "images"
  _copy_real("label0_sample0.jpg", img / "r1_a.jpg")
  _copy_real("label1_sample0.jpg", img / "r1_b.jpg")
  _copy_real("label2_sample0.jpg", img / "sub" / "r2_c.jpg")
  _write_image(img / "sub" / "deeper" / "r2_d.png")
  _write_image(img / "r3_e.jpg")
  _copy_real("label1_sample1.jpg", img / "lc_rat3.jpg")
  _write_image(img / "lc" / "lc_norat.jpg")
  _write_image(img / "lc_empty_level.jpg")
  (md / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
  (md / "Thumbs.db").write_bytes(b"junk")
  _write_csv(
    md,
    "filename,rat_id,pain_level,confidence,au_orbital,au_ear,au_nose,au_whisker",
    [
      "r1_a.jpg,1,0,high,0,1,2,",
      "r1_b.jpg,1,moderate,,1,1,1,1",
      "sub/r2_c.jpg,2,Severe,high,,,,",
      "sub/deeper/r2_d.png,2,2,,2,,0,",
      "r3_e.jpg,3,no_pain,HIGH,0,0,0,0",
      "lc_rat3.jpg,3,1,low,1,,,",
      "lc/lc_norat.jpg,,,low,,,,",
      "lc_empty_level.jpg,4,,,,,,",
    ],
  )
  dd = tmp_path / "data"
  _prepare(md, dd)

  assert _split_names(dd) == {"rat1", "rat2", "rat3", "low_confidence"}
  rat1, rat2, rat3 = (_examples(dd, f"rat{k}") for k in (1, 2, 3))
  lc = _examples(dd, "low_confidence")
  assert (len(rat1), len(rat2), len(rat3), len(lc)) == (2, 2, 1, 3)
  assert set(rat1) == {"r1_a.jpg", "r1_b.jpg"}
  assert set(rat2) == {"sub/r2_c.jpg", "sub/deeper/r2_d.png"}
  assert set(rat3) == {"r3_e.jpg"}
  assert set(lc) == {"lc_rat3.jpg", "lc/lc_norat.jpg", "lc_empty_level.jpg"}
  # A LORO-style split expression works.
  both = tfds.data_source("ratspain/real", data_dir=os.fspath(dd), split="rat1+rat2")
  assert len(both) == 4

  expected = {  # filename: (rat_id, pain_level, pain, au_scores)
    "r1_a.jpg": (1, 0, 0, [0, 1, 2, -1]),
    "r1_b.jpg": (1, 1, 1, [1, 1, 1, 1]),
    "sub/r2_c.jpg": (2, 2, 1, [-1, -1, -1, -1]),
    "sub/deeper/r2_d.png": (2, 2, 1, [2, -1, 0, -1]),
    "r3_e.jpg": (3, 0, 0, [0, 0, 0, 0]),
    "lc_rat3.jpg": (3, -1, -1, [1, -1, -1, -1]),
    "lc/lc_norat.jpg": (0, -1, -1, [-1, -1, -1, -1]),
    "lc_empty_level.jpg": (4, -1, -1, [-1, -1, -1, -1]),
  }
  all_examples = {**rat1, **rat2, **rat3, **lc}
  for name, (rat, level, pain, aus) in expected.items():
    ex = all_examples[name]
    assert int(ex["rat_id"]) == rat, name
    assert int(ex["pain_level"]) == level, name
    assert int(ex["pain"]) == pain, name
    assert ex["au_scores"].dtype == np.int32 and ex["au_scores"].tolist() == aus, name
    _check_real_extras(ex)
    with Image.open(img / name) as im:
      assert ex["image"].shape == (im.height, im.width, 3), name

  # Real crops (RGB JPEG, no EXIF) are stored byte-identical.
  stored = _stored_bytes(dd, "rat1")
  assert stored["r1_a.jpg"] == (REAL_SAMPLES / "label0_sample0.jpg").read_bytes()
  assert stored["r1_b.jpg"] == (REAL_SAMPLES / "label1_sample0.jpg").read_bytes()

  # A finished build is reused; nothing is rebuilt.
  assert _prepare(md, dd) == build.prepare("real", data_dir=os.fspath(dd))
  # A LORO fold needs rats this build lacks: an error that says so, not TFDS's "Unknown split".
  with pytest.raises(build.DataError, match=r"no split rat4, rat6 \(it holds") as e:
    input_pipeline.get_sources("real", ["rat1+rat4+rat6", "rat4"], os.fspath(dd), os.fspath(md))
  assert "--overwrite" in str(e.value) and str(md) in str(e.value)


# --------------------------------------------------------------------------
# 2. Layout 2: Rat<k>/<level>/<image> (+ low_confidence/<anything>/<image>)
# --------------------------------------------------------------------------


def test_layout2_tree_end_to_end(tmp_path):
  md = tmp_path / "manual"
  _copy_real("label0_sample0.jpg", md / "Rat1" / "0" / "a.jpg")
  _copy_real("label1_sample0.jpg", md / "Rat1" / "1" / "b.jpg")
  _copy_real("label2_sample0.jpg", md / "Rat1" / "2" / "c.jpg")
  _copy_real("label0_sample1.jpg", md / "rat2" / "no_pain" / "d.jpg")
  _write_image(md / "rat2" / "no_pain" / "d2.png")
  _copy_real("label1_sample1.jpg", md / "rat2" / "Moderate" / "e.jpg")
  _copy_real("label2_sample1.jpg", md / "rat2" / "SEVERE" / "f.jpg")
  _copy_real("label0_sample2.jpg", md / "low_confidence" / "x" / "g.jpg")
  _write_image(md / "low_confidence" / "y" / "h.jpg")
  _write_image(md / "low_confidence" / "i.jpg")  # no subfolder: low confidence has no level
  dd = tmp_path / "data"
  _prepare(md, dd)

  assert _split_names(dd) == {"rat1", "rat2", "low_confidence"}
  rat1, rat2, lc = (_examples(dd, s) for s in ("rat1", "rat2", "low_confidence"))
  expected = {  # filename: (split, rat_id, pain_level, pain)
    "Rat1/0/a.jpg": ("rat1", 1, 0, 0),
    "Rat1/1/b.jpg": ("rat1", 1, 1, 1),
    "Rat1/2/c.jpg": ("rat1", 1, 2, 1),
    "rat2/no_pain/d.jpg": ("rat2", 2, 0, 0),
    "rat2/no_pain/d2.png": ("rat2", 2, 0, 0),
    "rat2/Moderate/e.jpg": ("rat2", 2, 1, 1),
    "rat2/SEVERE/f.jpg": ("rat2", 2, 2, 1),
    "low_confidence/x/g.jpg": ("low_confidence", 0, -1, -1),
    "low_confidence/y/h.jpg": ("low_confidence", 0, -1, -1),
    "low_confidence/i.jpg": ("low_confidence", 0, -1, -1),
  }
  by_split = {"rat1": rat1, "rat2": rat2, "low_confidence": lc}
  for split, examples in by_split.items():
    assert set(examples) == {n for n, v in expected.items() if v[0] == split}
  for name, (split, rat, level, pain) in expected.items():
    ex = by_split[split][name]
    assert (int(ex["rat_id"]), int(ex["pain_level"]), int(ex["pain"])) == (rat, level, pain), name
    assert ex["au_scores"].tolist() == [-1, -1, -1, -1], name
    _check_real_extras(ex)
    with Image.open(md / name) as im:
      assert ex["image"].shape == (im.height, im.width, 3), name


def test_layout2_scan_records(tmp_path):
  """`manual.scan` alone: level names in any case, rat folder spellings."""
  md = tmp_path / "manual"
  names = {
    "Rat1/0/a.jpg": ("rat1", 1, 0),
    "Rat1/1/b.jpg": ("rat1", 1, 1),
    "Rat1/2/c.jpg": ("rat1", 1, 2),
    "rat2/No_Pain/d.jpg": ("rat2", 2, 0),
    "rat2/MODERATE/e.jpg": ("rat2", 2, 1),
    "rat2/severe/f.jpg": ("rat2", 2, 2),
    "RAT6/no-pain/g.jpg": ("rat6", 6, 0),
    "low_confidence/any/h.jpg": ("low_confidence", 0, -1),
  }
  for name in names:
    _write_image(md / name)
  records = {r.filename: r for r in manual.scan(os.fspath(md))}
  assert set(records) == set(names)
  for name, (split, rat, level) in names.items():
    r = records[name]
    assert (r.split, r.rat_id, r.pain_level, r.au_scores) == (split, rat, level, (-1,) * 4)
    assert r.path == os.fspath(md / name)


# --------------------------------------------------------------------------
# 3. Conversion to RGB JPEG
# --------------------------------------------------------------------------


def _make_conversion_inputs(folder: pathlib.Path) -> dict[str, tuple[int, int]]:
  """Writes one image per input kind; returns filename -> expected (height, width)."""
  folder.mkdir(parents=True, exist_ok=True)
  # PNG (RGB), 24 wide x 20 high: left half red, right half blue.
  rgb = np.zeros((20, 24, 3), np.uint8)
  rgb[:, :12] = (220, 20, 20)
  rgb[:, 12:] = (20, 20, 220)
  Image.fromarray(rgb).save(folder / "rgb.png")
  # Grayscale (mode L) PNG.
  Image.fromarray(np.full((16, 24), 100, np.uint8), mode="L").save(folder / "gray.png")
  # RGBA PNG: left half opaque green, right half fully transparent black.
  rgba = np.zeros((24, 24, 4), np.uint8)
  rgba[:, :12] = (0, 200, 0, 255)
  rgba[:, 12:] = (0, 0, 0, 0)
  Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
  # CMYK JPEG: left half green, right half yellow (other colours than rgb.png:
  # the same pixels would count as the same image twice).
  cmyk = np.zeros((20, 24, 3), np.uint8)
  cmyk[:, :12] = (20, 200, 20)
  cmyk[:, 12:] = (220, 220, 20)
  Image.fromarray(cmyk).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
  with Image.open(folder / "cmyk.jpg") as im:
    assert im.mode == "CMYK"
  # 16-bit grayscale PNG (mode I;16): left 0, right 65535.
  g16 = np.zeros((20, 24), np.uint16)
  g16[:, 12:] = 65535
  im16 = Image.fromarray(g16)
  assert im16.mode == "I;16"
  im16.save(folder / "gray16.png")
  # EXIF orientation 6 (rotate 90 degrees clockwise to display): stored 32 wide
  # x 16 high, left half red; displayed 16 wide x 32 high, top half red.
  stored = np.zeros((16, 32, 3), np.uint8)
  stored[:, :16] = (220, 20, 20)
  stored[:, 16:] = (20, 20, 220)
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(stored).save(folder / "exif6.jpg", exif=exif, quality=95)
  # Plain RGB JPEG without EXIF.
  Image.fromarray(_pixels((24, 18))).save(folder / "plain.jpg", quality=90)
  return {
    "rgb.png": (20, 24),
    "gray.png": (16, 24),
    "rgba.png": (24, 24),
    "cmyk.jpg": (20, 24),
    "gray16.png": (20, 24),
    "exif6.jpg": (32, 16),
    "plain.jpg": (18, 24),
  }


def _check_converted(name: str, arr: np.ndarray, shape: tuple[int, int]) -> None:
  assert arr.dtype == np.uint8 and arr.shape == shape + (3,), name
  a = arr.astype(int)
  if name == "rgb.png":
    assert np.abs(a[:, :10] - (220, 20, 20)).max() <= 12, name
    assert np.abs(a[:, 14:] - (20, 20, 220)).max() <= 12, name
  elif name == "cmyk.jpg":
    assert np.abs(a[:, :10] - (20, 200, 20)).max() <= 12, name
    assert np.abs(a[:, 14:] - (220, 220, 20)).max() <= 12, name
  elif name == "gray.png":
    assert np.abs(a - 100).max() <= 3, name
  elif name == "rgba.png":
    assert np.abs(a[:, :10] - (0, 200, 0)).max() <= 12, name
    assert a[:, 14:].min() >= 245, name  # transparent -> white
  elif name == "gray16.png":
    assert a[:, :10].max() <= 3, name
    assert a[:, 14:].min() >= 252, name  # 65535 -> 255
  elif name == "exif6.jpg":
    assert np.abs(a[:14] - (220, 20, 20)).max() <= 12, name  # top: was left
    assert np.abs(a[18:] - (20, 20, 220)).max() <= 12, name  # bottom: was right


def test_load_rgb_jpeg_conversions(tmp_path):
  shapes = _make_conversion_inputs(tmp_path)
  for name, shape in shapes.items():
    out = manual.load_rgb_jpeg(os.fspath(tmp_path / name))
    with Image.open(io.BytesIO(out)) as im:
      assert im.format == "JPEG" and im.mode == "RGB", name
      assert im.getexif().get(0x0112, 1) == 1, name
      _check_converted(name, np.asarray(im), shape)
  # RGB JPEGs without EXIF are not re-compressed.
  plain = tmp_path / "plain.jpg"
  assert manual.load_rgb_jpeg(os.fspath(plain)) == plain.read_bytes()
  for real in sorted(REAL_SAMPLES.glob("*.jpg")):
    assert manual.load_rgb_jpeg(os.fspath(real)) == real.read_bytes(), real.name


def test_conversions_through_data_source(tmp_path):
  md = tmp_path / "manual"
  shapes = _make_conversion_inputs(md / "Rat1" / "0")
  dd = tmp_path / "data"
  _prepare(md, dd)
  examples = _examples(dd, "rat1")
  assert set(examples) == {f"Rat1/0/{n}" for n in shapes}
  for name, shape in shapes.items():
    ex = examples[f"Rat1/0/{name}"]
    _check_converted(name, ex["image"], shape)
  stored = _stored_bytes(dd, "rat1")
  assert stored["Rat1/0/plain.jpg"] == (md / "Rat1" / "0" / "plain.jpg").read_bytes()
  for name in shapes:
    assert stored[f"Rat1/0/{name}"][:2] == b"\xff\xd8", name  # all stored as JPEG


# --------------------------------------------------------------------------
# 4. Bad inputs: a clear error naming the culprit, nothing written
# --------------------------------------------------------------------------

CSV_HEADER = "filename,rat_id,pain_level"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  crc = zlib.crc32(kind + data) & 0xFFFFFFFF
  return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_header_only(width: int, height: int) -> bytes:
  """A well-formed PNG (valid IHDR, CRCs) claiming width x height RGB, with a tiny IDAT."""
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
  return (
    b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", ihdr)
    + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 7))
    + _png_chunk(b"IEND", b"")
  )


def _png_header_only_file(path: pathlib.Path, width: int, height: int) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(_png_header_only(width, height))
  return path


def _csv_base(md: pathlib.Path, extra_rows=(), header=CSV_HEADER) -> None:
  _write_image(md / "images" / "ok1.jpg")
  _write_image(md / "images" / "ok2.jpg")
  _write_csv(md, header, ["ok1.jpg,1,0", "ok2.jpg,2,1", *extra_rows])


def _tree_base(md: pathlib.Path) -> None:
  _write_image(md / "Rat1" / "0" / "ok1.jpg")
  _write_image(md / "Rat2" / "1" / "ok2.jpg")


def _case_csv_missing_image(md):
  _csv_base(md, ["gone.jpg,3,2"])
  return ["gone.jpg", "line 4", "not found"]


def _case_csv_not_an_image(md):
  _csv_base(md, ["text.jpg,3,2"])
  (md / "images" / "text.jpg").write_text("this is not a JPEG")
  return ["text.jpg", "not a decodable image"]


def _case_tree_not_an_image(md):
  _tree_base(md)
  (md / "Rat2" / "1" / "text.jpg").write_text("this is not a JPEG")
  return ["Rat2/1/text.jpg", "not a decodable image"]


def _case_csv_unknown_rat(md):
  _write_image(md / "images" / "r7.jpg")
  _csv_base(md, ["r7.jpg,7,0"])
  return ["line 4", "unknown rat 7"]


def _case_tree_unknown_rat(md):
  _tree_base(md)
  _write_image(md / "Rat9" / "0" / "a.jpg")
  return ["Rat9", "unknown rat 9"]


def _case_csv_unknown_level(md):
  _write_image(md / "images" / "l3.jpg")
  _csv_base(md, ["l3.jpg,1,3"])
  return ["line 4", "unknown pain level '3'"]


def _case_tree_unknown_level(md):
  _tree_base(md)
  _write_image(md / "Rat1" / "medium" / "a.jpg")
  return ["Rat1/medium/a.jpg", "unknown pain level 'medium'"]


def _case_csv_duplicate_filename(md):
  _csv_base(md, ["ok1.jpg,3,2"])
  return ["ok1.jpg", "duplicate filename"]


def _case_tree_same_content(md):
  _tree_base(md)
  (md / "Rat3" / "2").mkdir(parents=True)
  shutil.copyfile(md / "Rat1" / "0" / "ok1.jpg", md / "Rat3" / "2" / "copy.jpg")
  return ["Rat3/2/copy.jpg", "Rat1/0/ok1.jpg", "two places"]


def _case_csv_same_content(md):
  _csv_base(md, ["copy.jpg,3,0"])
  shutil.copyfile(md / "images" / "ok2.jpg", md / "images" / "copy.jpg")
  return ["copy.jpg", "ok2.jpg", "two places"]


def _case_csv_missing_column(md):
  _csv_base(md)
  _write_csv(md, "filename,pain_level", ["ok1.jpg,0", "ok2.jpg,1"])
  return ["labels.csv", "missing column(s) rat_id"]


def _case_csv_unknown_column(md):
  _csv_base(md, header=CSV_HEADER + ",pain_score")
  _write_csv(md, CSV_HEADER + ",pain_score", ["ok1.jpg,1,0,3", "ok2.jpg,2,1,4"])
  return ["labels.csv", "unknown column(s) pain_score"]


def _case_csv_duplicate_column(md):
  _csv_base(md)
  _write_csv(md, CSV_HEADER + ",pain_level", ["ok1.jpg,1,0,2", "ok2.jpg,2,1,1"])
  return ["labels.csv, line 1", "column(s) pain_level appear twice", "keep one"]


def _case_csv_semicolons(md):
  _csv_base(md)
  _write_csv(md, "filename;rat_id;pain_level", ["ok1.jpg;1;0", "ok2.jpg;2;1"])
  return ["labels.csv, line 1", "separated by semicolons", "must be comma-separated"]


def _case_csv_tabs(md):
  _csv_base(md)
  _write_csv(md, "filename\trat_id\tpain_level", ["ok1.jpg\t1\t0", "ok2.jpg\t2\t1"])
  return ["labels.csv, line 1", "separated by tabs", "must be comma-separated"]


def _case_csv_au_out_of_range(md):
  _csv_base(md)
  _write_csv(md, CSV_HEADER + ",au_orbital,au_ear", ["ok1.jpg,1,0,1,2", "ok2.jpg,2,1,0,5"])
  return ["line 3", "au_ear", "'5'"]


def _case_tree_file_under_rat(md):
  _tree_base(md)
  _write_image(md / "Rat2" / "loose.jpg")
  return ["Rat2/loose.jpg", "directly under"]


def _case_empty_dir(md):
  md.mkdir(parents=True)
  return [os.fspath(md)]


def _case_only_junk_files(md):
  md.mkdir(parents=True)
  (md / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
  (md / "Thumbs.db").write_bytes(b"junk")
  return [os.fspath(md)]


def _case_missing_dir(md):
  return [os.fspath(md)]


def _case_csv_surplus_field(md):
  _write_image(md / "images" / "ok3.jpg")
  _csv_base(md, ["ok3.jpg,3,2,extra"])
  return [
    "line 4",
    "has 4 field(s) but the header has 3 (filename,rat_id,pain_level)",
    "remove the surplus fields",
  ]


def _case_csv_missing_field(md):
  _write_image(md / "images" / "short.jpg")
  _csv_base(md, ["short.jpg,3"])
  return [
    "line 4",
    "has 2 field(s) but the header has 3 (filename,rat_id,pain_level)",
    "add the missing ones",
  ]


def _case_csv_missing_field_optional_column(md):
  _write_image(md / "images" / "short.jpg")
  _csv_base(md, header=CSV_HEADER + ",confidence")
  _write_csv(md, CSV_HEADER + ",confidence", ["ok1.jpg,1,0,high", "short.jpg,3,2", "ok2.jpg,2,1,"])
  return ["line 3", "has 3 field(s) but the header has 4"]


def _case_both_layouts(md):
  _csv_base(md)
  _write_image(md / "Rat3" / "0" / "tree.jpg")
  return [os.fspath(md / "labels.csv"), os.fspath(md / "Rat3"), "both layouts", "keep one"]


def _outside(md, name="outside") -> pathlib.Path:
  """A folder next to (not in) the manual directory."""
  return md.parent / name


def _case_csv_symlink_file_outside(md):
  _csv_base(md, ["link.jpg,3,0"])
  target = _write_image(_outside(md) / "o.jpg")
  (md / "images" / "link.jpg").symlink_to(target)
  return [
    "line 4",
    "link.jpg",
    os.path.realpath(target),
    "outside the manual directory",
    "copy it into the manual directory",
  ]


def _case_csv_images_dir_symlink(md):
  outside = _outside(md, "outside_images")
  _write_image(outside / "ok1.jpg")
  _write_image(outside / "ok2.jpg")
  md.mkdir(parents=True)
  (md / "images").symlink_to(outside, target_is_directory=True)
  _write_csv(md, CSV_HEADER, ["ok1.jpg,1,0", "ok2.jpg,2,1"])
  return ["line 2", "ok1.jpg", os.path.realpath(outside / "ok1.jpg"), "outside the manual"]


def _case_tree_symlink_file_outside(md):
  _tree_base(md)
  target = _write_image(_outside(md) / "o.jpg")
  (md / "Rat3" / "0").mkdir(parents=True)
  (md / "Rat3" / "0" / "link.jpg").symlink_to(target)
  return ["Rat3/0/link.jpg", os.path.realpath(target), "outside the manual directory"]


def _case_tree_symlink_dir_outside(md):
  _tree_base(md)
  outside = _outside(md)
  _write_image(outside / "o.jpg")
  (md / "Rat3").mkdir(parents=True)
  (md / "Rat3" / "1").symlink_to(outside, target_is_directory=True)
  return ["Rat3/1", os.path.realpath(outside), "outside the manual directory"]


def _case_tree_symlink_rat_dir_outside(md):
  _tree_base(md)
  outside = _outside(md)
  _write_image(outside / "2" / "o.jpg")
  (md / "Rat3").symlink_to(outside, target_is_directory=True)
  return ["Rat3", os.path.realpath(outside), "outside the manual directory"]


def _case_tree_symlink_loop(md):
  _tree_base(md)
  (md / "Rat1" / "0" / "loop").symlink_to("../0", target_is_directory=True)
  return ["Rat1/0/loop", "the same folder as", "remove the link"]


def _case_csv_huge_png_header(md):
  _csv_base(md, ["huge.png,3,0"])
  (md / "images" / "huge.png").write_bytes(_png_header_only(30000, 30000))
  return ["huge.png", "too large (900,000,000 pixels)", "at most 64,000,000 pixels"]


def _case_tree_huge_png_header(md):
  _tree_base(md)
  _png_header_only_file(md / "Rat3" / "1" / "big.png", 9000, 8000)
  return ["Rat3/1/big.png", "too large (9000x8000 = 72,000,000 pixels)"]


BAD_CASES = {
  f.__name__[len("_case_") :]: f
  for f in [
    _case_csv_missing_image,
    _case_csv_not_an_image,
    _case_tree_not_an_image,
    _case_csv_unknown_rat,
    _case_tree_unknown_rat,
    _case_csv_unknown_level,
    _case_tree_unknown_level,
    _case_csv_duplicate_filename,
    _case_tree_same_content,
    _case_csv_same_content,
    _case_csv_missing_column,
    _case_csv_unknown_column,
    _case_csv_duplicate_column,
    _case_csv_semicolons,
    _case_csv_tabs,
    _case_csv_au_out_of_range,
    _case_tree_file_under_rat,
    _case_empty_dir,
    _case_only_junk_files,
    _case_missing_dir,
    _case_csv_surplus_field,
    _case_csv_missing_field,
    _case_csv_missing_field_optional_column,
    _case_both_layouts,
    _case_csv_symlink_file_outside,
    _case_csv_images_dir_symlink,
    _case_tree_symlink_file_outside,
    _case_tree_symlink_dir_outside,
    _case_tree_symlink_rat_dir_outside,
    _case_tree_symlink_loop,
    _case_csv_huge_png_header,
    _case_tree_huge_png_header,
  ]
}


def _assert_nothing_written(data_dir: pathlib.Path) -> None:
  assert _files_under(data_dir) == []
  dirs = _dirs_under(data_dir)
  assert not any(os.path.basename(d).startswith("incomplete") for d in dirs), dirs
  assert not (data_dir / "ratspain" / "real").exists()
  assert not (data_dir / "ratspain" / "synthetic").exists()


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_manual_dir_raises_and_writes_nothing(tmp_path, case):
  md = tmp_path / "manual"
  needles = BAD_CASES[case](md)
  with pytest.raises(manual.ManualDataError) as scan_err:
    manual.scan(os.fspath(md))
  for needle in needles:
    assert needle in str(scan_err.value), (needle, str(scan_err.value))

  dd = tmp_path / "data"
  dd.mkdir()
  with pytest.raises(build.DataError) as build_err:
    build.prepare("real", data_dir=os.fspath(dd), manual_dir=os.fspath(md))
  message = str(build_err.value)
  if case in ("empty_dir", "missing_dir"):
    needles = needles + ["missing or empty", "--manual_dir"]
  for needle in needles:
    assert needle in message, (needle, message)
  _assert_nothing_written(dd)


# --------------------------------------------------------------------------
# 5. No manual directory: instructions, never the synthetic set
# --------------------------------------------------------------------------


def test_real_without_manual_dir_gives_instructions(tmp_path):
  dd = tmp_path / "data"
  dd.mkdir()
  with pytest.raises(build.DataError) as err:
    build.prepare("real", data_dir=os.fspath(dd))
  message = str(err.value)
  assert "xhzongyuan/RatsPain" in message
  assert "--manual_dir" in message
  assert os.path.join(os.fspath(dd), "downloads", "manual") in message
  assert "python run.py --config=configs/loro.py:synthetic" in message
  assert "labels.csv" in message and "Rat<k>/<level>/<image>" in message
  _assert_nothing_written(dd)
  assert not any("synthetic" in d for d in _dirs_under(dd))


def test_default_manual_dir_under_data_dir(tmp_path):
  """Without --manual_dir, <data_dir>/downloads/manual is read."""
  dd = tmp_path / "data"
  md = dd / "downloads" / "manual"
  _write_image(md / "Rat4" / "severe" / "a.jpg")
  build.prepare("real", data_dir=os.fspath(dd))
  ex = _examples(dd, "rat4")
  assert list(ex) == ["Rat4/severe/a.jpg"]
  assert (int(ex["Rat4/severe/a.jpg"]["pain_level"]), int(ex["Rat4/severe/a.jpg"]["pain"])) == (
    2,
    1,
  )


# --------------------------------------------------------------------------
# 6. Hidden files and Thumbs.db are ignored
# --------------------------------------------------------------------------


def test_hidden_and_thumbs_files_ignored(tmp_path):
  md = tmp_path / "manual"
  _write_image(md / "Rat1" / "0" / "a.jpg")
  _write_image(md / "Rat1" / "2" / "b.png")
  _write_image(md / "low_confidence" / "x" / "c.jpg")
  junk = b"\x00\x00\x00\x01Bud1 not an image"
  for p in [
    md / ".DS_Store",
    md / "Thumbs.db",
    md / "Rat1" / ".DS_Store",
    md / "Rat1" / "Thumbs.db",
    md / "Rat1" / "0" / ".DS_Store",
    md / "Rat1" / "0" / "Thumbs.db",
    md / "Rat1" / "0" / "._a.jpg",
    md / "Rat1" / "0" / "desktop.ini",
    md / "low_confidence" / "x" / "THUMBS.DB",
    md / "Rat1" / ".thumbnails" / "cache.jpg",
    md / ".Trashes" / "x" / "y.jpg",
  ]:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(junk)
  records = manual.scan(os.fspath(md))
  assert sorted(r.filename for r in records) == [
    "Rat1/0/a.jpg",
    "Rat1/2/b.png",
    "low_confidence/x/c.jpg",
  ]

  dd = tmp_path / "data"
  _prepare(md, dd)
  assert set(_examples(dd, "rat1")) == {"Rat1/0/a.jpg", "Rat1/2/b.png"}
  assert set(_examples(dd, "low_confidence")) == {"low_confidence/x/c.jpg"}


def test_rows_of_only_commas_are_skipped(tmp_path):
  """The empty rows a spreadsheet leaves at the end (",,") are skipped like blank lines."""
  md = tmp_path / "manual"
  _csv_base(md, [",,", " , ,", "", ",,"])
  records = manual.scan(os.fspath(md))
  assert sorted(r.filename for r in records) == ["ok1.jpg", "ok2.jpg"]


def test_hidden_files_ignored_in_csv_layout(tmp_path):
  md = tmp_path / "manual"
  _csv_base(md)
  for p in [
    md / ".DS_Store",
    md / "Thumbs.db",
    md / "images" / ".DS_Store",
    md / "images" / "Thumbs.db",
  ]:
    p.write_bytes(b"junk")
  records = manual.scan(os.fspath(md))
  assert sorted((r.filename, r.split) for r in records) == [
    ("ok1.jpg", "rat1"),
    ("ok2.jpg", "rat2"),
  ]


# --------------------------------------------------------------------------
# 7. Oversized and corrupt images: a ManualDataError naming the file
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "size",
  [(30000, 30000), (10000, 10000), (9000, 8000)],  # PIL's error, PIL's warning, ours
  ids=lambda s: f"{s[0]}x{s[1]}",
)
def test_oversized_png_header_refused(tmp_path, size):
  width, height = size
  path = _png_header_only_file(tmp_path / "huge.png", width, height)
  with warnings.catch_warnings():
    warnings.simplefilter("error", Image.DecompressionBombWarning)  # no PIL warning either
    with pytest.raises(manual.ManualDataError) as err:
      manual.load_rgb_jpeg(os.fspath(path))
  message = str(err.value)
  assert message.startswith(f"{path}: image too large ("), message
  assert f"{width * height:,} pixels" in message, message
  assert f"at most {manual.MAX_IMAGE_PIXELS:,} pixels" in message, message
  assert "Downscale or crop it" in message, message


def test_size_limit_documented_and_below_pil():
  assert manual.MAX_IMAGE_PIXELS == 64_000_000
  assert manual.MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS
  assert "64,000,000 pixels" in manual.LAYOUTS_HELP
  assert "MAX_IMAGE_PIXELS" in manual.__doc__
  readme = pathlib.Path(manual.__file__).with_name("README.md").read_text(encoding="utf-8")
  assert "64,000,000" in readme


def test_image_at_the_size_limit_is_decoded(tmp_path):
  """8000x8000 passes the size check (then fails decoding: its IDAT is tiny)."""
  path = _png_header_only_file(tmp_path / "limit.png", 8000, 8000)
  with pytest.raises(manual.ManualDataError) as err:
    manual.load_rgb_jpeg(os.fspath(path))
  message = str(err.value)
  assert message.startswith(f"{path}: not a decodable image ("), message
  assert "too large" not in message


def test_reencode_oserror_names_the_file(tmp_path, monkeypatch):
  path = tmp_path / "a.tif"
  _write_image(path, fmt="TIFF")

  def broken_save(self, fp, format=None, **params):
    raise OSError("encoder error -2 when writing image file")

  monkeypatch.setattr(Image.Image, "save", broken_save)
  with pytest.raises(manual.ManualDataError) as err:
    manual.load_rgb_jpeg(os.fspath(path))
  message = str(err.value)
  assert message.startswith(f"{path}: decoded, but cannot be converted to an RGB JPEG"), message
  assert "OSError: encoder error -2" in message, message


def test_conversion_error_names_the_file(tmp_path, monkeypatch):
  path = _write_image(tmp_path / "a.png")

  def broken_to_rgb(img):
    raise ValueError("conversion from XYZ to RGB not supported")

  monkeypatch.setattr(manual, "to_rgb", broken_to_rgb)
  with pytest.raises(manual.ManualDataError) as err:
    manual.load_rgb_jpeg(os.fspath(path))
  assert str(err.value).startswith(f"{path}: decoded, but cannot be converted"), str(err.value)


def _fuzz_sources(folder: pathlib.Path, fmt: str) -> list[pathlib.Path]:
  """Small valid images of one format, in a few encodings and modes."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(17)  # the same sources whatever ran before
  rgb = Image.fromarray(rng.integers(0, 256, size=(16, 20, 3), dtype=np.uint8))
  variants = {
    "png": [("RGB", {}), ("RGBA", {}), ("P", {}), ("L", {})],
    "jpg": [("RGB", {"quality": 90}), ("L", {}), ("CMYK", {})],
    "bmp": [("RGB", {}), ("P", {}), ("L", {})],
    "gif": [("P", {}), ("L", {})],
    "tif": [
      ("RGB", {}),
      ("RGB", {"compression": "tiff_lzw"}),
      ("RGB", {"compression": "tiff_deflate"}),
      ("CMYK", {}),
      ("L", {"compression": "packbits"}),
    ],
    "webp": [("RGB", {"quality": 80}), ("RGBA", {"lossless": True})],
  }[fmt]
  pil_format = {"jpg": "JPEG", "tif": "TIFF"}.get(fmt, fmt.upper())
  out = []
  for i, (mode, kwargs) in enumerate(variants):
    path = folder / f"src{i}.{fmt}"
    rgb.convert(mode).save(path, format=pil_format, **kwargs)
    out.append(path)
  return out


def _fuzz(data: bytes, rng: np.random.Generator) -> bytes:
  """Flips 1..6 bytes, half of them in the first 64 bytes (headers)."""
  out = bytearray(data)
  for _ in range(int(rng.integers(1, 7))):
    end = min(len(out), 64) if rng.random() < 0.5 else len(out)
    out[int(rng.integers(0, end))] ^= int(rng.integers(1, 256))
  return bytes(out)


FUZZ_FORMATS = ("png", "jpg", "bmp", "gif", "tif", "webp")
FUZZ_PER_SOURCE = 40


def _fuzzed_files(folder: pathlib.Path, fmt: str) -> list[pathlib.Path]:
  rng = np.random.default_rng(1917 + FUZZ_FORMATS.index(fmt))
  out = []
  for src in _fuzz_sources(folder / "src", fmt):
    data = src.read_bytes()
    for k in range(FUZZ_PER_SOURCE):
      path = folder / f"{src.stem}_fuzz{k}.{fmt}"
      path.write_bytes(_fuzz(data, rng))
      out.append(path)
  return out


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns on some corrupt metadata
@pytest.mark.parametrize("fmt", FUZZ_FORMATS)
def test_fuzzed_images_fail_naming_the_file(tmp_path, fmt):
  """Each fuzzed file decodes to an RGB JPEG or raises ManualDataError naming it."""
  failed = 0
  for path in _fuzzed_files(tmp_path, fmt):
    try:
      out = manual.load_rgb_jpeg(os.fspath(path))
    except manual.ManualDataError as e:
      assert str(e).startswith(f"{path}: "), str(e)
      failed += 1
    else:
      with Image.open(io.BytesIO(out)) as im:
        assert im.format == "JPEG" and im.mode == "RGB", path
  assert failed > 0  # the fuzzing does produce corrupt files


def _first_failing_fuzz(folder: pathlib.Path, fmt: str) -> pathlib.Path:
  for path in _fuzzed_files(folder, fmt):
    try:
      manual.load_rgb_jpeg(os.fspath(path))
    except manual.ManualDataError:
      return path
  raise AssertionError(f"no fuzzed {fmt} file fails")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fmt", FUZZ_FORMATS)
def test_fuzzed_image_in_manual_dir_refused(tmp_path, fmt):
  """scan and prepare name the corrupt file; nothing is written."""
  bad = _first_failing_fuzz(tmp_path / "fuzz", fmt)
  md = tmp_path / "manual"
  _tree_base(md)
  # GIF is no accepted extension: GIF content under a .png name is decoded all the same.
  dest = md / "Rat3" / "2" / f"bad_{fmt}.{'png' if fmt == 'gif' else fmt}"
  dest.parent.mkdir(parents=True)
  shutil.copyfile(bad, dest)
  with pytest.raises(manual.ManualDataError) as err:
    manual.scan(os.fspath(md))
  assert str(err.value).startswith(f"{dest}: "), str(err.value)
  dd = tmp_path / "data"
  dd.mkdir()
  with pytest.raises(build.DataError) as build_err:
    build.prepare("real", data_dir=os.fspath(dd), manual_dir=os.fspath(md))
  assert os.fspath(dest) in str(build_err.value)
  _assert_nothing_written(dd)


# --------------------------------------------------------------------------
# 8. Symbolic links that stay inside the manual directory are fine
# --------------------------------------------------------------------------


def test_symlinks_inside_manual_dir_accepted(tmp_path):
  md = tmp_path / "manual"
  _csv_base(md, ["alias.jpg,3,2"])
  target = _write_image(md / "originals" / "a.jpg")
  (md / "images" / "alias.jpg").symlink_to(os.path.relpath(target, md / "images"))
  records = {r.filename: r for r in manual.scan(os.fspath(md))}
  assert set(records) == {"ok1.jpg", "ok2.jpg", "alias.jpg"}
  assert records["alias.jpg"].split == "rat3"

  # The manual directory itself may be reached through a link.
  link = tmp_path / "manual_link"
  link.symlink_to(md, target_is_directory=True)
  assert len(manual.scan(os.fspath(link))) == 3

  # Layout 2: a level folder linking to a (hidden) folder inside the rat folder.
  tree = tmp_path / "tree"
  _tree_base(tree)
  _write_image(tree / "Rat3" / ".store" / "b.jpg")
  (tree / "Rat3" / "1").symlink_to(".store", target_is_directory=True)
  records = {r.filename: r for r in manual.scan(os.fspath(tree))}
  assert set(records) == {"Rat1/0/ok1.jpg", "Rat2/1/ok2.jpg", "Rat3/1/b.jpg"}
  assert (records["Rat3/1/b.jpg"].split, records["Rat3/1/b.jpg"].pain_level) == ("rat3", 1)


# --------------------------------------------------------------------------
# 9. Leftovers of a killed build are removed
# --------------------------------------------------------------------------


def test_prepare_removes_stale_incomplete_folders(tmp_path):
  dd = tmp_path / "data"
  config_dir = dd / "ratspain" / "synthetic_mini"
  stale_before = config_dir / "incomplete.ABC123_1.0.0"  # a build killed before the first success
  (stale_before / "half").mkdir(parents=True)
  (stale_before / "half" / "ratspain-rat1.array_record-00000-of-00001").write_bytes(b"half")

  path = pathlib.Path(build.prepare("synthetic_mini", data_dir=os.fspath(dd)))
  assert path == config_dir / "1.0.0" and (path / "dataset_info.json").is_file()
  assert not stale_before.exists()

  # A build killed later (e.g. an overwrite), next to the finished build: the
  # next prepare (which reuses the build) removes it, and only it.
  stale = config_dir / "incomplete.XYZ789_1.0.0"
  stale.mkdir()
  (stale / "dataset_info.json").write_text("{}")
  kept = [
    config_dir / "incomplete.ABC123_2.0.0",  # a version not built here: maybe still running
    config_dir / "incomplete.abc123_1.0.0",  # not TFDS's pattern
    config_dir / "incomplete.ABC1234_1.0.0",
    config_dir / "incomplete_ABC123_1.0.0",
    config_dir / "notes",
    dd / "ratspain" / "real" / "incomplete.ABC123_1.0.0",  # another config
  ]
  for d in kept:
    d.mkdir(parents=True)
  kept_file = config_dir / "incomplete.QQQ111_1.0.0.txt"
  kept_file.write_text("a file")
  finished = sorted(_files_under(path))

  assert build.prepare("synthetic_mini", data_dir=os.fspath(dd)) == os.fspath(path)
  assert not stale.exists()
  assert all(d.is_dir() for d in kept), [d for d in kept if not d.is_dir()]
  assert kept_file.is_file()
  assert sorted(_files_under(path)) == finished
  source = tfds.data_source("ratspain/synthetic_mini", data_dir=os.fspath(dd), split="rat1")
  assert len(source) == 12


def test_a_second_process_waits_for_the_first_build_and_reuses_it(
  tmp_path, mini_data_dir, monkeypatch
):
  """Workers starting at once on a fresh data dir (benchmarks/parallel_workdir.sh) build the
  data set once: one holds the build lock, the others wait for it, then reuse its build (two
  concurrent TFDS builds of one config crashed one of them)."""
  import threading

  from tfds_ratspain.ratspain import ratspain_dataset_builder as rb

  dd = os.fspath(tmp_path / "data")
  built = []
  monkeypatch.setattr(rb.Builder, "download_and_prepare", lambda *a, **k: built.append(1))
  result = {}
  with build.build_lock(build._open("synthetic_mini", dd)):  # the first worker, building
    waiting = threading.Thread(
      target=lambda: result.setdefault("path", build.prepare("synthetic_mini", data_dir=dd))
    )
    waiting.start()
    waiting.join(timeout=2)
    assert waiting.is_alive() and not result  # blocked on the lock
    shutil.copytree(  # the first worker's finished build
      os.path.join(mini_data_dir, "ratspain", "synthetic_mini"),
      os.path.join(dd, "ratspain", "synthetic_mini"),
    )
  waiting.join(timeout=60)
  assert result["path"] == os.path.join(dd, "ratspain", "synthetic_mini", "1.0.0")
  assert built == []  # reused, not built again
