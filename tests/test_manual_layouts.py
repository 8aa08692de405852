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

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import tfds_ratspain  # noqa: F401  (registers the ratspain builder)
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
    _case_csv_au_out_of_range,
    _case_tree_file_under_rat,
    _case_empty_dir,
    _case_only_junk_files,
    _case_missing_dir,
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
