"""`painseeker merge-runs` (layout.merge_runs): one experiment work directory filled on two
machines. Runs are written with layout's own writers, as a training run writes them."""

import fcntl
import io
import json
import os
import tarfile

import numpy as np
import pytest

from painseeker_jax import cli, layout

CONFIG = {"name": "sensitivity_synthetic", "seed": 0, "loss": {"k_h": 5}, "progress": False}


def _run(
  workdir, rel, *, finished=True, f1=0.7, sha="aa" * 32, trunk=None, config=None, checkpoint=False
):
  """A run as training leaves it: config.json, a fold's curve and checkpoint, and the results."""
  run = os.path.join(workdir, rel)
  os.makedirs(os.path.join(run, "fold_rat1"), exist_ok=True)
  layout.write_json(layout.config_path(run), config or CONFIG)
  with open(layout.metrics_path(run, 1), "w") as f:
    f.write('{"step": 28, "loss": 0.5}\n')
  if checkpoint:
    os.makedirs(os.path.join(layout.checkpoint_dir(run, 1), "28"))
    with open(os.path.join(layout.checkpoint_dir(run, 1), "28", "d"), "wb") as f:
      f.write(b"\0" * 1000)
  if finished:
    rows = [
      dict(filename="r1_0.jpg", rat_id=1, pain_level=2, pain=1, p_pain=0.9, pred=1, beta=np.ones(4))
    ]
    prov = {"data": {"test_images": 1, "sha256": sha}}
    prov["pretrained"] = trunk and {"file": "resnet18.twin_pool.safetensors", "sha256": trunk}
    results = {"loro": {"f1": f1}, "provenance": prov}
    layout.write_results(run, results, "| md |\n", rows)
  return run


def _files(workdir):
  out = {}
  for root, _, names in os.walk(workdir):
    for n in names:
      if n != layout.RUN_LOCK:
        with open(os.path.join(root, n), "rb") as f:
          out[os.path.relpath(os.path.join(root, n), workdir)] = f.read()
  return out


def test_merge_into_a_work_directory(tmp_path):
  src, dest = str(tmp_path / "gpu"), str(tmp_path / "cpu")
  _run(src, "runs/a/seed0", f1=0.8)
  _run(src, "runs/b/seed0", f1=0.6, checkpoint=True)
  _run(src, "runs/d/seed1")
  _run(src, "runs/c/seed0", finished=False, checkpoint=True)  # unfinished there: not brought
  _run(dest, "runs/a/seed0", f1=0.5)  # finished here too
  started = _run(dest, "runs/b/seed0", finished=False, checkpoint=True)  # started here

  report = layout.merge_runs(src, dest)

  assert report == {
    "copied": ["runs/d/seed1"],
    "replaced": ["runs/b/seed0"],
    "kept": ["runs/a/seed0"],
    "skipped": [],
  }
  assert layout.read_results(os.path.join(dest, "runs/a/seed0"))["loro"]["f1"] == 0.5
  assert not os.path.exists(layout.checkpoint_dir(started, 1))  # the obsolete checkpoints
  for rel in ("runs/b/seed0", "runs/d/seed1"):
    got = _files(os.path.join(dest, rel))
    want = {k: v for k, v in _files(os.path.join(src, rel)).items() if "checkpoints" not in k}
    assert got == want
    assert set(got) == {
      "config.json", "results.json", "results.md", "predictions.csv", "attention.npz",
      os.path.join("fold_rat1", "metrics.jsonl"),
    }  # fmt: skip
  assert not os.path.exists(os.path.join(dest, "runs/c"))
  # Merging again changes nothing.
  assert layout.merge_runs(src, dest)["kept"] == ["runs/a/seed0", "runs/b/seed0", "runs/d/seed1"]


def test_archive_round_trip_leaves_the_checkpoints_behind(tmp_path):
  src = str(tmp_path / "gpu")
  _run(src, "runs/a/seed0", checkpoint=True)
  _run(src, "runs/b/seed2", f1=0.9)
  archive = str(tmp_path / "gpu_runs.tar.gz")

  assert layout.merge_runs(src, archive)["copied"] == ["runs/a/seed0", "runs/b/seed2"]
  with tarfile.open(archive) as tar:
    names = tar.getnames()
  assert names and not [n for n in names if "checkpoints" in n or n.endswith(layout.RUN_LOCK)]
  with pytest.raises(ValueError, match="already exists"):
    layout.merge_runs(src, archive)

  dest = str(tmp_path / "cpu")
  assert layout.merge_runs(archive, dest)["copied"] == ["runs/a/seed0", "runs/b/seed2"]
  assert layout.read_results(os.path.join(dest, "runs/b/seed2"))["loro"]["f1"] == 0.9
  assert _files(os.path.join(dest, "runs/b/seed2")) == _files(os.path.join(src, "runs/b/seed2"))


def test_runs_in_use_with_another_config_or_other_data_are_skipped(tmp_path):
  src, dest = str(tmp_path / "gpu"), str(tmp_path / "cpu")
  for rel in ("runs/held/seed0", "runs/other_config/seed0", "runs/other_data/seed0"):
    _run(src, rel)
  _run(src, "runs/other_data/seed0", sha="bb" * 32)
  _run(src, "runs/done/seed0", sha="bb" * 32)  # finished in dest: kept, not a data mismatch
  _run(dest, "runs/done/seed0")
  held = _run(dest, "runs/held/seed0", finished=False, checkpoint=True)
  _run(dest, "runs/other_config/seed0", finished=False, config=dict(CONFIG, loss={"k_h": 3}))

  with open(os.path.join(held, layout.RUN_LOCK), "a") as lock:  # a training process holds it
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    report = layout.merge_runs(src, dest)

  assert report["copied"] == report["replaced"] == []
  assert report["kept"] == ["runs/done/seed0"]
  skipped = dict(s.split(": ", 1) for s in report["skipped"])
  assert skipped["runs/held/seed0"].startswith("in use by")
  assert "differs in: loss" in skipped["runs/other_config/seed0"]
  assert "other test images" in skipped["runs/other_data/seed0"]
  assert os.path.exists(layout.checkpoint_dir(held, 1))  # nothing of a skipped run touched
  assert not layout.is_finished(held)


def test_runs_from_another_trunk_file_are_skipped(tmp_path):
  src, dest = str(tmp_path / "gpu"), str(tmp_path / "cpu")
  _run(dest, "runs/painseeker/seed0", trunk="cc" * 32)
  _run(src, "runs/painseeker/seed1", trunk="dd" * 32)  # the trunk rebuilt on that machine
  _run(src, "runs/resnet18/seed1", trunk="cc" * 32)
  report = layout.merge_runs(src, dest)
  assert report["copied"] == ["runs/resnet18/seed1"]
  (skipped,) = report["skipped"]
  assert skipped.startswith("runs/painseeker/seed1: it was fine-tuned from another trunk file")
  assert "pretrained sha256 dddddddddddd vs cccccccccccc" in skipped
  assert "fine-tune every run from one copy of the file" in skipped


def test_an_empty_destination_takes_one_data_build(tmp_path):
  """Into an empty work directory the first run copied sets the fingerprints the rest must
  match; a report over runs of two builds says so."""
  src, dest = str(tmp_path / "mixed"), str(tmp_path / "new")
  _run(src, "runs/a/seed0")
  _run(src, "runs/b/seed0", sha="bb" * 32)
  report = layout.merge_runs(src, dest)
  assert report["copied"] == ["runs/a/seed0"]
  assert report["skipped"][0].startswith("runs/b/seed0: it scored other test images")
  assert layout.fingerprint_warnings([os.path.join(dest, "runs/a/seed0")]) == []
  (warning,) = layout.fingerprint_warnings(
    [os.path.join(src, r) for r in ("runs/a/seed0", "runs/b/seed0")]
  )
  assert warning.startswith("the runs have 2 data fingerprints (aaaaaaaaaaaa: 1 run(s), e.g. ")


def test_bad_sources_are_refused(tmp_path):
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  with pytest.raises(ValueError, match="no finished runs"):
    layout.merge_runs(empty, str(tmp_path / "dest"))
  evil = str(tmp_path / "evil.tar.gz")
  with tarfile.open(evil, "w:gz") as tar:
    info = tarfile.TarInfo("../outside.json")
    info.size = 2
    tar.addfile(info, io.BytesIO(b"{}"))
  with pytest.raises(ValueError, match="not an archive of merge-runs"):
    layout.merge_runs(evil, str(tmp_path / "dest"))
  no_runs = str(tmp_path / "no_runs.tar.gz")
  with tarfile.open(no_runs, "w:gz") as tar:
    tar.add(empty, arcname="runs")
  with pytest.raises(ValueError, match="no_runs.tar.gz holds no finished runs"):
    layout.merge_runs(no_runs, str(tmp_path / "dest"))
  assert not os.path.exists(tmp_path / "outside.json")


def test_results_json_is_written_last(tmp_path, monkeypatch):
  """A run stopped while writing its results is not marked finished."""

  def fail(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez", fail)
  with pytest.raises(OSError, match="disk full"):
    _run(str(tmp_path), "runs/a/seed0")
  assert not layout.is_finished(str(tmp_path / "runs/a/seed0"))
  assert sorted(os.listdir(tmp_path / "runs/a/seed0")) == [
    layout.CONFIG_JSON,
    "fold_rat1",
    layout.PREDICTIONS_CSV,
    layout.RESULTS_MD,
  ]  # no temporary attention file left behind


def test_replacing_keeps_the_old_file_when_the_writer_fails(tmp_path):
  path = str(tmp_path / "table.csv")
  layout.write_atomic(path, "old\n")
  with pytest.raises(RuntimeError), layout.replacing(path) as tmp:
    assert tmp.endswith(".csv") and os.path.dirname(tmp) == str(tmp_path)
    with open(tmp, "w") as f:
      f.write("half")
    raise RuntimeError
  assert os.listdir(tmp_path) == ["table.csv"]
  with open(path) as f:
    assert f.read() == "old\n"
  with layout.replacing(path) as tmp, open(tmp, "w") as f:
    f.write("new\n")
  assert os.listdir(tmp_path) == ["table.csv"]
  with open(path) as f:
    assert f.read() == "new\n"


def test_cli(tmp_path, capsys):
  src, dest = str(tmp_path / "gpu"), str(tmp_path / "cpu")
  _run(src, "runs/a/seed0")
  assert cli.main(["merge-runs", src, dest]) == 0
  out = capsys.readouterr().out
  assert "copied: 1 run\n  runs/a/seed0\n" in out and "skipped: 0 runs" in out
  assert cli.main(["merge-runs", str(tmp_path / "nothing"), dest]) == 2
  assert "no finished runs" in capsys.readouterr().err


def test_damaged_run_files_are_named(tmp_path, capsys):
  """A run's results.json, config.json or predictions.csv that was cut or edited: an error
  naming the file (and line), exit status 2 with no traceback, not a raw JSON/int error."""
  src, dest = str(tmp_path / "gpu"), str(tmp_path / "cpu")
  run = _run(src, "runs/a/seed0")
  with open(layout.results_path(run), "w") as f:
    f.write('{"loro": {"f1": 0.7')  # cut mid-write
  with pytest.raises(layout.RunFileError, match=r"results\.json: not valid JSON"):
    layout.read_results(run)
  assert cli.main(["merge-runs", src, dest]) == 2
  err = capsys.readouterr().err
  assert layout.results_path(run) in err and "remove the run's directory" in err

  layout.write_json(layout.config_path(run), ["not", "an", "object"])
  with pytest.raises(layout.RunFileError, match=r"config\.json: holds a JSON list"):
    layout.read_config(run)

  path = os.path.join(run, layout.PREDICTIONS_CSV)
  good = open(path).read()
  with open(path, "w") as f:
    f.write(good + "r1_1.jpg,1,2,1,0.5")  # a row cut before its last field
  with pytest.raises(layout.RunFileError, match=r"predictions\.csv, line 3: "):
    layout.read_predictions(run)
  with open(path, "w") as f:
    f.write(good.replace("pred", "label"))
  with pytest.raises(layout.RunFileError, match=r"predictions\.csv: no column 'pred'"):
    layout.read_predictions(run)


def test_check_data_refuses_other_labels_and_warns_on_other_twin_bytes(tmp_path):
  workdir = str(tmp_path / "w")
  data = {"images": 3, "labels_sha256": "a" * 64, "images_sha256": "b" * 64}
  assert layout.check_data(workdir, data) is None  # first use: written
  assert layout.check_data(workdir, dict(data)) is None
  with pytest.raises(ValueError, match=r"trained on other data.*labels changed.*--workdir"):
    layout.check_data(workdir, dict(data, labels_sha256="c" * 64), built_here=True)
  other_bytes = dict(data, images_sha256="d" * 64)
  with pytest.raises(ValueError, match="images changed"):
    layout.check_data(workdir, other_bytes)  # a lab's images: re-cropped, replaced
  warning = layout.check_data(workdir, other_bytes, built_here=True)  # the twin, built elsewhere
  assert "other bytes" in warning and "Same seed, other machine" in warning
  with open(os.path.join(workdir, layout.DATA_JSON), encoding="utf-8") as f:
    assert json.load(f) == data  # never overwritten
  with open(os.path.join(workdir, layout.DATA_JSON), "w", encoding="utf-8") as f:
    f.write("{")
  with pytest.raises(layout.RunFileError, match="data.json: cannot be read"):
    layout.check_data(workdir, data)
