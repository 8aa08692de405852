"""Leave-one-animal-out (LOAO) on a lab's grimace set, for a number of animals other than six.

A made-up lab directory of three twin rats (`python -m tfds_ratspain write-lab-dir`, 8 labelled
and some unlabelled 64 px faces each) goes through the documented commands: `run.py
--config=configs/loao.py` (building the set on first use) with a tiny model and AU heads, a run
on a subset of the animals, and `train-final` on every animal. The commands run as
subprocesses sharing a persistent JAX compilation cache (in tmp), so that only the first one
compiles. The N-rat plan of the twin leaves the six-rat plan unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import types

import pytest
from conftest import ROOT

from painseeker_jax import cli, experiments, input_pipeline, layout
from painseeker_jax.scales import SCALES
from tfds_ratspain import __main__ as tfds_cli
from tfds_ratspain.grimace import build as grimace_build
from tfds_ratspain.grimace import manual
from tfds_ratspain.ratspain import synthetic

CONFIG = os.path.join(ROOT, "configs", "loao.py")
IDS = ["R01", "R02", "R03"]
# The tiny recipe of tests/conftest.py's mini_config, with AU heads.
TINY = [
  "--config.model.size=tiny",
  "--config.image_size=64",
  "--config.resize_size=72",
  "--config.batch_size=8",
  "--config.eval_batch_size=16",
  "--config.num_epochs=1",
  "--config.loss.k_h=2",
  "--config.loss.lambda_au=0.5",
  "--config.progress=False",
  "--config.input.num_threads=2",
]
# sha256 of repr(synthetic.plan(seed, max_per_split)) before plan_rats existed.
PLAN_DIGESTS = {
  (0, None): "7c13ae618af4f1d9e72a23facb04bb2f1851ef4693a3b2eff150297a78815561",
  (0, 5): "3ba7307eb1875b0c130860d7c88cbc3c34567755df541251219bb21e8b9820ed",
  (1, None): "d3879d81ffb327afcabe450cb8169ce5e8d14f9c18b75ecb56a3bfd80ad14c8c",
  (1, 5): "321da46067034169aaaec48d9700b5bc21dc5939d78c1b7f0fee1a3a3c1e748f",
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
  """The lab directory (3 animals x 8 labelled + 2 unlabelled images) and a TFDS data dir."""
  root = tmp_path_factory.mktemp("loao")
  lab_dir = root / "lab"
  argv = ["write-lab-dir", f"--out={lab_dir}", "--animals=3", "--per_animal=8"]
  assert tfds_cli.main(argv + ["--image_size=64", "--unlabelled=2"]) == 0
  with open(lab_dir / "labels.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  return types.SimpleNamespace(dir=str(lab_dir), data_dir=str(root / "tfds"), root=root, rows=rows)


def _args(lab, *extra) -> list[str]:
  return [
    f"--config={CONFIG}",
    f"--config.manual_dir={lab.dir}",
    f"--config.data_dir={lab.data_dir}",
    *TINY,
    *extra,
  ]


def _command(lab, argv: list[str]) -> subprocess.CompletedProcess:
  r = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-4000:]
  return r


@pytest.fixture(scope="module")
def loao_run(lab):
  """`python run.py --config=configs/loao.py ...` over every animal (the set built on first
  use)."""
  workdir = str(lab.root / "run_all")
  _command(lab, ["run.py", *_args(lab, f"--workdir={workdir}")])
  return workdir


def _csv(path) -> tuple[list[str], list[dict]]:
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    return list(reader.fieldnames), list(reader)


def test_six_rat_plan_is_unchanged():
  for (seed, n), digest in PLAN_DIGESTS.items():
    assert hashlib.sha256(repr(synthetic.plan(seed, n)).encode()).hexdigest() == digest


def test_plan_rats_any_number_of_rats():
  specs = synthetic.plan_rats(seed=0, num_rats=14, per_rat=10, num_unlabelled=5)
  assert specs == synthetic.plan_rats(seed=0, num_rats=14, per_rat=10, num_unlabelled=5)
  for rat in range(1, 15):
    mine = [s for s in specs if s.split == f"rat{rat}"]
    assert len(mine) == 10 and {s.rat_id for s in mine} == {rat}
    assert {s.pain_level > 0 for s in mine} == {False, True}  # both classes
    assert all(s.pain_level == synthetic.pain_level_from_au(s.au_scores) for s in mine)
  unlabelled = [s for s in specs if s.split == "low_confidence"]
  assert len(unlabelled) == 5 and all(s.pain_level == -1 for s in unlabelled)
  assert synthetic.rat_identity(3) is synthetic._RATS[3]
  assert synthetic.rat_identity(9) == synthetic.rat_identity(9) != synthetic.rat_identity(10)
  assert synthetic.render(specs[-1])["image"][:2] == b"\xff\xd8"  # a rat beyond six renders


def test_write_lab_dir(lab, tmp_path):
  assert list(lab.rows[0]) == ["filename", "animal_id", "pain_level", *SCALES["rgs"]] + [
    "session",
    "condition",
  ]
  assert sorted({r["animal_id"] for r in lab.rows}) == IDS
  aus = [r[c] for r in lab.rows for c in SCALES["rgs"]]
  assert "-1" in aus and any(r["pain_level"] == "" and r["au_orbital"] for r in lab.rows)
  assert sum(not any(r[c] for c in SCALES["rgs"]) for r in lab.rows) == 2  # unlabelled
  records = manual.scan(lab.dir, "rgs")  # the builder's own check
  assert sum(r.pain_level >= 0 for r in records) == 24
  assert {r.session for r in records} == {"day1", "day2"}

  out = tmp_path / "mice"
  argv = ["write-lab-dir", f"--out={out}", "--animals=2", "--per_animal=2", "--image_size=32"]
  assert tfds_cli.main(argv + ["--scale=mgs"]) == 0
  assert tfds_cli.main(argv) == 2  # an existing non-empty --out is refused
  assert tfds_cli.main(argv + ["--scale=mgs", "--overwrite"]) == 0
  header, rows = _csv(out / "labels.csv")
  assert [c for c in header if c.startswith("au_")] == list(SCALES["mgs"])
  known = [
    r
    for r in rows
    if "" not in (r["au_cheek"], r["au_nose"]) and "-1" not in (r["au_cheek"], r["au_nose"])
  ]
  assert known and all(r["au_cheek"] == r["au_nose"] for r in known)
  assert not [p for p in os.listdir(tmp_path) if p != "mice"]  # no temporary left
  grimace_build.prepare("mgs", str(out), data_dir=str(tmp_path / "tfds"))


def test_loao_results_per_animal_and_pooled(loao_run, lab):
  results = layout.read_results(loao_run)
  assert "per_rat" not in results and "loro" not in results
  per_animal, pooled = results["per_animal"], results["loao"]
  assert list(per_animal) == IDS  # keyed by the CSV's ids, in its order
  for k in ("tp", "fp", "tn", "fn"):
    assert pooled[k] == sum(per_animal[a][k] for a in IDS)
  assert sum(pooled[k] for k in ("tp", "fp", "tn", "fn")) == 24
  for block in [pooled] + [per_animal[a] for a in IDS]:
    assert set(block["au"]) == {*SCALES["rgs"], "grimace_score"}
    assert set(block["au"]["au_ear"]) == {"n", "accuracy", "macro_f1", "qwk", "mae"}
  assert results["config"]["dataset"] == "grimace"
  with open(os.path.join(loao_run, "results.md"), encoding="utf-8") as f:
    md = f.read().splitlines()
  assert md[0] == "| Method | R01 | R02 | R03 | LOAO |"
  # The AU heads' scores, action unit by action unit, as results.json has them.
  assert "| AU | n | accuracy | macro-F1 | QWK | MAE | R01 | R02 | R03 |" in md
  ear = pooled["au"]["au_ear"]
  row = next(line for line in md if line.startswith("| au_ear |"))
  assert row.startswith(f"| au_ear | {ear['n']} | {ear['accuracy']:.1f} | {ear['macro_f1']:.3f} |")
  assert any(line.startswith("| grimace score |") for line in md)
  folds = sorted(p for p in os.listdir(loao_run) if p.startswith("fold_"))
  assert folds == ["fold_animal_R01", "fold_animal_R02", "fold_animal_R03"]
  assert folds == [os.path.basename(layout.fold_dir(loao_run, f"animal_{a}")) for a in IDS]


def test_loao_predictions(loao_run, lab):
  header, rows = _csv(os.path.join(loao_run, "predictions.csv"))
  au = [c for n in SCALES["rgs"] for c in (n, f"{n}_pred", f"{n}_label")] + ["grimace_score"]
  assert header == layout.ANIMAL_PREDICTION_FIELDS + au
  labelled = {r.filename: r for r in manual.scan(lab.dir, "rgs") if r.pain_level >= 0}
  assert sorted(r["filename"] for r in rows) == sorted(labelled)  # each once, none unlabelled
  for r in rows:
    want = labelled[r["filename"]]
    assert (r["animal_id"], r["session"], r["condition"]) == (
      want.animal_id,
      want.session,
      want.condition,
    )
    assert int(r["pain_level"]) == want.pain_level  # also where derived from the AU scores
    assert [int(r[f"{n}_label"]) for n in SCALES["rgs"]] == list(want.au_scores)


def test_loao_subset_of_animals(loao_run, lab):
  """--config.folds=R02: one fold, the same model as in the run over every animal (the fold's
  seed comes from its split name, not its position)."""
  workdir = str(lab.root / "run_r02")
  _command(lab, ["run.py", *_args(lab, "--config.folds=R02", f"--workdir={workdir}")])
  results = layout.read_results(workdir)
  assert list(results["per_animal"]) == ["R02"]
  assert [p for p in os.listdir(workdir) if p.startswith("fold_")] == ["fold_animal_R02"]
  _, subset = _csv(os.path.join(workdir, "predictions.csv"))
  _, full = _csv(os.path.join(loao_run, "predictions.csv"))
  assert subset == [r for r in full if r["animal_id"] == "R02"]
  assert input_pipeline.fold_seed("animal_R02") == 643257980  # stable across machines


def test_train_final_on_every_animal(loao_run, lab):
  model = str(lab.root / "model")
  argv = ["-m", "painseeker_jax", "train-final", *_args(lab), f"--workdir={loao_run}"]
  r = _command(lab, argv + [f"--output={model}"])
  assert "animal_R01+animal_R02+animal_R03 (24 images)" in r.stdout
  with open(os.path.join(model, "model.json"), encoding="utf-8") as f:
    training = json.load(f)["training"]
  assert training["split"] == "animal_R01+animal_R02+animal_R03"
  assert training["num_images"] == 24
  assert training["loao_estimate"] == layout.read_results(loao_run)["loao"]
  assert os.path.isdir(layout.fold_dir(loao_run, 0))


def test_predict_with_the_loao_workdir(loao_run, lab):
  """`painseeker predict --model=<LOAO work directory>`: the fold models of the animals as an
  ensemble, with the AU columns of the scale."""
  from painseeker_jax import export  # noqa: PLC0415

  loaded = export.load(loao_run)
  assert loaded.members == ["animal_R01", "animal_R02", "animal_R03"]
  assert loaded.au_names == SCALES["rgs"]
  out = str(lab.root / "predict_loao.csv")
  image = os.path.join(lab.dir, "images", lab.rows[0]["filename"])
  _command(
    lab, ["-m", "painseeker_jax", "predict", f"--model={loao_run}", f"--output={out}", image]
  )
  header, rows = _csv(out)
  assert header[-5:] == [*SCALES["rgs"], "grimace_score"] and len(rows) == 1
  assert 0 <= float(rows[0]["grimace_score"]) <= 2


def test_bad_folds_and_missing_manual_dir(lab, tmp_path, capsys):
  workdir = f"--workdir={tmp_path / 'w'}"
  assert cli.main(["run", *_args(lab, "--config.folds=R02,R09", workdir)]) == 2
  err = capsys.readouterr().err
  assert "unknown animal id 'R09'" in err and "R01, R02, R03" in err
  assert cli.main(["run", f"--config={CONFIG}", workdir]) == 2
  assert "--config.manual_dir=DIR" in capsys.readouterr().err
  argv = ["train-final", f"--config={CONFIG}", f"--output={tmp_path / 'm'}"]
  assert cli.main(argv) == 2
  assert "--config.manual_dir=DIR" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "w") and not os.path.exists(tmp_path / "m")


def test_ratspain_only_experiments_refuse_a_lab_set(lab):
  config = cli.load_config(CONFIG, [f"--config.manual_dir={lab.dir}"])
  with config.unlocked():
    config.model.name = "lbp_svm"
  with pytest.raises(ValueError, match="RatsPain only"):
    experiments.run_method(config, str(lab.root / "lbp"))
  with config.unlocked():
    config.experiment = "table3"
  with pytest.raises(ValueError, match="leave-one-animal-out"):
    experiments.run(config, str(lab.root / "t3"))


def test_lambda_au_study_decision_rule():
  """tools/lambda_au_study.py: the highest mean QWK among lambda_au > 0 whose pain accuracy is
  within 3 points of lambda_au = 0's; a smaller lambda within 0.02 QWK of the best wins."""
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  try:
    import lambda_au_study as study
  finally:
    sys.path.pop(0)
  s = lambda acc, qwk=None: {"accuracy": acc, "mean_qwk": qwk}  # noqa: E731
  assert study.choose({1.0: s(80, 0.5)}) is None  # no lambda_au = 0 to compare with
  assert study.choose({0.0: s(80), 0.3: s(79, 0.40), 1.0: s(78, 0.50), 3.0: s(70, 0.9)}) == 1.0
  assert study.choose({0.0: s(80), 0.3: s(79, 0.49), 1.0: s(78, 0.50)}) == 0.3
  assert study.choose({0.0: s(80), 1.0: s(76, 0.5)}) is None
  results = {
    "loao": {
      "f1": 0.7,
      "accuracy": 70.0,
      "au": {
        **{
          a: {"qwk": q, "accuracy": 60.0, "mae": 0.5}
          for a, q in zip(study.AUS, (0.1, 0.2, 0.3, 0.4))
        },
        "grimace_score": {"mae": 0.3},
      },
    },
    "provenance": {"wall_seconds": {"total": 600.0}},
  }
  got = study.summary(results)
  assert got["mean_qwk"] == pytest.approx(0.25) and got["minutes"] == 10.0


def test_results_table_shows_no_f1_for_a_control_animal():
  """A control animal with no pain image, all called no pain, has F1 0/0: its cell says '—'
  (not 0.0000 beside 100% accuracy) and a note says why."""
  from painseeker_jax import loro, metrics

  m = metrics.loro_metrics([0, 0, 0, 1, 0], [0, 0, 0, 1, 1], ["C1"] * 3 + ["P1"] * 2)
  groups = input_pipeline.Groups(unit="animal", splits={"C1": "C1", "P1": "P1"}, names={})
  md = loro.results_markdown(
    {"per_animal": m["per_group"], "loao": m["pooled"]}, "PainSeeker", groups
  ).splitlines()
  assert md[2] == "| PainSeeker | —/100.00 | 0.6667/50.00 | 0.6667/80.00 |"
  assert "—: no F1 for a animal" not in md[4] and "no F1 for an animal" in md[4]


def test_a_workdir_trained_on_other_labels_is_not_reused(lab, tmp_path, capsys):
  """After the lab corrects a score and rebuilds, neither `run` (even finished) nor
  `train-final` reuses results or checkpoints trained on the old labels; an unchanged rerun
  says that it read the finished run back."""
  import shutil

  lab_dir, data_dir = str(tmp_path / "lab"), str(tmp_path / "tfds")
  shutil.copytree(lab.dir, lab_dir)
  args = [
    f"--config={CONFIG}",
    f"--config.manual_dir={lab_dir}",
    f"--config.data_dir={data_dir}",
    *TINY,
    "--config.folds=R01",
    f"--workdir={tmp_path / 'w'}",
  ]
  assert cli.main(["run", *args]) == 0
  with open(os.path.join(tmp_path / "w", layout.DATA_JSON), encoding="utf-8") as f:
    assert json.load(f)["images"] == 24
  capsys.readouterr()
  assert cli.main(["run", *args]) == 0
  assert "finished before" in capsys.readouterr().err
  with open(os.path.join(lab_dir, "labels.csv"), newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  row = next(r for r in rows if r["animal_id"] == "R02" and r["pain_level"] in ("0", "2"))
  row["pain_level"] = "2" if row["pain_level"] == "0" else "0"
  with open(os.path.join(lab_dir, "labels.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  grimace_build.prepare("rgs", lab_dir, data_dir=data_dir, overwrite=True)
  before = open(layout.results_path(str(tmp_path / "w")), encoding="utf-8").read()
  assert cli.main(["run", *args]) == 2
  err = capsys.readouterr().err
  assert "was trained on other data" in err and "labels changed" in err and "--workdir" in err
  argv = ["train-final", *args, f"--output={tmp_path / 'model'}"]
  assert cli.main(argv) == 2
  assert "was trained on other data" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "model")
  assert open(layout.results_path(str(tmp_path / "w")), encoding="utf-8").read() == before
