"""`painseeker predict --boxes`: a cage video rendered from the twin (tfds_ratspain/cage_video.py)
with its DeepLabCut, SLEAP and box-CSV tracking files; the quality gate; the session summary.

The model is an untrained tiny PainSeeker (the boxes, rows and summaries are what is tested,
not the scores)."""

import csv
import dataclasses
import io
import os
import shutil

import numpy as np
import pytest
from conftest import REAL_SAMPLES, crash_on_batch, mini_config
from PIL import Image, ImageFilter

from painseeker_jax import cli, export, inference, predict, predict_report, quality, stats, tracking
from tfds_ratspain import cage_video

FACE_PX = 112


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _predict(out_csv, model, *paths, extra=()):
  argv = ["predict", "--model", model, "--output", out_csv, "--no-progress", *extra, *paths]
  return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  import jax

  config = mini_config("unused")
  net = inference.make_model(config)
  x = np.zeros((1, config.image_size, config.image_size, 3), np.float32)
  v = jax.jit(lambda key: net.init(key, x, train=False))(jax.random.key(0))  # one compile
  v = {"params": v["params"], "batch_stats": v["batch_stats"]}
  return export.save_model(str(tmp_path_factory.mktemp("m") / "model"), config, v)


@pytest.fixture(scope="module")
def cage(tmp_path_factory):
  """Two rats over 10 frames (320x240, 5 fps): frame 3 blurred, frame 6 dark, rat2 away at 8."""
  d = tmp_path_factory.mktemp("cage")
  scene = cage_video.make_scene(
    num_frames=10, face_px=FACE_PX, num_animals=2, blurred=[3], dark=[6], away={1: [8]}
  )
  video = str(d / "cage.mp4")
  cage_video.write_video(video, scene.frames, scene.fps)
  files = {
    "dlc_h5": str(d / f"cage{cage_video.SCORER}.h5"),
    "dlc_csv": str(d / f"cage{cage_video.SCORER}.csv"),
    "sleap": str(d / "labels.v001.000_cage.analysis.h5"),
    "csv": str(d / "cage_boxes.csv"),
  }
  cage_video.write_deeplabcut(files["dlc_h5"], scene)
  cage_video.write_deeplabcut(files["dlc_csv"], scene)
  cage_video.write_sleap(files["sleap"], scene)
  cage_video.write_box_csv(files["csv"], scene, "cage.mp4")
  return {"dir": d, "video": video, "scene": scene, **files}


def _iou(a, b):
  ax, ay, aw, ah = a
  bx, by, bw, bh = b
  w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
  h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
  return w * h / (aw * ah + bw * bh - w * h)


def _by_frame_animal(rows):
  return {(int(r["frame"]), r["animal"]): r for r in rows}


@pytest.mark.parametrize("kind", ["dlc_h5", "dlc_csv", "sleap", "csv"])
def test_boxes_from_each_format_follow_the_face(model, cage, tmp_path, kind):
  out = tmp_path / "cage.csv"
  rc = _predict(out, model, cage["video"], extra=("--boxes", cage[kind], "--every-frames", 1))
  assert rc == 0
  rows = _by_frame_animal(_rows(out))
  scene = cage["scene"]
  assert set(rows) == {(f, a) for f in range(10) for a in scene.animals}  # one row per animal
  expected = tracking.keypoints_to_boxes(
    scene.keypoints, scene.likelihood, min_likelihood=0.6, min_keypoints=3
  )
  for (f, animal), r in rows.items():
    a = scene.animals.index(animal)
    if f == 8 and animal == "rat2":  # away: no box, no score
      assert r["skipped"] == "no_face" and r["p_pain"] == "" and r["box_x"] == ""
      continue
    box = [int(r[k]) for k in ("box_x", "box_y", "box_w", "box_h")]
    truth = scene.face_boxes[f, a]
    if kind == "csv":  # a detector's box is used as given
      assert box == [int(v) for v in truth]
    else:  # the keypoint box (to the pixel), over the pasted face
      want = tracking.clip_box(expected[f, a], 320, 240)
      assert np.abs(np.subtract(box, want)).max() <= 1, (f, animal, box, want)
      assert _iou(box, truth) > 0.8, (f, animal, box, truth)
    if f == 3:
      assert r["skipped"] == "blurred" and r["p_pain"] == "", r
    elif f == 6:
      assert r["skipped"] == "dark" and r["p_pain"] == "", r
    else:
      assert r["skipped"] == "" and r["p_pain"] and r["error"] == "", r
      assert float(r["sharpness"]) >= quality.DEFAULT_MIN_SHARPNESS
      assert float(r["exposure"]) >= quality.DEFAULT_MIN_EXPOSURE


def test_a_tracked_row_scores_the_pixels_of_its_box(model, cage, tmp_path):
  """The row of (frame 0, rat1) has the p_pain of the same frame scored with --crop <its box>."""
  out = tmp_path / "tracked.csv"
  extra = ("--boxes", cage["sleap"], "--every-frames", 1)
  assert _predict(out, model, cage["video"], extra=extra) == 0
  row = _by_frame_animal(_rows(out))[(0, "rat1")]
  box = ",".join(row[k] for k in ("box_x", "box_y", "box_w", "box_h"))
  out2 = tmp_path / "fixed.csv"
  assert _predict(out2, model, cage["video"], extra=("--crop", box, "--every-frames", 1)) == 0
  assert _rows(out2)[0]["p_pain"] == row["p_pain"]


def test_session_summary_and_plots_per_animal(model, cage, tmp_path, capsys):
  out, maps = tmp_path / "s.csv", tmp_path / "maps"
  extra = ("--boxes", cage["sleap"], "--every-frames", 1, "--heatmaps", maps)
  assert _predict(out, model, cage["video"], extra=extra) == 0
  rows = _rows(out)
  assert sorted(os.listdir(maps))[:2] == ["cage_f000000_rat1.png", "cage_f000000_rat2.png"]
  assert all(r["heatmap"] for r in rows if r["p_pain"])
  summary = {r["animal"]: r for r in _rows(tmp_path / "s_summary.csv")}
  assert set(summary) == {"rat1", "rat2"}
  for animal, s in summary.items():
    mine = [r for r in rows if r["animal"] == animal]
    p = [float(r["p_pain"]) for r in mine if r["p_pain"]]
    assert int(s["frames_sampled"]) == 10 and int(s["frames_scored"]) == len(p)
    assert int(s["skipped_blurred"]) == 1 and int(s["skipped_dark"]) == 1
    assert int(s["skipped_no_face"]) == (1 if animal == "rat2" else 0)
    assert float(s["mean_p_pain"]) == pytest.approx(np.mean(p), abs=1e-4)
    lo, hi = stats.block_bootstrap_mean_ci(p, block=int(s["block_samples"]))
    assert (float(s["ci95_low"]), float(s["ci95_high"])) == pytest.approx((lo, hi), abs=1e-4)
    assert float(s["share_pain"]) == pytest.approx(np.mean(np.array(p) > 0.5), abs=1e-4)
    assert Image.open(tmp_path / f"s_cage_{animal}_p_pain.png").format == "PNG"
  md = (tmp_path / "s_summary.md").read_text()
  assert "## " + cage["video"] + ", animal rat2" in md and "no_face 1" in md
  printed = capsys.readouterr().out
  assert "skipped (not scored, in no mean): no_face 1, blurred 2, dark 2" in printed
  assert "session summary:" in printed
  # A rerun without --overwrite refuses the existing summary before writing anything.
  for f in [out, *tmp_path.glob("s_cage_*_p_pain.png")]:
    os.remove(f)
  shutil.rmtree(maps)
  assert _predict(out, model, cage["video"], extra=("--boxes", cage["sleap"])) == 2
  assert "session summary) already exists" in capsys.readouterr().err and not out.exists()
  # An --overwrite rerun that scores no frame (all too blurred) draws no plot: an earlier
  # run's plot must not be left under its name, nor listed as this run's.
  plot = tmp_path / "s_cage_rat1_p_pain.png"
  plot.write_bytes(b"an earlier run's plot")
  blurred = ("--boxes", cage["sleap"], "--min-sharpness", 1e9, "--overwrite")
  assert _predict(out, model, cage["video"], extra=blurred) == 0
  assert not plot.exists()
  assert "time course" not in capsys.readouterr().out
  assert "time course" not in (tmp_path / "s_summary.md").read_text()


def test_au_means_in_the_session_summary(cage, tmp_path):
  import jax

  config = mini_config("unused", **{"loss.lambda_au": 1.0})
  net = inference.make_model(config)
  x = np.zeros((1, config.image_size, config.image_size, 3), np.float32)
  v = jax.jit(lambda key: net.init(key, x, train=False))(jax.random.key(1))
  model = export.save_model(str(tmp_path / "au"), config, dict(v))
  out = tmp_path / "au.csv"
  assert _predict(out, model, cage["video"], extra=("--boxes", cage["csv"])) == 0
  rows = _rows(out)
  names = [*export.load(model).au_names, "grimace_score"]
  for s in _rows(tmp_path / "au_summary.csv"):
    mine = [r for r in rows if r["animal"] == s["animal"] and r["p_pain"]]
    assert len(mine) == int(s["frames_scored"]) > 0
    for n in names:
      want = np.mean([float(r[n]) for r in mine])
      assert float(s[f"mean_{n}"]) == pytest.approx(want, abs=2e-4), n
  assert "AU means (0..2): au_orbital" in (tmp_path / "au_summary.md").read_text()


def test_boxes_for_images_from_a_csv(model, tmp_path, capsys):
  face = Image.open(os.path.join(REAL_SAMPLES, "label0_sample0.jpg")).convert("RGB")
  canvas = Image.new("RGB", (face.width + 60, face.height + 40), (40, 40, 40))
  canvas.paste(face, (50, 30))
  canvas.save(tmp_path / "cage.png")
  face.save(tmp_path / "face.png")
  box_csv = tmp_path / "boxes.csv"
  box_csv.write_text(f"image,x,y,w,h\ncage.png,50,30,{face.width},{face.height}\n")
  out = tmp_path / "img.csv"
  rc = _predict(
    out, model, tmp_path / "cage.png", tmp_path / "face.png", extra=("--boxes", box_csv)
  )
  assert rc == 0
  rows = {os.path.basename(r["path"]): r for r in _rows(out)}
  assert rows["face.png"]["skipped"] == "not_in_boxes"  # no row in the box file
  assert [rows["cage.png"][k] for k in ("box_x", "box_y")] == ["50", "30"]
  printed = capsys.readouterr().out
  assert "skipped (not scored, in no mean): not_in_boxes 1" in printed
  assert "not_in_boxes: 1 input image(s) have no row in the --boxes image CSV" in printed
  out2 = tmp_path / "plain.csv"
  assert _predict(out2, model, tmp_path / "face.png") == 0
  assert _rows(out2)[0]["p_pain"] == rows["cage.png"]["p_pain"]  # the same pixels scored


def _image_opts(tmp_path, *paths, **kw):
  return predict.Options(model="", output=str(tmp_path / "o.csv"), paths=list(paths), **kw)


def test_image_box_csv_rows_follow_min_likelihood_and_must_name_files(tmp_path, monkeypatch):
  face = Image.open(os.path.join(REAL_SAMPLES, "label0_sample0.jpg")).convert("RGB")
  (tmp_path / "imgs").mkdir()
  face.save(tmp_path / "imgs" / "a.png")
  a = str(tmp_path / "imgs" / "a.png")
  box_csv = tmp_path / "boxes.csv"
  box_csv.write_text("image,x,y,w,h,score\nimgs/a.png,10,20,100,90,0.5\n")
  sources = predict.collect_inputs([a])
  # A score below --min-likelihood is no face; the option is the cutoff (default 0.6).
  plan = predict.load_boxes(_image_opts(tmp_path, a, boxes=[str(box_csv)]), sources)
  assert plan.images == {os.path.realpath(a): []} and plan.files == [str(box_csv)]
  opts = _image_opts(tmp_path, a, boxes=[str(box_csv)], min_likelihood=0.4)
  assert predict.load_boxes(opts, sources).images == {
    os.path.realpath(a): [("", (10.0, 20.0, 100.0, 90.0))]
  }
  # Paths are read from the working directory, then from the CSV's folder.
  monkeypatch.chdir(tmp_path / "imgs")
  box_csv.write_text("image,x,y,w,h\na.png,1,2,30,40\n")
  assert list(predict.load_boxes(opts, sources).images) == [os.path.realpath(a)]
  # A row naming no file stops the run, naming the CSV and line (a lab whose paths do not
  # match would otherwise get a clean-looking run with nothing scored).
  box_csv.write_text("image,x,y,w,h\nimgs/a.png,1,2,30,40\nold/b.png,1,2,30,40\n")
  with pytest.raises(predict.UsageError) as e:
    predict.load_boxes(opts, sources)
  assert f"{box_csv}, line 3: the image 'old/b.png' is not found" in str(e.value)
  assert str(tmp_path / "imgs" / "old" / "b.png") in str(e.value)  # where it was looked for
  assert str(tmp_path / "old" / "b.png") in str(e.value)


def test_an_unrecognised_image_box_csv_says_what_header_it_needs(tmp_path):
  """With images only, a --boxes CSV that is not an image box CSV (';' as separator, a typo in
  the header) names the header it has and the one it needs, not "tracking files for videos"."""
  face = Image.open(os.path.join(REAL_SAMPLES, "label0_sample0.jpg")).convert("RGB")
  face.save(tmp_path / "v0.jpg")
  image = str(tmp_path / "v0.jpg")
  sources = predict.collect_inputs([image])
  needs = "one needs the header image,x,y,w,h (optional: animal, score)"
  box_csv = tmp_path / "semi.csv"

  def refusal(text):
    box_csv.write_text(text)
    with pytest.raises(predict.UsageError) as e:
      predict.load_boxes(_image_opts(tmp_path, image, boxes=[str(box_csv)]), sources)
    assert "no video is among the inputs" not in str(e.value)
    return str(e.value)

  err = refusal("image;x;y;w;h\nv0.jpg;1;2;30;40\n")  # European Excel
  assert err.startswith(f"--boxes {box_csv}: not a box CSV for images: its header is ")
  assert f"'image;x;y;w;h', but {needs}" in err
  assert "the separator must be a comma" in err and '"CSV UTF-8 (comma delimited)"' in err
  err = refusal("imgae,x,y,w,h\nv0.jpg,1,2,30,40\n")
  assert f"its header is 'imgae,x,y,w,h', but {needs}; it has no column image: correct" in err
  assert "separator" not in err
  assert "its first line is empty" in refusal("\nimage,x,y,w,h\nv0.jpg,1,2,30,40\n")
  # A tracking file for videos (here a box CSV keyed by frame) keeps its message.
  box_csv.write_text("frame,x,y,w,h\n0,1,2,30,40\n")
  with pytest.raises(predict.UsageError, match="tracking files for videos, but no video"):
    predict.load_boxes(_image_opts(tmp_path, image, boxes=[str(box_csv)]), sources)
  # A missing file says so.
  missing = str(tmp_path / "nope.csv")
  with pytest.raises(predict.UsageError, match=f"^{missing}: no such file"):
    predict.load_boxes(_image_opts(tmp_path, image, boxes=[missing]), sources)
  # A header in quotes is an image box CSV.
  box_csv.write_text('"image","x","y","w","h"\nv0.jpg,1,2,30,40\n')
  plan = predict.load_boxes(_image_opts(tmp_path, image, boxes=[str(box_csv)]), sources)
  assert plan.images == {os.path.realpath(image): [("", (1.0, 2.0, 30.0, 40.0))]}


def test_an_image_row_that_differs_only_in_case_names_the_file(tmp_path):
  face = Image.open(os.path.join(REAL_SAMPLES, "label0_sample0.jpg")).convert("RGB")
  face.save(tmp_path / "v0.jpg")
  image = str(tmp_path / "v0.jpg")
  box_csv = tmp_path / "boxes.csv"
  box_csv.write_text("image,x,y,w,h\nV0.JPG,1,2,30,40\n")
  opts = _image_opts(tmp_path, image, boxes=[str(box_csv)])
  with pytest.raises(predict.UsageError) as e:
    predict.load_boxes(opts, predict.collect_inputs([image]))
  assert f"{box_csv}, line 2: the image 'V0.JPG' is not found" in str(e.value)
  assert f"; {image} exists, its name differs only in upper/lower case" in str(e.value)


def test_videos_on_whole_frames_get_one_warning(model, cage, tmp_path, capsys):
  """A video scored with neither --boxes nor --crop: one warning per run naming the videos, and
  scored all the same (a face close-up is legitimate); none with --crop or for images."""
  other = tmp_path / "close_up.mp4"
  shutil.copy(cage["video"], other)
  out = tmp_path / "whole.csv"
  assert _predict(out, model, cage["video"], other) == 0
  err = capsys.readouterr().err
  assert err.count("warning") == 1, err
  assert f"warning: {cage['video']}, {other}: scored on whole frames (no --boxes, no --crop)" in err
  assert "give --boxes (a DeepLabCut or SLEAP tracking file, or a box CSV" in err
  assert "or --crop x,y,w,h" in err
  assert all(r["p_pain"] for r in _rows(out))
  crop = ("--crop", "100,60,112,112", "--overwrite")
  assert _predict(out, model, cage["video"], extra=crop) == 0
  assert "warning" not in capsys.readouterr().err
  assert _predict(out, model, os.path.join(REAL_SAMPLES, "label0_sample0.jpg"), extra=crop[2:]) == 0
  assert "warning" not in capsys.readouterr().err


def test_box_files_are_inputs_never_outputs(model, cage, tmp_path, capsys):
  """--boxes files (also the FILE of VIDEO=FILE) are inputs: no output replaces them, with or
  without --overwrite; nothing is written."""
  refused = "refusing to write over an input (with or without --overwrite)"
  face = Image.open(os.path.join(REAL_SAMPLES, "label0_sample0.jpg")).convert("RGB")
  face.save(tmp_path / "a.png")
  image_boxes = tmp_path / "boxes.csv"
  image_boxes.write_text("image,x,y,w,h\na.png,0,0,100,100\n")
  video_boxes = tmp_path / "track.csv"
  shutil.copy(cage["csv"], video_boxes)
  summary = tmp_path / "s_summary.csv"
  shutil.copy(cage["csv"], summary)
  before = {f: f.read_bytes() for f in (image_boxes, video_boxes, summary)}
  video = cage["video"]
  cases = [
    (image_boxes, tmp_path / "a.png", image_boxes, f"--output {image_boxes} is the input"),
    (video_boxes, video, f"{video}={video_boxes}", f"--output {video_boxes} is the input"),
    (tmp_path / "s.csv", video, f"cage.mp4={summary}", f"{summary} (the session summary) is"),
  ]
  for out, source, boxes, words in cases:
    assert _predict(out, model, source, extra=("--boxes", boxes, "--overwrite")) == 2, words
    err = capsys.readouterr().err
    assert words in err and "(a --boxes file)" in err and refused in err, err
  assert {f: f.read_bytes() for f in before} == before
  assert not (tmp_path / "s.csv").exists()
  assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_box_csv_frames_beyond_the_video_are_refused(model, cage, tmp_path, capsys):
  """A box CSV is checked against the video's stated frame count as it is read (a `frame`
  column of timestamps would otherwise make a huge table)."""
  boxes = tmp_path / "ms.csv"
  boxes.write_text("frame,x,y,w,h\n0,10,10,100,100\n400,10,10,100,100\n")
  out = tmp_path / "ms_out.csv"
  assert _predict(out, model, cage["video"], extra=("--boxes", f"cage.mp4={boxes}")) == 2
  err = capsys.readouterr().err
  assert f"{boxes}, line 3: column `frame` is '400'" in err and "has 10 frames" in err
  assert not out.exists()


def test_a_video_level_error_counts_in_every_animal(tmp_path):
  """An error of a whole video (no frame, no animal: decoding failed part-way, the tracking
  file does not fit) counts in the summary of each of its animals; an image's in none."""
  out, video = tmp_path / "r.csv", "/v/cage.mp4"
  plots = predict_report.plot_paths(str(out), [(video, "rat1"), (video, "rat2")])
  report = predict_report.Report(
    str(out),
    overwrite=False,
    heatmaps=None,
    plots=plots,
    class_names=["no_pain", "pain"],
    ensemble=False,
    total=4,
    progress=False,
    out=io.StringIO(),
    err=io.StringIO(),
  )
  try:
    items = []
    for animal in ("rat1", "rat2"):
      row = predict_report.new_row(video, 0, 0.0, animal=animal)
      row["skipped"] = "no_face"
      items.append(predict_report.Item(row))
    items.append(predict_report.Item(predict_report.new_row(video, error=f"{video}: failed")))
    items.append(predict_report.Item(predict_report.new_row("/i/a.png", error="/i/a.png: bad")))
    items.append(predict_report.Item(None, video_end=video))
    report.write(items)
    report.finish()
  finally:
    report.close()
  summary = {r["animal"]: r for r in _rows(tmp_path / "r_summary.csv")}
  assert {a: (r["errors"], r["frames_sampled"]) for a, r in summary.items()} == {
    "rat1": ("1", "2"),
    "rat2": ("1", "2"),
  }
  assert (tmp_path / "r_summary.md").read_text().count("errors 1") == 2
  assert report.summary() == 1 and report.num_errors == 2


def test_an_interrupted_run_keeps_the_earlier_output(model, tmp_path, monkeypatch, capsys):
  """The CSV is written to <output>.partial and renamed at the end: a crash keeps the rows done
  there (and says so) and leaves the earlier output whole; heat maps and the CSV replace
  earlier files by renaming, never by writing into them (a hard link to one keeps it)."""
  faces = tmp_path / "faces"
  faces.mkdir()
  for name in ("label0_sample0.jpg", "label1_sample0.jpg", "label2_sample0.jpg"):
    shutil.copy(os.path.join(REAL_SAMPLES, name), faces / name)
  out, partial = tmp_path / "scores.csv", tmp_path / "scores.csv.partial"
  out.write_text("precious\n")
  crash_on_batch(monkeypatch)
  with pytest.raises(RuntimeError, match="simulated crash"):
    _predict(out, model, faces, extra=("--batch-size", 1, "--overwrite"))
  assert out.read_text() == "precious\n"
  rows = _rows(partial)
  assert len(rows) == 1 and rows[0]["p_pain"]
  err = capsys.readouterr().err
  assert f"the rows done so far are in {partial} ({out} left as it was)" in err
  # The partial file is an output: a rerun without --overwrite refuses it, as the CSV.
  out.unlink()
  assert _predict(out, model, faces) == 2
  assert f"{partial} (the rows an interrupted run wrote" in capsys.readouterr().err
  monkeypatch.undo()  # the network scores every batch again
  # A finished run renames: files linked to the earlier CSV and heat map keep their bytes.
  out.write_text("precious\n")
  maps = tmp_path / "maps"
  maps.mkdir()
  (tmp_path / "keep.png").write_bytes(b"old")
  os.link(tmp_path / "keep.png", maps / "label0_sample0.png")
  os.link(out, tmp_path / "keep.csv")
  assert _predict(out, model, faces, extra=("--overwrite", "--heatmaps", maps)) == 0
  assert len(_rows(out)) == 3 and not partial.exists()
  assert (tmp_path / "keep.csv").read_text() == "precious\n"
  assert (tmp_path / "keep.png").read_bytes() == b"old"
  assert Image.open(maps / "label0_sample0.png").format == "PNG"
  assert sorted(os.listdir(maps)) == [f"label{k}_sample0.png" for k in range(3)]  # no temporary


def test_cage_video_demo_refuses_existing_files(tmp_path, capsys):
  """The demo writes into --out only with --overwrite when its files exist there, each through
  a temporary name (an interrupted writer leaves the earlier file)."""
  argv = ["--out", str(tmp_path), "--frames", "3", "--width", "160", "--height", "120"]
  argv += ["--face_px", "64"]
  (tmp_path / "cage_boxes.csv").write_text("mine\n")
  assert cage_video.main(argv) == 2
  err = capsys.readouterr().err
  assert str(tmp_path / "cage_boxes.csv") in err and "--overwrite" in err
  assert os.listdir(tmp_path) == ["cage_boxes.csv"]
  assert (tmp_path / "cage_boxes.csv").read_text() == "mine\n"
  assert cage_video.main(argv + ["--overwrite"]) == 0
  assert sorted(os.listdir(tmp_path)) == sorted(cage_video.OUTPUT_NAMES)  # no temporary left
  tracks = tracking.read_tracks(str(tmp_path / "cage_boxes.csv"), video="cage.mp4")
  assert tracks.num_frames == 3
  video = tmp_path / "cage.mp4"
  before = video.read_bytes()
  frame = Image.new("RGB", (160, 120))
  with pytest.raises((AttributeError, TypeError, ValueError)):
    cage_video.write_video(str(video), [frame, None], 5.0)  # fails after the first frame
  assert video.read_bytes() == before
  assert sorted(os.listdir(tmp_path)) == sorted(cage_video.OUTPUT_NAMES)


def test_quality_gate_on_images(model, tmp_path):
  face = Image.open(os.path.join(REAL_SAMPLES, "label1_sample0.jpg")).convert("RGB")
  face.save(tmp_path / "sharp.png")
  face.filter(ImageFilter.GaussianBlur(face.width / 40)).save(tmp_path / "blurred.png")
  Image.fromarray((np.asarray(face) * 0.05).astype(np.uint8)).save(tmp_path / "dark.png")
  out = tmp_path / "q.csv"
  assert (
    _predict(out, model, tmp_path / "sharp.png", tmp_path / "blurred.png", tmp_path / "dark.png")
    == 0
  )
  rows = {os.path.basename(r["path"]): r for r in _rows(out)}
  assert [rows[n]["skipped"] for n in ("sharp.png", "blurred.png", "dark.png")] == [
    "",
    "blurred",
    "dark",
  ]
  assert rows["sharp.png"]["box_w"] == str(face.width)  # the whole image is the box
  # The gate can be switched off.
  out2 = tmp_path / "q2.csv"
  extra = ("--min-sharpness", 0, "--min-exposure", 0)
  assert _predict(out2, model, tmp_path / "blurred.png", tmp_path / "dark.png", extra=extra) == 0
  assert all(r["p_pain"] and not r["skipped"] for r in _rows(out2))


def test_real_crops_pass_the_gate():
  """At their size and shrunk to 64 px (a small crop is measured at its own size: low
  resolution is not blur)."""
  for name in sorted(os.listdir(REAL_SAMPLES)):
    if name.endswith(".jpg"):
      img = Image.open(os.path.join(REAL_SAMPLES, name)).convert("RGB")
      for im in (img, img.resize((64, 64), Image.BILINEAR)):
        sharp, expo = quality.measure(im)
        assert quality.verdict(sharp, expo, 10.0, 0.1) == "", (name, im.size, sharp, expo)


def test_sharpness_does_not_depend_on_the_light():
  img = np.asarray(Image.open(os.path.join(REAL_SAMPLES, "label2_sample1.jpg")).convert("RGB"))
  s1, e1 = quality.measure(img)
  s2, e2 = quality.measure((img * 0.5).astype(np.uint8))
  assert e2 == pytest.approx(e1 / 2, rel=0.02) and s2 == pytest.approx(s1, rel=0.1)


def test_tracking_file_of_another_video_is_refused_before_writing(model, cage, tmp_path, capsys):
  other = tmp_path / "short.mp4"
  scene = cage["scene"]
  cage_video.write_video(str(other), scene.frames[:6], scene.fps)
  out = tmp_path / "x.csv"
  rc = _predict(out, model, other, extra=("--boxes", f"{other}={cage['dlc_csv']}"))
  assert rc == 2 and not out.exists()
  err = capsys.readouterr().err
  assert cage["dlc_csv"] in err and "covers 10 frames" in err and "has 6" in err
  # SLEAP's export may end before the video does, but never after it.
  rc = _predict(out, model, other, extra=("--boxes", f"{other}={cage['sleap']}"))
  assert rc == 2 and not out.exists()
  assert "boxes up to frame 9 but the video" in capsys.readouterr().err
  # Another resolution: the keypoints reach beyond the frame.
  small = tmp_path / "small.mp4"
  cage_video.write_video(str(small), [f.resize((160, 120)) for f in scene.frames], scene.fps)
  rc = _predict(out, model, small, extra=("--boxes", f"{small}={cage['dlc_csv']}"))
  assert rc == 2 and not out.exists()
  assert "another resolution" in capsys.readouterr().err


def test_a_box_over_the_frame_edge_is_not_another_resolution(tmp_path):
  """Detector or hand-drawn boxes may run over the edge (they are clipped when cropped); a box
  whose centre lies beyond the frame is from a video of another resolution."""
  probe = predict.VideoProbe(est_rows=1, num_frames=10, width=640, height=480)
  over = tmp_path / "over.csv"
  over.write_text("frame,x,y,w,h\n0,600,400,80,100\n")
  predict._check_tracks_fit("v.mp4", probe, tracking.read_tracks(str(over)))
  other = tmp_path / "other.csv"
  other.write_text("frame,x,y,w,h\n0,900,600,200,200\n")
  with pytest.raises(predict.UsageError, match=r"other\.csv: coordinates reach x=1000, y=700"):
    predict._check_tracks_fit("v.mp4", probe, tracking.read_tracks(str(other)))


def test_a_longer_tracking_file_is_caught_at_the_end_when_the_video_has_no_frame_count(
  model, cage, tmp_path, monkeypatch, capsys
):
  """Containers such as .mkv or .webm may not say how many frames they hold (probe: 0): a
  SLEAP file that runs past the video is then found when the video ends, as an error row."""
  other = tmp_path / "short.mp4"
  cage_video.write_video(str(other), cage["scene"].frames[:6], cage["scene"].fps)
  probe = predict.probe_video
  monkeypatch.setattr(
    predict, "probe_video", lambda *a: dataclasses.replace(probe(*a), num_frames=0)
  )
  out = tmp_path / "x.csv"
  rc = _predict(out, model, other, extra=("--boxes", f"{other}={cage['sleap']}"))
  assert rc == 1
  rows = _rows(out)
  errors = [r["error"] for r in rows if r["error"]]
  assert len(errors) == 1, errors
  assert errors[0].startswith(f"{other}: the video has 6 frames but the tracking file")
  assert "has boxes up to frame 9" in errors[0] and "VIDEO=FILE" in errors[0]
  assert sum(1 for r in rows if r["p_pain"]) > 0  # the frames it has are scored, then flagged


def test_bad_box_options_and_files(model, cage, tmp_path, capsys):
  out = tmp_path / "y.csv"
  video = cage["video"]
  cases = [
    (("--boxes", cage["csv"], "--crop", "0,0,10,10"), "not both"),
    (("--boxes", cage["sleap"], "--face-keypoints", "snout,tail"), "tail"),
    (("--boxes", str(tmp_path / "missing.h5")), "missing.h5"),
    (("--min-likelihood", "1.5"), "--min-likelihood"),
    (("--min-keypoints", "1"), "--min-keypoints"),
  ]
  for extra, words in cases:
    assert _predict(out, model, video, extra=extra) == 2, extra
    err = capsys.readouterr().err
    assert words in err, (extra, err)
    assert not out.exists()
  # A video without a tracking file while --boxes is given.
  copy = tmp_path / "other.mp4"
  shutil.copy(video, copy)
  assert _predict(out, model, video, copy, extra=("--boxes", cage["sleap"])) == 2
  assert "no tracking file for the video(s)" in capsys.readouterr().err


def test_block_bootstrap_respects_autocorrelation():
  rng = np.random.default_rng(0)
  x = np.empty(400)
  x[0] = rng.normal()
  for t in range(1, 400):
    x[t] = 0.9 * x[t - 1] + rng.normal()
  lo, hi = stats.block_bootstrap_mean_ci(x)
  plo, phi = stats.block_bootstrap_mean_ci(x, block=1)
  assert stats.block_length(x) >= 10
  assert (hi - lo) > 2 * (phi - plo)  # the plain bootstrap is far too sure
  assert stats.block_bootstrap_mean_ci([0.3]) == (0.3, 0.3)
  with pytest.raises(ValueError):
    stats.block_bootstrap_mean_ci([])


def test_summary_paths_and_plot_names():
  plots = predict_report.plot_paths("/r/out.csv", [("/v/a.mp4", ""), ("/v/a.mp4", "rat 1")])
  assert plots == {
    ("/v/a.mp4", ""): "/r/out_a_p_pain.png",
    ("/v/a.mp4", "rat 1"): "/r/out_a_rat_1_p_pain.png",
  }
  assert predict_report.summary_paths("/r/out.csv") == ("/r/out_summary.csv", "/r/out_summary.md")
  assert predict.NO_FACE == "no_face"
