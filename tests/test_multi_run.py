"""config.multi_run="vmap": the folds trained side by side in one vmapped program.

Same initial states, batches and keys as the sequential trainer, so the same
parameters up to float summation order, also when the folds have different
numbers of steps per epoch and when some folds resume from further along.
"""

import csv
import os

import jax
import numpy as np
import pytest
from conftest import mini_config

from painseeker_jax import input_pipeline, loro, multi_run, train


def _sources(config, folds):
  splits = [input_pipeline.fold_splits(k)[0] for k in folds]
  sources = input_pipeline.get_sources(config.dataset, splits, config.data_dir)
  train_sources = {k: sources[s] for k, s in zip(folds, splits)}
  return train_sources, {k: input_pipeline.labelled_indices(v) for k, v in train_sources.items()}


# adam_l2 (not the twin's AdamW) in the equality tests: its L2 term keeps every gradient away
# from 0, where Adam's normalised step turns float-order noise (sequential vs. stacked) into
# lr-sized differences. Measured with AdamW: 0.3% after 14 steps in the resume test; in the
# unequal-steps test 2 of 2,304 weights of one conv kernel 1.7e-4 apart on an AVX-512 CPU (it
# passed on AVX2 ones), both above the tolerance.
_ADAM_L2 = {"optimizer.name": "adam_l2"}


def _assert_close(a, b):
  flat_a, flat_b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
  assert len(flat_a) == len(flat_b)
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)  # Adam amplifies float-order noise


def test_stacked_folds_equal_sequential_with_unequal_steps(mini_data_dir, tmp_path):
  config = mini_config(mini_data_dir, folds=(1, 2), num_epochs=2, **_ADAM_L2)
  sources, indices = _sources(config, (1, 2))
  indices[2] = indices[2][: 5 * config.batch_size]  # fold 2: 5 steps per epoch, fold 1 more
  assert len(indices[1]) // config.batch_size > 5
  trainer = train.make_trainer(config)
  seq = {
    k: train.train_fold(trainer, str(tmp_path / "seq"), k, sources[k], indices[k]) for k in (1, 2)
  }
  stacked = multi_run.train_folds_stacked(trainer, str(tmp_path / "vmap"), (1, 2), sources, indices)
  for k in (1, 2):
    _assert_close(stacked[k], seq[k])
  # Per-fold checkpoints at each fold's own step count: a sequential rerun loads them as finished.
  for k in (1, 2):
    again = train.train_fold(trainer, str(tmp_path / "vmap"), k, sources[k], indices[k])
    _assert_close(again, stacked[k])
    steps = len(indices[k]) // config.batch_size * config.num_epochs
    ckpts = os.listdir(os.path.join(tmp_path, "vmap", f"fold_rat{k}", "checkpoints"))
    assert max(int(c) for c in ckpts if c.isdigit()) == steps


def test_stacked_folds_resume_when_folds_are_at_different_epochs(mini_data_dir, tmp_path):
  opt = _ADAM_L2
  config = mini_config(mini_data_dir, folds=(1, 2, 3), num_epochs=2, **opt)
  sources, indices = _sources(config, (1, 2, 3))
  trainer = train.make_trainer(config)
  clean = {
    k: train.train_fold(trainer, str(tmp_path / "clean"), k, sources[k], indices[k])
    for k in (1, 2, 3)
  }
  workdir = str(tmp_path / "mixed")
  train.train_fold(trainer, workdir, 1, sources[1], indices[1])  # fold 1 finished
  one_epoch = train.make_trainer(mini_config(mini_data_dir, folds=(1, 2, 3), num_epochs=1, **opt))
  train.train_fold(one_epoch, workdir, 2, sources[2], indices[2])  # fold 2 at the end of epoch 1
  calls = []
  real = input_pipeline.train_batches

  def counted(*a, **kw):
    calls.append(kw["seed"])
    return real(*a, **kw)

  input_pipeline.train_batches = counted
  try:
    resumed = multi_run.train_folds_stacked(trainer, workdir, (1, 2, 3), sources, indices)
  finally:
    input_pipeline.train_batches = real
  seed = input_pipeline.epoch_seed
  assert sorted(calls) == sorted([seed(0, 3, 0), seed(0, 2, 1), seed(0, 3, 1)])  # nothing retrained
  for k in (1, 2, 3):
    _assert_close(resumed[k], clean[k])


def test_run_loro_vmap_matches_sequential(mini_data_dir, tmp_path):
  loro.run_loro(
    mini_config(mini_data_dir, folds=(4, 5), multi_run="sequential"), str(tmp_path / "s")
  )
  vm = loro.run_loro(
    mini_config(mini_data_dir, folds=(4, 5), multi_run="vmap"), str(tmp_path / "v")
  )
  assert vm["loro"]["tp"] + vm["loro"]["fp"] + vm["loro"]["tn"] + vm["loro"]["fn"] == 24
  read = lambda d: list(csv.DictReader(open(os.path.join(tmp_path, d, "predictions.csv"))))  # noqa: E731
  rows_s, rows_v = read("s"), read("v")
  assert [r["filename"] for r in rows_v] == [r["filename"] for r in rows_s]
  np.testing.assert_allclose(
    [float(r["p_pain"]) for r in rows_v], [float(r["p_pain"]) for r in rows_s], atol=1e-3
  )  # float-order noise through 7 Adam steps


def test_multi_run_choices():
  assert multi_run.resolve_multi_run("sequential") == "sequential"
  assert multi_run.resolve_multi_run("vmap") == "vmap"
  assert multi_run.resolve_multi_run("auto") in ("sequential", "vmap")
  if jax.default_backend() == "cpu":
    assert multi_run.resolve_multi_run("auto") == "sequential"  # measured: benchmarks/README.md
  with pytest.raises(ValueError, match="config.multi_run='pmap'; use auto, sequential or vmap"):
    multi_run.resolve_multi_run("pmap")
