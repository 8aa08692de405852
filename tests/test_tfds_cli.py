"""The stock `tfds build` command (needs the [test] extra's TensorFlow, Apache Beam and
mlcroissant): it builds the synthetic twin's planned examples into their splits, as
array_record files the trainer reads; a TFRecord build stops the trainer with a
clear message."""

import json
import os
import shlex
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds
from conftest import ROOT, mini_config

from tfds_ratspain import build
from tfds_ratspain.ratspain import synthetic
from tfds_ratspain.ratspain.ratspain_dataset_builder import MINI_PER_SPLIT

pytest.importorskip("tensorflow", reason="the stock tfds CLI imports TensorFlow")

try:
  from painseeker_jax.loro import run_loro
except ImportError:
  from painseeker_jax.train import run_loro


def _tfds_build(config, data_dir, *flags):
  # The stock `tfds` command's own entry point, run by this interpreter: a `tfds` found on PATH
  # may belong to another Python (in a venv made with --system-site-packages, the base one,
  # which lacks this project).
  cmd = [
    sys.executable,
    "-c",
    "from tensorflow_datasets.scripts.cli.main import launch_cli; launch_cli()",
    "build",
    "tfds_ratspain/ratspain",
    f"--config={config}",
    f"--data_dir={data_dir}",
    *flags,
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  path = os.path.join(data_dir, "ratspain", config, "1.0.0")
  assert os.path.isdir(path)
  return path


def _suffixes(path):
  """File formats of the record files in a build directory."""
  names = [n for n in os.listdir(path) if n.startswith("ratspain-")]
  return {n.split(".")[1].split("-")[0] for n in names}


def test_stock_tfds_build_then_train(tmp_path):
  """The README's path: stock `tfds build` (no --file_format) writes array_record files with
  every planned example in its split, then training on it. Built on `synthetic_mini`: the full
  twin goes through the same split generator with the whole plan, whose exact per-rat counts
  test_synthetic checks (rendering all 1,138 faces here took minutes of the suite)."""
  data_dir = str(tmp_path / "data")
  path = _tfds_build("synthetic_mini", data_dir)
  assert _suffixes(path) == {"array_record"}
  # Read back as the trainer does (tfds.data_source, no TensorFlow): the plan, split by split.
  sources = build.builder("synthetic_mini", data_dir).as_data_source(
    decoders={"image": tfds.decode.SkipDecoding()}
  )
  specs = synthetic.plan(0, MINI_PER_SPLIT)
  for s in synthetic.SPLITS:
    got = sorted((x["filename"].decode(), int(x["pain_level"])) for x in sources[s])
    assert got == sorted((x.filename, x.pain_level) for x in specs if x.split == s), s
  workdir = str(tmp_path / "w")
  # XLA's convolutions: this test is about the data path, not the oneDNN kernels.
  results = run_loro(mini_config(data_dir, folds=(1,), **{"model.conv": "xla"}), workdir)
  assert os.path.isfile(os.path.join(workdir, "results.json"))
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["loro"] == results["loro"]
  assert list(saved["per_rat"]) == ["rat1"]


def test_stock_tfrecord_build_gives_clear_error_and_fix(tmp_path):
  """A TFRecord build stops training with a DataError naming the directory and the
  command that fixes it (no TFDS traceback); that command makes it trainable."""
  data_dir = str(tmp_path)
  path = _tfds_build("synthetic_mini", data_dir, "--file_format=tfrecord")
  assert _suffixes(path) == {"tfrecord"}
  fix = (
    "python -m tfds_ratspain build --config=synthetic_mini "
    f"--data_dir={shlex.quote(data_dir)} --overwrite"
  )
  with pytest.raises(build.DataError) as err:
    run_loro(mini_config(data_dir, folds=(1,)), str(tmp_path / "w"))
  message = str(err.value)
  assert f"in {path} was built as tfrecord files" in message
  assert fix in [line.strip() for line in message.splitlines()]
  assert err.value.__cause__ is None and err.value.__context__ is None
  assert not os.path.exists(tmp_path / "w" / "results.json")
  with pytest.raises(build.DataError, match="was built as tfrecord"):
    build.prepare("synthetic_mini", data_dir=data_dir)
  # `python -m tfds_ratspain build` without --overwrite says the same and exits 2.
  cmd = [sys.executable] + shlex.split(fix)[1:]
  proc = subprocess.run(cmd[:-1], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2 and fix in proc.stderr and "Traceback" not in proc.stderr
  # The command from the message rebuilds it as array_record.
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert _suffixes(path) == {"array_record"}
  from painseeker_jax import input_pipeline

  sources = input_pipeline.get_sources("synthetic_mini", ["rat1"], data_dir)
  assert len(sources["rat1"]) == 12
