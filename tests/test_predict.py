"""`painseeker train-final` / `painseeker predict` end to end, on the real face crops
(tests/data/real_samples, CC BY 4.0, see the README there) with tiny trained models."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REAL_SAMPLES, ROOT, crash_on_batch, mini_config
from PIL import Image

from painseeker_jax import cli, export, inference, input_pipeline, layout, predict, train
from painseeker_jax import loro as loro_lib
from painseeker_jax.scales import SCALES

SAMPLES = sorted(f for f in os.listdir(REAL_SAMPLES) if f.endswith(".jpg"))
CONFIG_FILE = os.path.join(ROOT, "configs", "loro.py")


def _cli(*argv):
  return cli.main([str(a) for a in argv])


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _predict(out_csv, model, *paths, extra=()):
  return _cli("predict", "--model", model, "--output", out_csv, "--no-progress", *extra, *paths)


def _train_variables(config, workdir, held_out):
  """A fold's variables as the trainer restores them (independent of export.py)."""
  split = input_pipeline.fold_splits(held_out)[0]
  src = input_pipeline.get_sources(config.dataset, [split], config.data_dir)[split]
  return train.train_fold(
    train.make_trainer(config), workdir, held_out, src, input_pipeline.labelled_indices(src)
  )


def _reference_p(config, variables, paths):
  """p_pain of the evaluation pipeline: decode_resize + normalize + the model."""
  model = inference.make_model(config)
  images = np.stack(
    [input_pipeline.decode_resize(open(p, "rb").read(), config.image_size) for p in paths]
  )
  return np.asarray(inference.p_pain(model, variables, images)[0])


@pytest.fixture(scope="module")
def final(mini_data_dir, tmp_path_factory):
  """A model directory from `train-final` on synthetic_mini (tiny trunk, 64 px)."""
  root = tmp_path_factory.mktemp("final")
  workdir, model_dir = root / "work", root / "model"
  rc = _cli(
    "train-final",
    f"--config={CONFIG_FILE}:synthetic_mini",
    f"--config.data_dir={mini_data_dir}",
    "--config.progress=False",
    "--config.input.num_threads=2",
    "--workdir",
    workdir,
    "--output",
    model_dir,
  )
  assert rc == 0
  config = mini_config(mini_data_dir)
  return {"model": str(model_dir), "workdir": str(workdir), "config": config}


@pytest.fixture(scope="module")
def loro(mini_data_dir, tmp_path_factory):
  """A finished two-fold LORO work directory and its fold variables."""
  workdir = str(tmp_path_factory.mktemp("loro") / "run")
  config = mini_config(mini_data_dir, folds=(1, 2))
  loro_lib.run_loro(config, workdir)
  return {
    "workdir": workdir,
    "config": config,
    "variables": [_train_variables(config, workdir, k) for k in (1, 2)],
  }


@pytest.fixture
def samples(tmp_path):
  """The nine real crops, some in a sub-folder (recursion)."""
  d = tmp_path / "faces"
  (d / "sub").mkdir(parents=True)
  for i, name in enumerate(SAMPLES):
    shutil.copy(os.path.join(REAL_SAMPLES, name), d / ("sub" if i % 2 else "") / name)
  return d


def _make_video(path, n=10, fps=5, size=(96, 80), codec="mpeg4"):
  import av

  face = Image.open(os.path.join(REAL_SAMPLES, SAMPLES[3])).convert("RGB").resize(size)
  with av.open(str(path), "w") as c:
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
    for i in range(n):
      a = np.asarray(face).copy()
      a[:16, :16] = 25 * i % 256  # frames differ
      for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
        c.mux(pkt)
    for pkt in s.encode():
      c.mux(pkt)


def test_help_lists_the_commands():
  r = subprocess.run(
    [sys.executable, "-m", "painseeker_jax", "--help"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    check=True,
  )
  assert "train-final" in r.stdout and "predict" in r.stdout


def test_model_directory_is_self_contained(final):
  meta = json.load(open(os.path.join(final["model"], "model.json")))
  assert meta["format"] == "painseeker-model" and meta["format_version"] == export.FORMAT_VERSION
  assert meta["class_names"] == ["no_pain", "pain"] and meta["image_size"] == 64
  assert tuple(meta["normalization"]["mean_rgb"]) == inference.MEAN_RGB
  assert tuple(meta["normalization"]["std_rgb"]) == inference.STD_RGB
  assert meta["model"] == {"name": "painseeker", "size": "tiny"}
  assert meta["training"]["split"] == "rat1+rat2+rat3+rat4+rat5+rat6"
  # A copy elsewhere loads without the work directory; same variables as the trainer's.
  copy = shutil.copytree(final["model"], os.path.join(os.path.dirname(final["model"]), "copy"))
  loaded = export.load(copy)
  assert not loaded.is_ensemble and loaded.image_size == 64 and loaded.num_regions == 4
  ref = _train_variables(final["config"], final["workdir"], 0)
  import jax

  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(loaded.variables[0]), strict=True):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_images_csv_and_heatmaps(final, samples, tmp_path, capsys):
  out, maps = tmp_path / "scores.csv", tmp_path / "maps"
  assert _predict(out, final["model"], samples, extra=("--heatmaps", maps, "--batch-size", 4)) == 0
  rows = _rows(out)
  assert list(rows[0]) == [
    *("path", "frame", "time_s", "animal", "p_pain", "label", "skipped", "error"),
    *("box_x", "box_y", "box_w", "box_h", "sharpness", "exposure", "heatmap"),
  ]
  assert all(r["skipped"] == "" and r["animal"] == "" and float(r["sharpness"]) > 0 for r in rows)
  assert sorted(os.path.basename(r["path"]) for r in rows) == SAMPLES
  for r in rows:
    assert r["error"] == "" and r["frame"] == "" and r["time_s"] == ""
    p = float(r["p_pain"])
    assert 0 <= p <= 1 and r["label"] == ("pain" if p > 0.5 else "no_pain")
    png = Image.open(maps / r["heatmap"])
    assert png.format == "PNG" and png.size == (224, 224)
  assert len(os.listdir(maps)) == 9
  # Same numbers as the evaluation pipeline (decode_resize + normalize + model).
  loaded = export.load(final["model"])
  ref = _reference_p(final["config"], loaded.variables[0], [r["path"] for r in rows])
  np.testing.assert_allclose([float(r["p_pain"]) for r in rows], ref, atol=2e-6)
  console = capsys.readouterr().out
  assert "scored 9 image(s)" in console and "mean p_pain" in console
  assert f"{np.mean(ref):.4f}" in console


def test_ensemble_is_the_mean_of_the_fold_models(loro, samples, tmp_path, capsys):
  out = tmp_path / "ens.csv"
  assert _predict(out, loro["workdir"], samples) == 0
  assert "ensemble of 2 LORO fold models (rat1, rat2)" in capsys.readouterr().out
  rows = _rows(out)
  paths = [r["path"] for r in rows]
  per_model = [_reference_p(loro["config"], v, paths) for v in loro["variables"]]
  assert not np.allclose(per_model[0], per_model[1])  # two different models
  np.testing.assert_allclose([float(r["p_pain"]) for r in rows], np.mean(per_model, 0), atol=2e-6)


def test_video_rows_timestamps_plot(final, tmp_path):
  video = tmp_path / "rat.mp4"
  _make_video(video)  # 10 frames at 5 fps
  out = tmp_path / "v.csv"
  assert (
    _predict(out, final["model"], video, extra=("--every-frames", 3, "--heatmaps", tmp_path / "m"))
    == 0
  )
  rows = _rows(out)
  assert [int(r["frame"]) for r in rows] == [0, 3, 6, 9]
  np.testing.assert_allclose([float(r["time_s"]) for r in rows], [0, 0.6, 1.2, 1.8], atol=1e-6)
  assert all(r["error"] == "" and r["p_pain"] for r in rows)
  assert [r["heatmap"] for r in rows] == [f"rat_f{i:06d}.png" for i in (0, 3, 6, 9)]
  plot = tmp_path / "v_rat_p_pain.png"
  assert Image.open(plot).format == "PNG"
  # Every second: frames 0 and 5 (t = 0 s, 1 s).
  out2 = tmp_path / "v2.csv"
  assert _predict(out2, final["model"], video, extra=("--every-seconds", 1)) == 0
  rows2 = _rows(out2)
  assert [(int(r["frame"]), float(r["time_s"])) for r in rows2] == [(0, 0.0), (5, 1.0)]
  assert rows2[0]["p_pain"] == rows[0]["p_pain"]  # the same frame, the same score


def test_crop_box(final, tmp_path):
  face = Image.open(os.path.join(REAL_SAMPLES, SAMPLES[0])).convert("RGB")
  face.save(tmp_path / "face.png")
  canvas = Image.new("RGB", (face.width + 70, face.height + 50), (30, 90, 30))
  canvas.paste(face, (40, 20))
  canvas.save(tmp_path / "cage.png")
  out1, out2 = tmp_path / "a.csv", tmp_path / "b.csv"
  assert _predict(out1, final["model"], tmp_path / "face.png") == 0
  box = f"40,20,{face.width},{face.height}"
  assert _predict(out2, final["model"], tmp_path / "cage.png", extra=("--crop", box)) == 0
  assert _rows(out1)[0]["p_pain"] == _rows(out2)[0]["p_pain"]
  # A box outside the image is an error of that file.
  out3 = tmp_path / "c.csv"
  assert _predict(out3, final["model"], tmp_path / "face.png", extra=("--crop", "0,0,9999,10")) == 1
  assert "outside the image" in _rows(out3)[0]["error"]


def test_image_modes_and_formats(final, tmp_path):
  src = Image.open(os.path.join(REAL_SAMPLES, SAMPLES[4])).convert("RGB")
  d = tmp_path / "modes"
  d.mkdir()
  gray = src.convert("L")
  gray.save(d / "gray.png")
  src.convert("RGBA").save(d / "rgba.png")
  src.convert("CMYK").save(d / "cmyk.jpg")
  Image.fromarray(np.asarray(gray, np.uint16) * 257).save(d / "gray16.png")
  src.save(d / "img.bmp")
  src.save(d / "img.tiff")
  src.save(d / "img.webp", lossless=True)
  upright = src.transpose(Image.Transpose.ROTATE_90)
  upright.save(d / "upright.png")
  exif = Image.Exif()
  exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
  src.transpose(Image.Transpose.ROTATE_180).save(d / "exif.jpg", exif=exif, quality=100)
  out = tmp_path / "modes.csv"
  assert _predict(out, final["model"], d) == 0
  rows = _rows(out)
  assert len(rows) == 9 and all(r["error"] == "" and r["p_pain"] for r in rows)
  size = 64
  load = lambda name: predict.load_image(str(d / name), size).astype(int)  # noqa: E731
  assert np.abs(load("gray16.png") - load("gray.png")).max() <= 1
  assert np.abs(load("exif.jpg") - load("upright.png")).mean() < 3
  assert np.abs(load("exif.jpg") - load("upright.png")[:, ::-1]).mean() > 10  # orientation matters
  assert np.array_equal(load("img.bmp"), load("img.tiff")) and np.array_equal(
    load("img.bmp"), load("img.webp")
  )


def test_bad_inputs_are_recorded_and_the_run_goes_on(final, tmp_path, capsys):
  d = tmp_path / "mixed"
  d.mkdir()
  shutil.copy(os.path.join(REAL_SAMPLES, SAMPLES[0]), d / "good.jpg")
  (d / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
  raw = open(os.path.join(REAL_SAMPLES, SAMPLES[1]), "rb").read()
  (d / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
  (d / "broken.mp4").write_bytes(b"not a video at all" * 50)
  (d / "notes.txt").write_text("skipped: not an image")
  (tmp_path / "empty").mkdir()
  out = tmp_path / "bad.csv"
  rc = _predict(
    out,
    final["model"],
    d,
    tmp_path / "empty",
    tmp_path / "missing.png",
    str(tmp_path / "nothing*.jpg"),
    str(d / "*.txt"),
  )
  assert rc == 1
  rows = {os.path.basename(r["path"]): r for r in _rows(out)}
  assert set(rows) == {
    "good.jpg",
    "corrupt.jpg",
    "truncated.jpg",
    "broken.mp4",
    "empty",
    "missing.png",
    "nothing*.jpg",
    "*.txt",
  }
  assert rows["good.jpg"]["error"] == "" and rows["good.jpg"]["p_pain"]
  for name, words in [
    ("corrupt.jpg", "not a readable image"),
    ("truncated.jpg", "cannot decode"),
    ("broken.mp4", "not a readable video"),
    ("empty", "empty folder"),
    ("missing.png", "no such file"),
    ("nothing*.jpg", "no file matches"),
    ("*.txt", "1 file(s) match (e.g. " + str(d / "notes.txt") + ") but none is an image"),
  ]:
    assert rows[name]["p_pain"] == "" and words in rows[name]["error"], name
    assert rows[name]["error"].startswith(rows[name]["path"])  # names the file
  err = capsys.readouterr().err
  assert "corrupt.jpg" in err and "broken.mp4" in err
  assert "7 input(s) failed" in err


def test_bad_model_directories(final, tmp_path, capsys):
  other = shutil.copytree(final["model"], tmp_path / "v99")
  meta = json.load(open(other / "model.json"))
  meta["format_version"] = 99
  (other / "model.json").write_text(json.dumps(meta))
  img = os.path.join(REAL_SAMPLES, SAMPLES[0])
  assert _predict(tmp_path / "a.csv", other, img) == 2
  err = capsys.readouterr().err
  assert str(other / "model.json") in err and "format version 99" in err
  assert not (tmp_path / "a.csv").exists()
  broken = shutil.copytree(final["model"], tmp_path / "broken")
  (broken / "variables.msgpack").write_bytes(b"\x00garbage")
  assert _predict(tmp_path / "b.csv", broken, img) == 2
  assert "variables.msgpack" in capsys.readouterr().err
  from flax import serialization

  no_stats = {"params": {"fc": {"bias": np.zeros(2, np.float32)}}, "opt_state": {}}
  (broken / "variables.msgpack").write_bytes(serialization.msgpack_serialize(no_stats))
  assert _predict(tmp_path / "b2.csv", broken, img) == 2
  assert "variables.msgpack: does not hold params and batch_stats" in capsys.readouterr().err
  (tmp_path / "nomodel").mkdir()
  assert _predict(tmp_path / "c.csv", tmp_path / "nomodel", img) == 2
  assert "neither a model directory" in capsys.readouterr().err
  unfinished = tmp_path / "unfinished"
  unfinished.mkdir()
  (unfinished / "config.json").write_text(final["config"].to_json())
  assert _predict(tmp_path / "d.csv", unfinished, img) == 2
  assert "has not finished" in capsys.readouterr().err


def test_never_overwrites_without_the_flag(final, tmp_path, capsys):
  img = os.path.join(REAL_SAMPLES, SAMPLES[0])
  out = tmp_path / "s.csv"
  out.write_text("precious\n")
  assert _predict(out, final["model"], img) == 2
  assert "already exists" in capsys.readouterr().err and out.read_text() == "precious\n"
  assert _predict(out, final["model"], img, extra=("--overwrite",)) == 0
  assert len(_rows(out)) == 1
  maps = tmp_path / "maps"
  maps.mkdir()
  (maps / "old.png").write_bytes(b"x")
  assert _predict(tmp_path / "t.csv", final["model"], img, extra=("--heatmaps", maps)) == 2
  assert "--overwrite" in capsys.readouterr().err
  # train-final refuses an existing model directory before training anything.
  assert (
    _cli("train-final", f"--config={CONFIG_FILE}:synthetic_mini", "--output", final["model"]) == 2
  )
  assert "already exists" in capsys.readouterr().err


def test_a_crash_keeps_the_rows_done(final, samples, tmp_path, monkeypatch):
  crash_on_batch(monkeypatch)
  out = tmp_path / "partial.csv"
  with pytest.raises(RuntimeError, match="simulated crash"):
    _predict(out, final["model"], samples, extra=("--batch-size", 2))
  rows = _rows(tmp_path / "partial.csv.partial")  # renamed to --output only at the end
  assert len(rows) == 2 and all(r["p_pain"] for r in rows) and not out.exists()


# `python -m painseeker_jax` in this interpreter, then the modules it loaded (sys.argv set before).
_RUN_MAIN_AND_LIST_IMPORTS = """
import runpy
try:
  runpy.run_module("painseeker_jax", run_name="__main__", alter_sys=True)
  rc = 0
except SystemExit as e:
  rc = e.code
bad = sorted({m.split(".")[0] for m in sys.modules}
             & {"tensorflow", "tensorflow_datasets", "tfds_ratspain"}
             | set(sys.modules) & {"painseeker_jax.train", "painseeker_jax.loro",
                                   "painseeker_jax.multi_run", "painseeker_jax.input_pipeline"})
print("BAD", bad)
sys.exit(rc or bool(bad))
"""


def test_predict_imports_no_tensorflow(final, tmp_path):
  """`python -m painseeker_jax predict` (run as such in a fresh interpreter) loads neither
  TensorFlow, TFDS, the data set code (tfds_ratspain) nor the trainer."""
  argv = [
    "painseeker",
    "predict",
    "--model",
    final["model"],
    "--output",
    str(tmp_path / "x.csv"),
    "--no-progress",
    os.path.join(REAL_SAMPLES, SAMPLES[0]),
  ]
  code = f"import sys\nsys.argv = {argv!r}\n" + _RUN_MAIN_AND_LIST_IMPORTS
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
  assert r.returncode == 0, r.stdout + r.stderr
  assert "BAD []" in r.stdout
  assert len(_rows(tmp_path / "x.csv")) == 1


def test_preprocessing_has_one_definition(final, loro):
  """Model directories and LORO ensembles both normalise with inference.MEAN_RGB/STD_RGB."""
  for path in (final["model"], loro["workdir"]):
    loaded = export.load(path)
    assert (loaded.mean_rgb, loaded.std_rgb) == (inference.MEAN_RGB, inference.STD_RGB)


def test_video_sampling_rule(tmp_path, capsys):
  assert predict.video_sampling(None, None) == (1.0, None)  # the default: every second
  assert predict.video_sampling(0.5, None) == (0.5, None)
  assert predict.video_sampling(None, 3) == (None, 3)
  for every_s, every_f, words in [
    (1.0, 2, "not both"),
    (0.0, None, "must be > 0"),
    (None, 0, "must be >= 1"),
  ]:
    with pytest.raises(predict.UsageError, match=words):
      predict.video_sampling(every_s, every_f)
  # The command: a usage error (status 2) before the model is even looked at; nothing written.
  out = tmp_path / "s.csv"
  both = ("--every-seconds", 1, "--every-frames", 2)
  rc = _predict(out, tmp_path / "no_model", "x.png", extra=both)
  assert rc == 2 and not out.exists()
  assert "error: give --every-seconds or --every-frames, not both" in capsys.readouterr().err
  assert _predict(out, tmp_path / "no_model", "x.png", extra=("--every-frames", 0)) == 2
  assert "--every-frames 0: must be >= 1" in capsys.readouterr().err


def test_missing_output_folder_says_how_to_make_it(tmp_path, capsys):
  """A usage error (before the model is looked at) that names the folder and what to do."""
  img = os.path.join(REAL_SAMPLES, SAMPLES[0])
  folder = tmp_path / "new results"
  assert _predict(folder / "s.csv", tmp_path / "no_model", img) == 2
  err = capsys.readouterr().err
  assert f"{folder}: the folder for --output does not exist; create it (mkdir -p '{folder}')" in err
  assert "or give --output a path in an existing folder" in err
  assert not folder.exists()


def test_a_rerun_after_an_interrupted_run_names_its_partial_csv(tmp_path, capsys):
  """A killed run leaves <output>.partial and heat maps: every refusal of the rerun names the
  partial CSV and says that --overwrite starts over; without it, the refusals are as before."""
  img = os.path.join(REAL_SAMPLES, SAMPLES[0])
  out, maps = tmp_path / "scores.csv", tmp_path / "maps"
  partial = tmp_path / "scores.csv.partial"
  maps.mkdir()
  (maps / "label0_sample0.png").write_bytes(b"png")
  no_model = tmp_path / "no_model"  # the refusals come before the model is read
  assert _predict(out, no_model, img, extra=("--heatmaps", maps)) == 2
  before = capsys.readouterr().err
  assert f"{maps} already holds files; use --overwrite" in before and ".partial" not in before
  partial.write_text("path,p_pain\n")
  starts_over = f"--overwrite starts over (every input is scored again; it replaces {partial}"
  assert _predict(out, no_model, img, extra=("--heatmaps", maps)) == 2
  err = capsys.readouterr().err
  assert f"{maps} already holds files; use --overwrite" in err
  assert f"An interrupted run left {partial} (the rows it scored): {starts_over}" in err
  assert f"and the heat maps of the same names in {maps}); to keep the rows" in err
  assert _predict(out, no_model, img) == 2  # no heat maps: the partial CSV itself
  err = capsys.readouterr().err
  assert f"{partial} (the rows an interrupted run wrote for --output {out}) already exists" in err
  assert starts_over in err and "heat maps" not in err
  out.write_text("earlier\n")  # an earlier output, then a killed rerun
  assert _predict(out, no_model, img) == 2
  err = capsys.readouterr().err
  assert f"{out} already exists; use --overwrite to replace it. An interrupted run left" in err
  assert starts_over in err
  assert out.read_text() == "earlier\n" and partial.read_text() == "path,p_pain\n"


def test_a_path_that_differs_only_in_case_is_named(tmp_path):
  """`V0.JPG` not found while `v0.jpg` exists (Linux file names are case-sensitive): the error
  row names the existing file; a folder's case too."""
  (tmp_path / "faces").mkdir()
  shutil.copy(os.path.join(REAL_SAMPLES, SAMPLES[0]), tmp_path / "faces" / "v0.jpg")
  hint = "exists, its name differs only in upper/lower case"
  for given in ("faces/V0.JPG", "Faces/v0.jpg"):
    [src] = predict.collect_inputs([str(tmp_path / given)])
    assert src.kind == "error"
    assert src.error.startswith(f"{tmp_path / given}: no such file or folder; ")
    assert f"{tmp_path / 'faces' / 'v0.jpg'} {hint}" in src.error
  [src] = predict.collect_inputs([str(tmp_path / "faces" / "v1.jpg")])
  assert src.error == f"{tmp_path / 'faces' / 'v1.jpg'}: no such file or folder"


def test_helpers():
  assert predict.smooth([0, 0, 3, 0, 0], 3).tolist() == [0, 1, 1, 1, 0]
  with pytest.raises(ValueError, match="x,y,w,h"):
    predict.parse_crop("1,2,3")


# ---------------------------------------------------------------------------
# Issue #17: never write over an input; unusable model files; non-finite outputs.


def _snapshot(folder):
  """{relative path: bytes} of every file below `folder`."""
  out = {}
  for dirpath, _, files in os.walk(folder):
    for f in files:
      p = os.path.join(dirpath, f)
      out[os.path.relpath(p, folder)] = open(p, "rb").read()
  return out


def test_never_writes_over_an_input(final, samples, tmp_path, capsys):
  before = _snapshot(samples)
  face = samples / SAMPLES[0]
  refused = "refusing to write over an input (with or without --overwrite)"
  cases = [
    # The heat maps into the input folder itself, or into a folder inside it.
    (
      tmp_path / "a.csv",
      ("--heatmaps", samples, "--overwrite"),
      [samples],
      f"--heatmaps {samples} is the input folder {samples}",
    ),
    (
      tmp_path / "b.csv",
      ("--heatmaps", samples / "sub" / "maps", "--overwrite"),
      [samples],
      f"--heatmaps {samples / 'sub' / 'maps'} lies inside the input folder {samples}",
    ),
    # The CSV onto an input image (named as such, or through a symbolic link).
    (face, ("--overwrite",), [face], f"--output {face} is the input {face}"),
    (tmp_path / "link.csv", ("--overwrite",), [samples], f"is the input {face}"),
  ]
  os.symlink(face, tmp_path / "link.csv")
  for out, extra, inputs, words in cases:
    assert _predict(out, final["model"], *inputs, extra=extra) == 2, words
    err = capsys.readouterr().err
    assert words in err and refused in err, err
  assert not any((tmp_path / n).exists() for n in ("a.csv", "b.csv"))
  assert not (samples / "sub" / "maps").exists()
  # A heat-map folder holding an input file (named explicitly; or a hard link to one).
  single = tmp_path / "single"
  single.mkdir()
  shutil.copy(face, single / "x.png")
  assert (
    _predict(tmp_path / "c.csv", final["model"], single / "x.png", extra=("--heatmaps", single))
    == 2
  )
  assert f"--heatmaps {single} holds the input {single / 'x.png'}" in capsys.readouterr().err
  maps = tmp_path / "maps"
  maps.mkdir()
  os.link(face, maps / "old.png")
  rc = _predict(
    tmp_path / "d.csv", final["model"], samples, extra=("--heatmaps", maps, "--overwrite")
  )
  assert rc == 2
  assert f"holds the input {face} (as old.png)" in capsys.readouterr().err
  # A video's time-course plot onto an input image.
  video = tmp_path / "rat.mp4"
  _make_video(video, n=3)
  plot = tmp_path / "e_rat_p_pain.png"
  Image.open(face).save(plot)
  plot_bytes = plot.read_bytes()
  rc = _predict(tmp_path / "e.csv", final["model"], video, plot, extra=("--overwrite",))
  assert rc == 2
  assert f"{plot} (the time-course plot of {video}) is the input {plot}" in capsys.readouterr().err
  assert plot.read_bytes() == plot_bytes and not (tmp_path / "e.csv").exists()
  assert _snapshot(samples) == before and (maps / "old.png").read_bytes() == face.read_bytes()
  # Allowed: heat maps in a folder above an input folder that holds no input itself.
  data = tmp_path / "data"
  shutil.copytree(samples / "sub", data / "faces")
  assert (
    _predict(
      tmp_path / "f.csv", final["model"], data / "faces", extra=("--heatmaps", data, "--overwrite")
    )
    == 0
  )
  assert len(_rows(tmp_path / "f.csv")) == 4 and len(os.listdir(data)) == 5


def _copy_with_variables(model_dir, dest, change):
  """A copy of a model directory with its variables changed by `change(variables)`."""
  from flax import serialization

  d = shutil.copytree(model_dir, dest)
  v = serialization.msgpack_restore((d / "variables.msgpack").read_bytes())
  change(v)
  (d / "variables.msgpack").write_bytes(serialization.msgpack_serialize(v))
  return d


def _copy_with_meta(model_dir, dest, change):
  """A copy of a model directory with model.json changed by `change(meta)`."""
  d = shutil.copytree(model_dir, dest)
  meta = json.load(open(d / "model.json"))
  change(meta)
  (d / "model.json").write_text(json.dumps(meta))
  return d


def _first_var_path(variables):
  """The first BatchNorm running variance of a variables tree, as `batch_stats/.../var`."""
  import jax

  paths = ["/".join(k.key for k in p) for p, _ in jax.tree_util.tree_leaves_with_path(variables)]
  return next(p for p in paths if p.startswith("batch_stats/") and p.endswith("/var"))


def test_model_with_non_finite_parameters_or_bad_normalization_is_refused(final, tmp_path, capsys):
  import jax

  img = os.path.join(REAL_SAMPLES, SAMPLES[0])

  def nan_bias(v):
    v["params"]["fc"]["bias"] = np.array([np.nan, 0.0], np.float32)

  nan_model = _copy_with_variables(final["model"], tmp_path / "nan", nan_bias)
  assert _predict(tmp_path / "a.csv", nan_model, img) == 2
  err = capsys.readouterr().err
  assert f"{nan_model / 'variables.msgpack'}: params/fc/bias holds 1 non-finite value(s)" in err
  assert not (tmp_path / "a.csv").exists()
  with pytest.raises(export.ModelLoadError, match="params/fc/bias"):
    export.load(nan_model)

  loaded = export.load(final["model"])
  var_path = _first_var_path(loaded.variables[0])

  def negative_var(v):
    node = v
    for k in var_path.split("/")[:-1]:
      node = node[k]
    node["var"] = -np.abs(np.asarray(node["var"])) - 1

  neg = _copy_with_variables(final["model"], tmp_path / "neg", negative_var)
  assert _predict(tmp_path / "b.csv", neg, img) == 2
  assert f"{var_path} holds" in capsys.readouterr().err

  for name, field, value, words in [
    ("std0", "std_rgb", [0.229, 0.0, 0.225], "must be > 0"),
    ("stdnan", "std_rgb", [0.229, float("nan"), 0.225], "holds nan"),
    ("meaninf", "mean_rgb", [0.485, float("inf"), 0.406], "holds inf"),
    ("meanstr", "mean_rgb", [0.485, "x", 0.406], "holds 'x'"),
  ]:
    bad = _copy_with_meta(
      final["model"],
      tmp_path / name,
      lambda m, f=field, x=value: m["normalization"].__setitem__(f, x),
    )
    assert _predict(tmp_path / f"{name}.csv", bad, img) == 2, name
    err = capsys.readouterr().err
    assert f"{bad / 'model.json'}: normalization.{field}" in err and words in err, err
    assert not (tmp_path / f"{name}.csv").exists()

  # Export refuses such variables before writing anything.
  nan_vars = jax.tree.map(np.array, loaded.variables[0])
  nan_vars["params"]["fc"]["kernel"][0, 0] = np.inf
  with pytest.raises(export.ModelLoadError, match="the variables to export: params/fc/kernel"):
    export.save_model(str(tmp_path / "exported"), final["config"], nan_vars)
  assert not (tmp_path / "exported").exists()


def test_loro_fold_with_non_finite_parameters_is_refused(loro, tmp_path, capsys):
  import jax
  import orbax.checkpoint as ocp

  from painseeker_jax import layout

  workdir = shutil.copytree(loro["workdir"], tmp_path / "run")
  mngr = layout.checkpoint_manager(str(workdir), 2)
  step = mngr.latest_step()
  restored = mngr.restore(step, args=ocp.args.StandardRestore())
  params = jax.tree.map(np.array, restored["params"])
  params["region_score"]["kernel"][:] = np.nan
  state = {"params": params, "batch_stats": restored["batch_stats"]}
  mngr.save(step + 1, args=ocp.args.StandardSave(state), force=True)
  mngr.wait_until_finished()
  mngr.close()
  img = os.path.join(REAL_SAMPLES, SAMPLES[0])
  assert _predict(tmp_path / "a.csv", workdir, img) == 2
  err = capsys.readouterr().err
  where = f"{layout.checkpoint_dir(str(workdir), 2)}/{step + 1}"
  assert f"{where}: params/region_score/kernel holds" in err and "non-finite" in err, err
  assert not (tmp_path / "a.csv").exists()


def test_non_finite_outputs_are_row_errors(final, samples, tmp_path, capsys, monkeypatch):
  # Finite parameters whose logits overflow: both logits +inf, softmax NaN for every input.
  big = np.finfo(np.float32).max

  def overflow(v):
    v["params"]["fc"]["kernel"] = np.full_like(np.asarray(v["params"]["fc"]["kernel"]), big)
    v["params"]["fc"]["bias"] = np.full_like(np.asarray(v["params"]["fc"]["bias"]), big)

  model = _copy_with_variables(final["model"], tmp_path / "overflow", overflow)
  video = tmp_path / "rat.mp4"
  _make_video(video, n=3)
  out, maps = tmp_path / "a.csv", tmp_path / "maps"
  rc = _predict(out, model, samples, video, extra=("--heatmaps", maps, "--every-frames", 1))
  assert rc == 1
  rows = _rows(out)
  assert len(rows) == 9 + 3
  for r in rows:
    where = r["path"] if r["frame"] == "" else f"{r['path']}, frame {r['frame']}"
    assert r["error"] == (
      f"{where}: the network's output is not finite (p_pain = nan); no score or label given"
    )
    assert r["p_pain"] == r["label"] == r["heatmap"] == ""
  assert os.listdir(maps) == [] and not (tmp_path / "a_rat_p_pain.png").exists()
  captured = capsys.readouterr()
  assert "12 input(s) failed" in captured.err and "scored 0 frame(s)" in captured.out

  # One bad row in a batch: only that row is an error.
  real = predict.make_predict_fn

  def one_nan(loaded):
    fn = real(loaded)

    def wrapped(*a):
      p, p_F, beta, au = fn(*a)
      return np.asarray(p).copy() * np.array([np.nan] + [1.0] * (len(p) - 1)), p_F, beta, au

    return wrapped

  monkeypatch.setattr(predict, "make_predict_fn", one_nan)
  out2 = tmp_path / "b.csv"
  assert _predict(out2, final["model"], samples, extra=("--batch-size", 4)) == 1
  rows = _rows(out2)
  bad = [r for r in rows if r["error"]]
  assert len(bad) == 3  # the first image of each batch (4 + 4 + 1)
  assert all("not finite (p_pain = nan)" in r["error"] and r["label"] == "" for r in bad)
  assert all(r["label"] in ("pain", "no_pain") and r["p_pain"] for r in rows if not r["error"])
  assert "3 input(s) failed" in capsys.readouterr().err


def test_tampered_image_size_is_refused(final, tmp_path, capsys):
  img = os.path.join(REAL_SAMPLES, SAMPLES[0])
  cases = [
    (0, None, "image_size 0 is outside 16..4096 pixels"),
    (-64, None, "image_size -64 is outside 16..4096 pixels"),
    (100000, None, "image_size 100000 is outside 16..4096 pixels"),
    (64.5, None, "image_size 64.5 is not an integer"),
    ("64", None, "image_size '64' is not an integer"),
    (96, None, "image_size 96 differs from the training config's config.image_size 64"),
    # The training config edited to match: the number of attention regions gives it away.
    (96, 96, "image_size 96 gives K = 9 attention regions but num_regions is 4"),
  ]
  for i, (size, config_size, words) in enumerate(cases):

    def change(meta, size=size, config_size=config_size):
      meta["image_size"] = size
      if config_size is not None:
        meta["config"]["image_size"] = config_size

    bad = _copy_with_meta(final["model"], tmp_path / f"m{i}", change)
    assert _predict(tmp_path / f"{i}.csv", bad, img) == 2, words
    err = capsys.readouterr().err
    assert f"{bad / 'model.json'}: {words}" in err, err
    assert not (tmp_path / f"{i}.csv").exists()
  # The exported model itself passes (and so does every size the configs train at).
  assert export.load(final["model"]).num_regions == 4
  for size in (64, 96, 160, 224):
    assert export.check_image_size(size, "x") == size


# ---------------------------------------------------------------------------
# Issue #19: models with grimace-scale AU heads; models without them unchanged.
# Untrained tiny models (random AU heads), exported with export.save_model: no data set needed.

RGS = SCALES["rgs"]
PLAIN_HEADER = ",".join(predict.CSV_FIELDS) + "\n"
OLD_COLUMNS = ("path", "frame", "time_s", "p_pain", "label", "error")


def _tiny_config(**overrides):
  return mini_config("unused", **overrides)


def _init_variables(config, seed=0, au_bias_scale=0.0):
  """Initial variables of the config's model; the AU heads' biases drawn from N(0, scale)
  so that models (ensemble members) differ clearly in their AU scores."""
  import jax

  model = inference.make_model(config)
  x = np.zeros((1, config.image_size, config.image_size, 3), np.float32)
  v = model.init(jax.random.key(seed), x, train=False)
  v = jax.tree.map(np.array, {"params": v["params"], "batch_stats": v["batch_stats"]})
  if au_bias_scale:
    bias = v["params"]["au_fc"]["bias"]
    bias[:] = np.random.default_rng(seed).normal(0.0, au_bias_scale, bias.shape)
  return v


def _reference_outputs(config, variables, paths):
  """(p_pain_B, expected AU scores BxA) of one model, from `inference.outputs` directly."""
  model = inference.make_model(config)
  images = np.stack([predict.load_image(str(p), config.image_size) for p in paths])
  p, _, au_probs = inference.outputs(model, variables, images)
  return np.asarray(p), np.asarray(au_probs, np.float64) @ np.arange(3.0)


def _au_values(rows, names=RGS):
  return np.array([[float(r[n]) for n in names] for r in rows])


def test_au_heads_model_directory_and_csv_columns(tmp_path, capsys):
  config = _tiny_config(**{"loss.lambda_au": 1.0})
  variables = _init_variables(config, au_bias_scale=1.0)
  model_dir = export.save_model(str(tmp_path / "au_model"), config, variables)
  meta = json.load(open(os.path.join(model_dir, "model.json")))
  assert meta["scale"] == "rgs" and meta["au_names"] == list(RGS)
  loaded = export.load(model_dir)
  assert loaded.au_names == RGS and loaded.scale == "rgs"
  assert "RGS AU heads (au_orbital, au_ear, au_nose, au_whisker)" in loaded.describe()

  images = [os.path.join(REAL_SAMPLES, n) for n in SAMPLES[:5]]
  out, maps = tmp_path / "au.csv", tmp_path / "maps"
  assert _predict(out, model_dir, *images, extra=("--batch-size", 2, "--heatmaps", maps)) == 0
  rows = _rows(out)
  assert list(rows[0]) == [*predict.CSV_FIELDS, "heatmap", *RGS, "grimace_score"]
  au = _au_values(rows)
  assert all(len(r[n].split(".")[1]) == 4 for r in rows for n in [*RGS, "grimace_score"])
  assert ((au >= 0) & (au <= 2)).all() and au.std() > 0.05
  grimace = np.array([float(r["grimace_score"]) for r in rows])
  np.testing.assert_allclose(grimace, au.mean(1), atol=1e-4)
  ref_p, ref_au = _reference_outputs(config, loaded.variables[0], images)
  np.testing.assert_allclose([float(r["p_pain"]) for r in rows], ref_p, atol=2e-6)
  np.testing.assert_allclose(au, ref_au, atol=6e-5)
  np.testing.assert_allclose(grimace, ref_au.mean(1), atol=6e-5)
  console = capsys.readouterr().out
  assert f"mean grimace_score {ref_au.mean():.4f} (0..2, the mean expected score of 4 AUs" in (
    console
  )

  # model.json's AU fields must agree with the stored config.
  for name, field, value, words in [
    ("names", "au_names", ["au_orbital"], "au_names ['au_orbital'] differ from the AU heads"),
    ("scale", "scale", "mgs", "scale 'mgs' differs from the training config's config.scale"),
  ]:
    bad = _copy_with_meta(
      model_dir, tmp_path / name, lambda m, f=field, x=value: m.__setitem__(f, x)
    )
    with pytest.raises(export.ModelLoadError, match="the file was edited or damaged") as e:
      export.load(str(bad))
    assert f"{bad / 'model.json'}: {words}" in str(e.value)

  # A non-finite AU score makes its row an error, like a non-finite p_pain.
  def overflow(v):
    v["params"]["au_fc"]["bias"] = np.full_like(
      np.asarray(v["params"]["au_fc"]["bias"]), np.finfo(np.float32).max
    )
    v["params"]["au_fc"]["kernel"] = np.full_like(
      np.asarray(v["params"]["au_fc"]["kernel"]), np.finfo(np.float32).max
    )

  nan_au = _copy_with_variables(model_dir, tmp_path / "nan_au", overflow)
  assert _predict(tmp_path / "nan.csv", nan_au, images[0]) == 1
  (row,) = _rows(tmp_path / "nan.csv")
  assert "not finite (an AU score is NaN or inf)" in row["error"]
  assert row["p_pain"] == row["label"] == row["grimace_score"] == row["au_orbital"] == ""


def _fake_loro_workdir(workdir, config, fold_variables):
  """A finished LORO work directory holding the given fold variables (orbax checkpoints)."""
  import orbax.checkpoint as ocp

  layout.check_config(config, workdir)  # writes config.json
  for k, v in zip(config.folds, fold_variables):
    mngr = layout.checkpoint_manager(workdir, k)
    mngr.save(1, args=ocp.args.StandardSave(v))
    mngr.wait_until_finished()
    mngr.close()
  layout.write_json(layout.results_path(workdir), {})


def test_au_heads_ensemble_averages_the_level_probabilities(tmp_path, capsys):
  config = _tiny_config(**{"loss.lambda_au": 1.0, "folds": (1, 2)})
  members = [_init_variables(config, seed, au_bias_scale=1.5) for seed in (1, 2)]
  workdir = str(tmp_path / "run")
  _fake_loro_workdir(workdir, config, members)
  loaded = export.load(workdir)
  assert loaded.is_ensemble and loaded.au_names == RGS and loaded.members == ["rat1", "rat2"]
  images = [os.path.join(REAL_SAMPLES, n) for n in SAMPLES[3:7]]
  out = tmp_path / "ens.csv"
  assert _predict(out, workdir, *images) == 0
  console = capsys.readouterr().out
  assert "p_pain and the AU level probabilities are the means of theirs" in console
  rows = _rows(out)
  assert list(rows[0]) == [*predict.CSV_FIELDS, *RGS, "grimace_score"]
  per_model = [_reference_outputs(config, v, images) for v in members]
  assert np.abs(per_model[0][1] - per_model[1][1]).max() > 0.1  # two different models
  # The expectation of the mean level probabilities = the mean of the members' expectations.
  mean_au = np.mean([au for _, au in per_model], 0)
  np.testing.assert_allclose(_au_values(rows), mean_au, atol=6e-5)
  np.testing.assert_allclose([float(r["grimace_score"]) for r in rows], mean_au.mean(1), atol=6e-5)
  np.testing.assert_allclose(
    [float(r["p_pain"]) for r in rows], np.mean([p for p, _ in per_model], 0), atol=2e-6
  )


def test_plain_model_csv_and_summary_are_unchanged(tmp_path, capsys):
  """Without AU heads the CSV and console are exactly those of before the AU heads: a model
  whose classifier is zeroed (p_pain exactly 0.5), exported now and as an older model
  directory without `scale` / `au_names`."""
  config = _tiny_config()
  variables = _init_variables(config)
  for k in ("kernel", "bias"):
    variables["params"]["fc"][k][...] = 0.0
  model_dir = export.save_model(str(tmp_path / "plain"), config, variables)
  meta = json.load(open(os.path.join(model_dir, "model.json")))
  assert meta["scale"] == "rgs" and meta["au_names"] == []
  old = _copy_with_meta(model_dir, tmp_path / "old", lambda m: [m.pop("scale"), m.pop("au_names")])
  assert "au_names" not in json.load(open(old / "model.json"))
  video = tmp_path / "rat.mp4"
  _make_video(video, n=3)
  images = [os.path.join(REAL_SAMPLES, n) for n in SAMPLES[:2]]
  missing = str(tmp_path / "missing.png")
  expected = [(p, "", "", "0.500000", "no_pain", "") for p in images]
  expected += [(str(video), "0", "0.000000", "0.500000", "no_pain", "")]
  expected += [(str(video), "2", "0.400000", "0.500000", "no_pain", "")]
  expected += [(missing, "", "", "", "", f"{missing}: no such file or folder")]
  for directory in (model_dir, old):
    loaded = export.load(str(directory))
    assert loaded.au_names == () and loaded.scale is None
    assert loaded.describe() == f"model directory {loaded.source}; painseeker (tiny), 64 px input"
    out = tmp_path / f"{os.path.basename(directory)}.csv"
    assert _predict(out, directory, *images, video, missing, extra=("--every-frames", 2)) == 1
    assert out.read_text().startswith(PLAIN_HEADER)  # no AU columns
    assert [tuple(r[c] for c in OLD_COLUMNS) for r in _rows(out)] == expected
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("painseeker predict: scored 2 image(s), 2 frame(s) of 1 video(s)")
    stem = tmp_path / os.path.basename(directory)
    assert lines[2:] == [
      "  mean p_pain 0.5000; predicted pain: 0 of 4 (0.0%), threshold 0.5",
      f"  results: {out}",
      f"  session summary: {stem}_summary.csv, {stem}_summary.md",
      f"  time course of {video}: {stem}_rat_p_pain.png",
    ]


def test_a_model_trained_with_onednn_loads_where_onednn_is_unavailable(tmp_path, monkeypatch):
  """Which kernels trained a model does not change its weights: a model directory whose config
  says `conv=onednn` (one CPU) is scored with this machine's kernels (e.g. on a GPU)."""
  from painseeker_jax import models

  config = _tiny_config(**{"model.conv": "xla"})
  variables = _init_variables(config)
  config.model.conv = "onednn"
  model_dir = export.save_model(str(tmp_path / "onednn_model"), config, variables)
  assert json.load(open(os.path.join(model_dir, "model.json")))["config"]["model"]["conv"] == (
    "onednn"
  )
  asked = []
  real = models.resolve_conv

  def no_onednn(conv, dtype=None):
    asked.append(conv)
    if conv == "onednn":
      raise ValueError("config.model.conv='onednn' runs float32 convolutions on one CPU device")
    return "xla" if conv == "auto" else real(conv, dtype)

  monkeypatch.setattr(models, "resolve_conv", no_onednn)
  export.load(model_dir)
  assert asked == ["auto"]
  images = [os.path.join(REAL_SAMPLES, n) for n in SAMPLES[:2]]
  assert _predict(tmp_path / "out.csv", model_dir, *images) == 0
  model = inference.make_model(_tiny_config(**{"model.conv": "xla"}))
  batch = np.stack([predict.load_image(p, config.image_size) for p in images])
  p_pain = np.asarray(inference.outputs(model, variables, batch)[0])
  got = [float(r["p_pain"]) for r in _rows(tmp_path / "out.csv")]
  np.testing.assert_allclose(got, p_pain, atol=1e-5)
