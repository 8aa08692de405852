"""The `grimace` builder (a lab's own RGS/MGS-scored images) without TensorFlow.

Lab directories (labels.csv + images/) are written in tmp_path from small generated
images; they go through `manual.scan`, `build.prepare` and `tfds.data_source`. The
builder's own dummy data (tfds_ratspain/grimace/dummy_data) is built end to end.
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tfds_ratspain import __main__ as cli
from tfds_ratspain.grimace import build, manual
from tfds_ratspain.grimace import grimace_dataset_builder as gb
from tfds_ratspain.ratspain import synthetic

DUMMY = pathlib.Path(gb.__file__).parent / "dummy_data"
RGS_HEADER = "filename,animal_id,pain_level,au_orbital,au_ear,au_nose,au_whisker"
# Lines 2-4 (header = line 1): two animals, each labelled.
BASE_ROWS = ["a1.png,A,0,,,,", "a2.png,A,1,,,,", "b1.png,B,2,,,,"]

_seed = iter(range(1_000_000))


def _image(path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(next(_seed))
  Image.fromarray(rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)).save(path)


def _lab(tmp_path: pathlib.Path, rows: list[str], header: str = RGS_HEADER) -> pathlib.Path:
  """A lab directory with labels.csv; every relative filename it names gets an image."""
  md = tmp_path / "lab"
  (md / "images").mkdir(parents=True, exist_ok=True)
  text = "\n".join([header] + rows) + "\n"
  (md / "labels.csv").write_text(text, encoding="utf-8")
  for row in csv.DictReader(io.StringIO(text)):
    name = (row.get("filename") or "").strip()
    path = md / "images" / name
    if (
      name.lower().endswith((".png", ".jpg"))
      and ".." not in name
      and not os.path.isabs(name)
      and not os.path.lexists(path)
    ):
      _image(path)
  return md


def _untouched(data_dir: pathlib.Path) -> bool:
  return not data_dir.exists() or not any(data_dir.iterdir())


def _examples(data_dir, scale: str, split: str) -> dict[str, dict]:
  """filename -> example of one split of grimace/<scale>."""
  source = tfds.data_source(f"grimace/{scale}", data_dir=os.fspath(data_dir), split=split)
  out = {}
  for ex in source:
    out[ex["filename"].decode()] = ex
  assert len(out) == len(source)
  return out


# --------------------------------------------------------------------------
# Label rule, scales, split names
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "aus, label",
  [
    ((0, 0, 0, 0), 0),
    ((1, 0, -1, -1), 1),  # mean 0.5 -> 1 (half up; Python's round gives 0)
    ((2, 1), 2),  # mean 1.5 -> 2
    ((1, 0, 0), 0),  # 0.33
    ((1, 1, 0), 1),  # 0.67
    ((2, 1, 1, 1), 1),  # 1.25
    ((2, 2, 2, 1), 2),  # 1.75
    ((1, 1, 2, 1, 2), 1),  # 1.4 (MGS)
    ((2, 1, 1, 2, 2), 2),  # 1.6
    ((0, 1, 0, 0, 0), 0),  # 0.2
    ((-1, -1, -1, -1), -1),  # nothing scorable: unlabelled
    ((), -1),
  ],
)
def test_label_from_aus_rounds_half_up(aus, label):
  assert manual.label_from_aus(aus) == label


def test_label_from_aus_matches_ratspain_rule_for_four_known_aus():
  grid = np.stack(np.meshgrid(*[range(3)] * 4), -1).reshape(-1, 4)
  for aus in grid:
    assert manual.label_from_aus(aus) == synthetic.pain_level_from_au(aus)


def test_label_rule_in_scan(tmp_path):
  md = _lab(
    tmp_path,
    [
      "given.png,A,0,2,2,2,2",  # pain_level wins over the AUs
      "named.png,A,Severe,,,,",  # level names are accepted
      "half.png,A,,1,0,-1,",  # mean 0.5 -> 1
      "onefive.png,B,,2,1,,",  # mean 1.5 -> 2
      "third.png,B,,1,0,0,",  # 0.33 -> 0
      "none.png,B,,-1,,-1,",  # no pain_level, no AU: unlabelled
    ],
  )
  got = {r.filename: r for r in manual.scan(os.fspath(md), "rgs")}
  assert {k: r.pain_level for k, r in got.items()} == {
    "given.png": 0,
    "named.png": 2,
    "half.png": 1,
    "onefive.png": 2,
    "third.png": 0,
    "none.png": -1,
  }
  assert got["given.png"].au_scores == (2, 2, 2, 2)
  assert got["half.png"].au_scores == (1, 0, -1, -1)
  assert got["none.png"].split == "unlabelled" and got["none.png"].animal_id == "B"
  assert got["third.png"].split == "animal_B" and got["third.png"].line == 6


def test_scale_column_sets():
  assert manual.SCALES == {
    "rgs": ("au_orbital", "au_ear", "au_nose", "au_whisker"),
    "mgs": ("au_orbital", "au_nose", "au_cheek", "au_ear", "au_whisker"),
  }
  assert build.SCALES == ("rgs", "mgs")


def test_mgs_columns_in_any_order(tmp_path):
  md = _lab(
    tmp_path,
    ["1,x.png,0,1,2,,-1", "1,y.png,1,1,1,1,1", "2,z.png,,2,2,2,2"],
    header="animal_id,filename,au_cheek,au_whisker,au_orbital,au_ear,au_nose",
  )
  got = {r.filename: r for r in manual.scan(os.fspath(md), "mgs")}
  # (orbital, nose, cheek, ear, whisker)
  assert got["x.png"].au_scores == (2, -1, 0, -1, 1)
  assert got["x.png"].pain_level == 1  # (2 + 0 + 1) / 3 = 1
  assert got["y.png"].au_scores == (1, 1, 1, 1, 1)
  assert got["y.png"].split == "animal_1" and got["z.png"].split == "animal_2"
  with pytest.raises(manual.ManualDataError, match="au_cheek is an action unit of the mgs"):
    manual.scan(os.fspath(md), "rgs")


@pytest.mark.parametrize(
  "animal, split",
  [
    ("M12", "animal_M12"),
    ("rat-3", "animal_rat_3"),
    ("7", "animal_7"),
    ("F 7", "animal_F_7"),
    ("BALB/c#3", "animal_BALB_c_3"),
    ("Mäus.1", "animal_M_us_1"),
  ],
)
def test_split_names(animal, split):
  assert manual.split_name(animal) == split
  assert split.isascii() and all(c.isalnum() or c == "_" for c in split)


# --------------------------------------------------------------------------
# Bad input: stops before anything is written, names the line / column / file
# --------------------------------------------------------------------------


def _outside_link(md: pathlib.Path, name: str) -> None:
  target = md.parent / "outside.png"
  _image(target)
  (md / "images" / name).unlink()  # the image _lab made
  os.symlink(target, md / "images" / name)


def _outside_dir_link(md: pathlib.Path) -> None:
  (md.parent / "elsewhere").mkdir()
  _image(md.parent / "elsewhere" / "x.png")
  shutil.rmtree(md / "images" / "sub")  # the folder _lab made
  os.symlink(md.parent / "elsewhere", md / "images" / "sub")


def _corrupt(md: pathlib.Path, name: str) -> None:
  (md / "images" / name).write_bytes(b"not an image at all")


BAD = {
  # id: (rows after BASE_ROWS or a full row list, header, prepare hook, expected in message)
  "au_out_of_range": (["b2.png,B,,3,,,"], None, None, ["line 5", "au_orbital", "outside 0..2"]),
  "au_negative": (["b2.png,B,,,-2,,"], None, None, ["line 5", "au_ear", "outside 0..2"]),
  "au_not_integer": (["b2.png,B,,,1.5,,"], None, None, ["line 5", "au_ear", "not an integer"]),
  "au_text": (["b2.png,B,,,,x,"], None, None, ["line 5", "au_nose", "'x'"]),
  "unknown_column": (
    ["b2.png,B,1,,,,,n"],
    RGS_HEADER + ",notes",
    None,
    ["line 1", "notes", "rgs scale accepts", "au_whisker", "session", "condition"],
  ),
  "au_of_other_scale": (
    ["b2.png,B,1,,,,,1"],
    RGS_HEADER + ",au_cheek",
    None,
    ["line 1", "au_cheek", "mgs scale", "not of the rgs scale", "--scale=mgs"],
  ),
  "duplicate_column": (
    ["b2.png,B,1,,,,,1"],
    RGS_HEADER + ",au_ear",
    None,
    ["line 1", "au_ear", "twice"],
  ),
  "semicolons": (
    [["a1.png;A;0", "b1.png;B;1"]],
    "filename;animal_id;pain_level",
    None,
    ["labels.csv, line 1", "separated by semicolons", "must be comma-separated"],
  ),
  "tabs": (
    [["a1.png\tA\t0", "b1.png\tB\t1"]],
    "filename\tanimal_id\tpain_level",
    None,
    ["labels.csv, line 1", "separated by tabs", "must be comma-separated"],
  ),
  "missing_column": (
    [["a.png,0", "b.png,1"]],
    "filename,pain_level",
    None,
    ["line 1", "animal_id"],
  ),
  "one_animal": ([["a1.png,A,0,,,,", "a2.png,A,1,,,,"]], None, None, ["only one animal", "'A'"]),
  "animal_without_labels": (
    ["c1.png,C,,,,,", "c2.png,C,,-1,-1,-1,-1"],
    None,
    None,
    ["line(s) 5, 6", "animal 'C'", "no labelled image", "cannot be a test fold"],
  ),
  "dotdot": (["../top.png,B,1,,,,"], None, "top", ["line 5", "'../top.png'", "outside images/"]),
  "dotdot_inner": (["sub/../../top.png,B,1,,,,"], None, "top", ["line 5", "outside images/"]),
  "absolute": (["{abs},B,1,,,,"], None, "abs", ["line 5", "absolute path"]),
  "symlink_out": (
    ["link.png,B,1,,,,"],
    None,
    lambda md: _outside_link(md, "link.png"),
    ["line 5", "'link.png'", "symbolic link", "outside"],
  ),
  "symlinked_folder_out": (
    ["sub/x.png,B,1,,,,"],
    None,
    _outside_dir_link,
    ["line 5", "'sub/x.png'", "symbolic link"],
  ),
  "missing_file": (
    ["nothere.png,B,1,,,,"],
    None,
    lambda md: (md / "images" / "nothere.png").unlink(),
    ["line 5", "'nothere.png'", "not found"],
  ),
  "duplicate_filename": (["a1.png,B,1,,,,"], None, None, ["line 5", "line 2", "duplicate"]),
  "duplicate_filename_normalized": (
    ["./sub/../a1.png,B,1,,,,"],
    None,
    None,
    ["line 5", "line 2", "duplicate"],
  ),
  "duplicate_content": (
    ["copy.png,B,1,,,,"],
    None,
    lambda md: shutil.copyfile(md / "images" / "a2.png", md / "images" / "copy.png"),
    ["line 5", "line 3", "'copy.png'", "'a2.png'", "same image"],
  ),
  "empty_animal_id": (["b2.png, ,1,,,,"], None, None, ["line 5", "empty animal_id"]),
  "animal_id_too_long": (
    ["b2.png," + "x" * 65 + ",1,,,,"],
    None,
    None,
    ["line 5", "longer than 64 characters"],
  ),
  "pain_level_3": (["b2.png,B,3,,,,"], None, None, ["line 5", "pain_level", "'3'"]),
  "pain_level_text": (["b2.png,B,painful,,,,"], None, None, ["line 5", "pain_level", "painful"]),
  "too_many_fields": (["b2.png,B,1,,,,,"], None, None, ["line 5", "8 field(s)", "7"]),
  "too_few_fields": (["b2.png,B,1"], None, None, ["line 5", "3 field(s)", "7"]),
  "id_collision": (
    [["r1.png,rat-3,0,,,,", "r2.png,rat_3,1,,,,", "b1.png,B,1,,,,"]],
    None,
    None,
    ["lines 2 and 3", "'rat-3'", "'rat_3'", "animal_rat_3"],
  ),
  "id_collision_case": (
    [["r1.png,M12,0,,,,", "b1.png,B,1,,,,", "r2.png,m12,1,,,,"]],
    None,
    None,
    ["lines 2 and 4", "'M12'", "'m12'"],
  ),
  "corrupt_image": (
    ["bad.png,B,1,,,,"],
    None,
    lambda md: _corrupt(md, "bad.png"),
    ["line 5", "bad.png", "not a decodable image"],
  ),
  "unsupported_type": (
    ["notes.txt,B,1,,,,"],
    None,
    lambda md: (md / "images" / "notes.txt").write_text("x"),
    ["line 5", "unsupported file type .txt"],
  ),
  "not_utf8": (  # saved by a European Excel in Windows-1252
    ["b2.png,Bär,1,,,,"],
    None,
    lambda md: (md / "labels.csv").write_bytes(
      (md / "labels.csv").read_bytes().decode().encode("cp1252")
    ),
    ["labels.csv, line 5", "not UTF-8", "CSV UTF-8 (comma delimited)", "iconv"],
  ),
  "header_only": ([[]], None, None, ["labels.csv", "no rows"]),
  "no_labels_csv": (
    [],
    None,
    lambda md: (md / "labels.csv").unlink(),
    ["labels.csv", "missing"],
  ),
  "no_images_folder": (
    [],
    None,
    lambda md: shutil.rmtree(md / "images"),
    ["images", "folder missing"],
  ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_stops_before_writing(tmp_path, case):
  extra, header, hook, expected = BAD[case]
  rows = extra[0] if extra and isinstance(extra[0], list) else BASE_ROWS + extra
  absolute = tmp_path / "abs.png"
  rows = [r.replace("{abs}", os.fspath(absolute)) for r in rows]
  md = _lab(tmp_path, rows, header or RGS_HEADER)
  if hook == "top":
    _image(md / "top.png")  # exists, but outside images/
  elif hook == "abs":
    _image(absolute)
  elif hook is not None:
    hook(md)
  data_dir = tmp_path / "tfds"
  with pytest.raises(build.DataError) as e:
    build.prepare("rgs", os.fspath(md), data_dir=os.fspath(data_dir))
  message = str(e.value)
  for text in expected:
    assert text in message, (text, message)
  assert "invalid grimace manual directory" in message
  assert "Layout of a grimace manual directory" in message or case == "corrupt_image"
  assert _untouched(data_dir), list(data_dir.rglob("*"))


def test_rows_of_only_commas_are_skipped(tmp_path):
  """The empty rows a spreadsheet leaves at the end (",,,,,,") are skipped like blank lines."""
  md = _lab(tmp_path, BASE_ROWS + [",,,,,,", " ,, ,,,,", ",,,,,,"])
  assert [r.filename for r in manual.scan(os.fspath(md), "rgs")] == ["a1.png", "a2.png", "b1.png"]


def test_write_lab_dir_gets_the_mode_of_a_new_folder(tmp_path):
  """--out is renamed into place from a mkdtemp folder (0o700): it gets 0o777 less the umask,
  as a folder made by mkdir."""
  from tfds_ratspain.grimace import twin_lab_dir

  old = os.umask(0o022)
  try:
    twin_lab_dir.write(
      os.fspath(tmp_path / "lab"), 2, per_animal=2, unlabelled=0, image_size=32, num_workers=0
    )
  finally:
    os.umask(old)
  assert (tmp_path / "lab").stat().st_mode & 0o777 == 0o755
  assert (tmp_path / "lab" / "labels.csv").is_file()


def test_missing_manual_dir_and_unknown_scale(tmp_path):
  data_dir = tmp_path / "tfds"
  with pytest.raises(build.DataError, match="missing"):
    build.prepare("rgs", os.fspath(tmp_path / "nope"), data_dir=os.fspath(data_dir))
  with pytest.raises(build.DataError, match="unknown grimace scale 'fgs'"):
    build.prepare("fgs", os.fspath(DUMMY / "rgs"), data_dir=os.fspath(data_dir))
  assert _untouched(data_dir)


# --------------------------------------------------------------------------
# Builds (array_record, read with tfds.data_source)
# --------------------------------------------------------------------------


def test_prepare_rgs_dummy_data(tmp_path):
  data_dir = tmp_path / "tfds"
  path = build.prepare("rgs", os.fspath(DUMMY / "rgs"), data_dir=os.fspath(data_dir))
  assert path == os.fspath(data_dir / "grimace" / "rgs" / "1.0.0")
  assert any(".array_record" in n for n in os.listdir(path))
  b = build.builder("rgs", os.fspath(data_dir))
  expected = {"animal_M12": "M12", "animal_rat_3": "rat-3", "animal_F_7": "F 7"}
  assert build.animal_ids(b) == expected
  assert b.info.metadata["au_names"] == list(manual.SCALES["rgs"])
  assert list(b.info.splits) == [*expected, "unlabelled"]
  assert {s: b.info.splits[s].num_examples for s in b.info.splits} == {
    "animal_M12": 2,
    "animal_rat_3": 2,
    "animal_F_7": 2,
    "unlabelled": 2,
  }
  m12 = _examples(data_dir, "rgs", "animal_M12")
  ex = m12["M12/day1_002.png"]  # AUs 1,0,-,- -> mean 0.5 -> moderate
  assert ex["pain_level"] == 1 and ex["pain"] == 1
  assert ex["au_scores"].dtype == np.int32 and list(ex["au_scores"]) == [1, 0, -1, -1]
  assert ex["animal_id"] == b"M12" and ex["session"] == b"day 1" and ex["condition"] == b"saline"
  assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
  assert m12["M12/day1_001.jpg"]["image"].shape[1:] == (207, 3)  # a real RatsPain crop
  f7 = _examples(data_dir, "rgs", "animal_F_7")
  assert f7["F 7.png"]["pain_level"] == 1  # pain_level given: wins over AUs 2,2,2,2
  assert f7["f7_b.jpg"]["pain_level"] == 0 and f7["f7_b.jpg"]["pain"] == 0
  assert f7["F 7.png"]["session"] == b"" and f7["F 7.png"]["condition"] == b""
  rat3 = _examples(data_dir, "rgs", "animal_rat_3")
  assert rat3["rat-3/postop_4h.jpg"]["pain_level"] == 2  # mean 1.5 -> severe
  assert rat3["rat-3/baseline.png"]["condition"] == b"surgery, buprenorphine"
  unlabelled = _examples(data_dir, "rgs", "unlabelled")
  assert set(unlabelled) == {"M12/day2_001.png", "unscored_1.png"}
  for ex in unlabelled.values():
    assert ex["pain_level"] == -1 and ex["pain"] == -1
    assert list(ex["au_scores"]) == [-1, -1, -1, -1]
  assert unlabelled["unscored_1.png"]["animal_id"] == b"F 7"
  # Every example's animal_id matches its split's entry in the metadata.
  for split, animal in expected.items():
    assert {e["animal_id"].decode() for e in _examples(data_dir, "rgs", split).values()} == {animal}


def test_prepare_mgs_dummy_data(tmp_path):
  data_dir = tmp_path / "tfds"
  build.prepare("mgs", os.fspath(DUMMY / "mgs"), data_dir=os.fspath(data_dir))
  b = build.builder("mgs", os.fspath(data_dir))
  assert build.animal_ids(b) == {
    "animal_C57_1": "C57-1",
    "animal_C57_2": "C57-2",
    "animal_BALB_c_3": "BALB/c#3",
  }
  assert b.info.features["au_scores"].shape == (5,)
  balb = _examples(data_dir, "mgs", "animal_BALB_c_3")
  # CSV order whisker,ear,cheek,nose,orbital = 1,1,0,0,- -> (orbital,nose,cheek,ear,whisker)
  assert list(balb["balb_3_a.png"]["au_scores"]) == [-1, 0, 0, 1, 1]
  assert balb["balb_3_a.png"]["pain_level"] == 1  # mean 0.5
  assert balb["balb_3_c.jpg"]["pain_level"] == 2  # severe given
  assert balb["balb_3_a.png"]["animal_id"] == b"BALB/c#3"
  c57 = _examples(data_dir, "mgs", "animal_C57_2")
  assert c57["c57_2_postop.png"]["image"].shape == (32, 32, 3)  # grayscale PNG -> RGB
  assert c57["c57_2_postop.png"]["pain_level"] == 2  # 1.6
  assert len(tfds.data_source("grimace/mgs", data_dir=os.fspath(data_dir), split="unlabelled")) == 1


def test_a_failed_rebuild_keeps_the_old_build(tmp_path, monkeypatch):
  """--overwrite sets the finished build aside while the new one is made: a rebuild that fails
  half-way (here a full disk) puts it back, and a good rebuild leaves no copy behind."""
  data_dir = tmp_path / "tfds"
  path = build.prepare("rgs", os.fspath(DUMMY / "rgs"), data_dir=os.fspath(data_dir))
  before = _examples(data_dir, "rgs", "animal_F_7")
  real = tfds.core.DatasetBuilder.download_and_prepare

  def full_disk(self, *args, **kwargs):
    os.makedirs(self.data_dir, exist_ok=True)
    pathlib.Path(self.data_dir, "half_written").write_text("x")
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", full_disk)
  with pytest.raises(OSError, match="No space left"):
    build.prepare("rgs", os.fspath(DUMMY / "rgs"), data_dir=os.fspath(data_dir), overwrite=True)
  assert not os.path.exists(os.path.join(path, "half_written"))
  assert _examples(data_dir, "rgs", "animal_F_7").keys() == before.keys()
  assert build.prepare("rgs", os.fspath(DUMMY / "rgs"), data_dir=os.fspath(data_dir)) == path

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", real)
  assert (
    build.prepare("rgs", os.fspath(DUMMY / "rgs"), data_dir=os.fspath(data_dir), overwrite=True)
    == path
  )
  assert not [n for n in os.listdir(data_dir) if n.endswith(".replaced")]
  assert _examples(data_dir, "rgs", "animal_F_7").keys() == before.keys()


# --------------------------------------------------------------------------
# A build is keyed by the manual directory's state
# --------------------------------------------------------------------------


def test_stale_build_is_refused_until_overwrite(tmp_path):
  md = tmp_path / "lab"
  shutil.copytree(DUMMY / "rgs", md)  # copy2: keeps modification times
  data_dir = tmp_path / "tfds"
  path = build.prepare("rgs", os.fspath(md), data_dir=os.fspath(data_dir))
  info = pathlib.Path(path) / "dataset_info.json"
  stamp = info.stat().st_mtime_ns
  # Same state (also a copy that keeps times, and an unlisted new file): reused.
  copy = tmp_path / "copy"
  shutil.copytree(md, copy)
  (copy / "images" / "not_in_csv.txt").write_text("ignored")
  assert build.prepare("rgs", os.fspath(copy), data_dir=os.fspath(data_dir)) == path
  assert info.stat().st_mtime_ns == stamp

  # A changed label: refused, the old build is kept and the fix is given.
  csv_path = md / "labels.csv"
  csv_path.write_text(csv_path.read_text().replace("F 7.png,F 7,moderate", "F 7.png,F 7,severe"))
  with pytest.raises(build.DataError) as e:
    build.prepare("rgs", os.fspath(md), data_dir=os.fspath(data_dir))
  message = str(e.value)
  assert "now differs" in message and os.fspath(md) in message
  assert "build-grimace --scale=rgs" in message and "--overwrite" in message
  assert info.stat().st_mtime_ns == stamp
  assert _examples(data_dir, "rgs", "animal_F_7")["F 7.png"]["pain_level"] == 1

  # overwrite with an invalid directory: refused before the old build is deleted.
  with (md / "labels.csv").open("a") as f:
    f.write("ghost.png,M12,1,,,,,,\n")
  with pytest.raises(build.DataError, match="ghost.png"):
    build.prepare("rgs", os.fspath(md), data_dir=os.fspath(data_dir), overwrite=True)
  assert info.stat().st_mtime_ns == stamp
  csv_path.write_text("".join(csv_path.read_text().splitlines(True)[:-1]))

  # overwrite: rebuilt from the new state.
  assert build.prepare("rgs", os.fspath(md), data_dir=os.fspath(data_dir), overwrite=True) == path
  assert _examples(data_dir, "rgs", "animal_F_7")["F 7.png"]["pain_level"] == 2
  assert build.prepare("rgs", os.fspath(md), data_dir=os.fspath(data_dir)) == path

  # A replaced image (same name, new time) makes it stale too.
  image = md / "images" / "f7_b.jpg"
  st = image.stat()
  os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  with pytest.raises(build.DataError, match="now differs"):
    build.prepare("rgs", os.fspath(md), data_dir=os.fspath(data_dir))
  # Another lab directory entirely: refused as well.
  with pytest.raises(build.DataError, match="now differs"):
    build.prepare("rgs", os.fspath(DUMMY / "rgs"), data_dir=os.fspath(data_dir))


def test_fingerprint_tracks_what_the_build_reads(tmp_path):
  md = _lab(tmp_path, BASE_ROWS)
  fp = manual.fingerprint(os.fspath(md))
  assert fp == manual.fingerprint(os.fspath(md))
  (md / "images" / "unlisted.png").write_bytes(b"x")
  assert manual.fingerprint(os.fspath(md)) == fp
  _image(md / "images" / "a1.png")  # rewritten: new content and time
  assert manual.fingerprint(os.fspath(md)) != fp


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def test_cli_build_grimace(tmp_path, capsys):
  data_dir = tmp_path / "tfds"
  md = _lab(tmp_path, BASE_ROWS + ["b2.png,B,,1,1,2,"])
  args = ["build-grimace", "--scale=rgs", f"--manual_dir={md}", f"--data_dir={data_dir}"]
  assert cli.main(args) == 0
  assert "grimace/rgs is ready in" in capsys.readouterr().out
  assert len(tfds.data_source("grimace/rgs", data_dir=os.fspath(data_dir), split="animal_B")) == 2

  bad = _lab(tmp_path / "bad", BASE_ROWS + ["b2.png,B,,1,7,2,"])
  bad_dir = tmp_path / "tfds_bad"
  args = ["build-grimace", "--scale=rgs", f"--manual_dir={bad}", f"--data_dir={bad_dir}"]
  assert cli.main(args) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "line 5" in err and "au_ear" in err
  assert _untouched(bad_dir)


def test_tfrecord_build_is_reported(tmp_path):
  pytest.importorskip("tensorflow", reason="writing TFRecord files needs TensorFlow")
  data_dir = tmp_path / "tfds"
  b = gb.Builder(config="rgs", data_dir=os.fspath(data_dir), file_format="tfrecord")
  b.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(DUMMY / "rgs"))
  )
  with pytest.raises(build.DataError, match="tfrecord") as e:
    build.prepare("rgs", os.fspath(DUMMY / "rgs"), data_dir=os.fspath(data_dir))
  assert "--overwrite" in str(e.value)
  path = build.prepare(
    "rgs", os.fspath(DUMMY / "rgs"), data_dir=os.fspath(data_dir), overwrite=True
  )
  assert any(".array_record" in n for n in os.listdir(path))
