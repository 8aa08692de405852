"""The stock `tfds build` command builds the synthetic twin (needs the [test] extra's
TensorFlow, Apache Beam and mlcroissant), with RatsPain's exact per-rat counts."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from tfds_ratspain.ratspain import synthetic

pytest.importorskip("tensorflow", reason="the stock tfds CLI imports TensorFlow")

# Reads the TFRecord files the CLI wrote, through tf.data, in a fresh process (keeps
# TensorFlow out of the test process) and prints the label counts of every split.
_COUNT = """
import json, sys, tensorflow_datasets as tfds, tfds_ratspain
out = {}
for s in %r:
  ds = tfds.load("ratspain/synthetic", data_dir=sys.argv[1], split=s,
                 decoders={"image": tfds.decode.SkipDecoding()})
  lv = [int(x["pain_level"]) for x in tfds.as_numpy(ds)]
  out[s] = [lv.count(-1), lv.count(0), lv.count(1), lv.count(2)]
print(json.dumps(out))
""" % (list(synthetic.SPLITS),)


def test_stock_tfds_build_synthetic_exact_counts(tmp_path):
  tfds_cli = shutil.which("tfds") or pytest.fail("the `tfds` command is not on PATH")
  proc = subprocess.run([tfds_cli, "build", "tfds_ratspain/ratspain", "--config=synthetic",
                         f"--data_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert os.path.isdir(tmp_path / "ratspain" / "synthetic" / "1.0.0")
  proc = subprocess.run([sys.executable, "-c", _COUNT, str(tmp_path)], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  counts = json.loads(proc.stdout.strip().splitlines()[-1])
  for rat, (no, mod, sev) in synthetic.PER_RAT_COUNTS.items():
    assert counts[f"rat{rat}"] == [0, no, mod, sev], f"rat{rat}"
  assert counts["low_confidence"] == [synthetic.NUM_LOW_CONFIDENCE, 0, 0, 0]
  assert sum(sum(v[1:]) for v in counts.values()) == 1138
