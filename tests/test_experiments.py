"""Table 3, sensitivity and figures: the machinery end to end on the tiny synthetic build."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import mini_config
from painseeker_jax import experiments, figures, train


def _table3_config(data_dir, **kw):
  c = mini_config(data_dir, folds=(2,), **kw)
  c.experiment = "table3"
  c.methods = ("painseeker", "painseeker_wo_prsc", "resnet18", "lbp_r1_g4")
  c.seeds = (0, 1)
  c.bootstrap = 200
  c.attention_files = ()
  c.lbp.num_workers = 1
  return c


def test_table3_end_to_end_and_incremental(mini_data_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / "t3")
  report = experiments.run(_table3_config(mini_data_dir), workdir)
  assert set(report["methods"]) == {"painseeker", "painseeker_wo_prsc", "resnet18", "lbp_r1_g4"}
  # Each method's LORO mean is the mean of its runs' pooled scores.
  for m, seeds in [("painseeker", (0, 1)), ("resnet18", (0, 1)), ("lbp_r1_g4", (0,))]:
    runs = [json.load(open(os.path.join(workdir, "runs", m, f"seed{s}", "results.json"))) for s in seeds]
    assert report["methods"][m]["loro"]["f1"]["mean"] == pytest.approx(np.mean([r["loro"]["f1"] for r in runs]))
  ps = report["methods"]["painseeker"]
  assert set(ps["pose_bins"]) <= {"frontal", "moderate", "extreme"} and ps["pose_bins"]
  assert "attention_localisation" in ps and "attention_localisation" not in report["methods"]["resnet18"]
  assert "vs_painseeker" in report["methods"]["resnet18"] and "vs_painseeker" not in ps
  md = open(os.path.join(workdir, "table3.md")).read()
  for title in ("| PainSeeker |", "| PainSeeker w/o PRSC |", "| ResNet-18 |", "| LBP (R=1, 4x4) + SVM |",
                "## Statistics", "## By head pose", "## Attention localisation"):
    assert title in md
  fig = Image.open(os.path.join(workdir, "figure4_attention.png"))
  assert fig.size[0] > 300 and fig.size[1] > 200
  # A rerun reuses every finished run: nothing is trained again.
  monkeypatch.setattr(train, "run_loro", lambda *a, **k: pytest.fail("retrained a finished run"))
  again = experiments.run(_table3_config(mini_data_dir), workdir)
  assert again["methods"]["painseeker"]["loro"] == report["methods"]["painseeker"]["loro"]


def test_sensitivity_end_to_end(mini_data_dir, tmp_path):
  c = mini_config(mini_data_dir, folds=(1,))
  c.experiment = "sensitivity"
  import ml_collections
  c.sweep = ml_collections.ConfigDict({"lambda_prsc": (0.1, 0.5), "delta": (0.2,), "k_h": (1, 2)})
  c.seeds = (0,)
  workdir = str(tmp_path / "sens")
  out = experiments.run(c, workdir)
  assert [p["value"] for p in out["sweeps"]["k_h"]] == [1, 2]
  # The default setting (lambda 0.1, delta 0.2, k_h 2) is trained once and shared.
  assert len(os.listdir(os.path.join(workdir, "runs"))) == 3
  assert out["sweeps"]["delta"][0]["runs"] == out["sweeps"]["k_h"][1]["runs"]
  img = Image.open(os.path.join(workdir, "figure5_sensitivity.png"))
  assert img.size == (1260, 340)


def test_derive_rejects_unknown_fields(mini_data_dir):
  with pytest.raises(KeyError, match="loss.lamda"):
    experiments.derive(_table3_config(mini_data_dir), {"loss.lamda": 1.0})
  with pytest.raises(ValueError, match="unknown method"):
    c = _table3_config(mini_data_dir)
    c.methods = ("painseekr",)
    experiments.run(c, "/nonexistent")


def test_landmark_cells_and_pose_bins():
  lm = np.array([[0.1, 0.1], [0.9, 0.1], [np.nan, np.nan], [0.5, 0.5], [0.99, 0.99], [0.0, 0.0], [0.4, 0.6]], np.float32)
  vis = np.array([True, True, False, True, True, False, True])
  assert experiments.landmark_cells(lm, vis, 3) == {(0, 0), (0, 2), (1, 1), (2, 2)}
  assert [experiments.pose_bin(y) for y in (0, -19.9, 20, -49, 50, 75)] == [
      "frontal", "frontal", "moderate", "moderate", "extreme", "extreme"]


def test_figure_writers_make_pngs_of_the_right_size(tmp_path):
  face = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  beta = np.zeros(49, np.float32)
  beta[24] = 1.0  # attention on the centre cell
  heat = figures.attention_map(beta, 70)
  assert heat.shape == (70, 70) and heat.max() > 0.9 and heat[0, 0] == 0.0
  peak = np.unravel_index(heat.argmax(), heat.shape)
  assert abs(peak[0] - 34.5) <= 1 and abs(peak[1] - 34.5) <= 1  # the centre cell
  over = figures.overlay(face, beta)
  assert over.shape == face.shape and over.dtype == np.uint8
  path = str(tmp_path / "att.png")
  figures.attention_figure([{"image": face, "title": "a", "betas": [beta, beta]}] * 2, path)
  assert Image.open(path).size == (780, 540) and os.path.getsize(path) > 1000
  with pytest.raises(ValueError, match="square"):
    figures.attention_map(np.ones(10), 8)
