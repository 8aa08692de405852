"""Trainer (train.py) and LORO experiment (loro.py) end to end on the tiny synthetic build."""

import csv
import functools
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT, mini_config

from painseeker_jax import inference, input_pipeline, layout, loro, train, writers


def _batch(n=4, size=64, seed=0):
  rng = np.random.default_rng(seed)
  return {
    "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
    "label": np.array([0, 1] * (n // 2), np.int32),
  }


def _state_and_step(config):
  trainer = train.make_trainer(config)
  return trainer.init(jax.random.key(0)), trainer.step


def test_golden_one_step_loss(mini_data_dir):
  """The first loss of a fixed tiny PainSeeker on a fixed batch (a golden number:
  it changes only if the model, its initialisation or the loss changes)."""
  config = mini_config(mini_data_dir)
  state, step = _state_and_step(config)
  state, out = step(state, _batch(), jax.random.key(1))
  out = jax.device_get(out)
  np.testing.assert_allclose(out["loss"], out["ce"] + 0.1 * out["prsc"], rtol=1e-6)
  np.testing.assert_allclose([out["ce"], out["prsc"]], GOLDEN_CE_PRSC, rtol=2e-4)
  assert int(state.step) == 1
  # A second step on the same batch lowers the loss.
  _, out2 = step(state, _batch(), jax.random.key(2))
  assert float(out2["ce"]) < float(out["ce"])


GOLDEN_CE_PRSC = (0.71237826, 0.13179460)  # measured on x86-64 CPU, jax 0.10.2


def test_adam_l2_is_pytorch_adam_weight_decay():
  """adam_l2 adds wd * param to the gradient before Adam; adamw decays outside Adam."""
  from configs import loro

  opt = loro.get_config("real").optimizer
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([0.5, 0.1, -0.3])}
  tx = train.make_optimizer(opt)
  upd, _ = tx.update(grads, tx.init(params), params)
  ref_tx = optax.adam(opt.learning_rate)
  ref, _ = ref_tx.update({"w": grads["w"] + opt.weight_decay * params["w"]}, ref_tx.init(params))
  np.testing.assert_allclose(upd["w"], ref["w"], rtol=1e-6)
  opt.name = "adamw"
  tx = train.make_optimizer(opt)
  upd_w, _ = tx.update(grads, tx.init(params), params)
  assert not np.allclose(upd_w["w"], upd["w"])
  opt.name = "sgd"
  with pytest.raises(ValueError, match="config.optimizer.name"):
    train.make_optimizer(opt)


def test_invalid_k_h_fails_at_config_time(mini_data_dir, tmp_path):
  config = mini_config(mini_data_dir, **{"loss.k_h": 4})  # K = 4 at 64 px: K_h must be < 4
  with pytest.raises(ValueError, match="config.loss.k_h"):
    loro.run_loro(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()  # nothing written


def test_non_finite_loss_stops_with_step_and_fold(mini_data_dir, tmp_path):
  config = mini_config(mini_data_dir, folds=(2,), **{"optimizer.learning_rate": 1e30})
  with pytest.raises(train.NonFiniteError, match=r"fold rat2, step \d+"):
    loro.run_loro(config, str(tmp_path / "w"))


def test_fold_strategies_agree(mini_data_dir):
  config = mini_config(mini_data_dir)
  model = inference.make_model(config)
  variables = [
    jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(i), jnp.zeros((1, 64, 64, 3))
    )
    for i in range(2)
  ]
  images = np.random.default_rng(0).integers(0, 256, (2, 2, 64, 64, 3), dtype=np.uint8)
  stacked = inference.stack_variables(variables)
  p_map, beta_map, _ = loro.make_fold_eval(model, "map")(stacked, images)
  p_vmap, beta_vmap, _ = loro.make_fold_eval(model, "vmap")(stacked, images)
  np.testing.assert_allclose(p_map, p_vmap, atol=1e-5)
  np.testing.assert_allclose(beta_map, beta_vmap, atol=1e-5)
  # And equal to each fold model applied on its own.
  p1, _ = inference.p_pain(model, variables[1], images[1])
  np.testing.assert_allclose(p_map[1], p1, atol=1e-5)


def _read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return f.read()


def test_loro_end_to_end_outputs(mini_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  results = loro.run_loro(mini_config(mini_data_dir), workdir)
  saved = json.loads(_read(workdir, "results.json"))
  assert saved["per_rat"] == results["per_rat"] and list(saved["per_rat"]) == [
    f"rat{k}" for k in range(1, 7)
  ]
  assert saved["config"]["dataset"] == "synthetic_mini"
  with open(os.path.join(workdir, "predictions.csv")) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["filename", "rat_id", "pain_level", "pain", "p_pain", "pred"]
  assert len(rows) == 72 and len({r["filename"] for r in rows}) == 72  # every test image once
  for r in rows:
    assert r["filename"].startswith(f"rat{r['rat_id']}/")
    assert int(r["pred"]) == int(float(r["p_pain"]) > 0.5)
    assert int(r["pain"]) == int(int(r["pain_level"]) > 0)
  # The LORO column is the pooled confusion matrix, re-derivable from the CSV.
  y, p = np.array([int(r["pain"]) for r in rows]), np.array([int(r["pred"]) for r in rows])
  pooled = saved["loro"]
  assert (pooled["tp"], pooled["fp"], pooled["tn"], pooled["fn"]) == (
    int(((y == 1) & (p == 1)).sum()),
    int(((y == 0) & (p == 1)).sum()),
    int(((y == 0) & (p == 0)).sum()),
    int(((y == 1) & (p == 0)).sum()),
  )
  assert sum(m["tp"] + m["fp"] + m["tn"] + m["fn"] for m in saved["per_rat"].values()) == 72
  md = _read(workdir, "results.md").splitlines()
  assert md[0] == "| Method | Rat1 | Rat2 | Rat3 | Rat4 | Rat5 | Rat6 | LORO |"
  assert (
    md[2].startswith("| PainSeeker |") and f"{pooled['f1']:.4f}/{pooled['accuracy']:.2f}" in md[2]
  )
  assert os.listdir(os.path.join(workdir, "fold_rat1", "tb"))  # TensorBoard event file
  prov = saved["provenance"]  # what a reader needs to trust the number
  assert prov["versions"]["jax"] == jax.__version__ and prov["versions"]["flax"]
  assert prov["devices"] == {"kind": jax.devices()[0].device_kind, "count": jax.device_count()}
  assert set(prov["wall_seconds"]) == {f"rat{k}" for k in range(1, 7)} | {"total"}
  assert prov["git_commit"] is None or len(prov["git_commit"].split("+")[0]) == 40
  assert prov["cpu"]["model"] and prov["versions"]["pillow"]
  assert prov["matmul_precision"] == jax.config.jax_default_matmul_precision  # TF32 or not
  assert prov["pretrained"] is None  # from scratch; else the trunk file's name and sha256
  # The test images' fingerprint: the same data give the same one (`test_data_fingerprint`).
  assert prov["data"]["test_images"] == 72 and len(prov["data"]["sha256"]) == 64
  # Rerunning a finished run retrains nothing and gives the same files.
  before = _read(workdir, "predictions.csv")
  loro.run_loro(mini_config(mini_data_dir), workdir)
  assert _read(workdir, "predictions.csv") == before


def test_resume_after_interruption_gives_identical_results(mini_data_dir, tmp_path, monkeypatch):
  config = lambda: mini_config(mini_data_dir, folds=(1, 2), num_epochs=2)  # noqa: E731
  clean = str(tmp_path / "clean")
  loro.run_loro(config(), clean)

  real_batches = input_pipeline.train_batches
  calls = []

  def interrupted(source, indices, **kw):  # dies in fold 2, epoch 2, after 3 batches
    calls.append(kw["seed"])
    for i, batch in enumerate(real_batches(source, indices, **kw)):
      if len(calls) == 4 and i == 3:
        raise KeyboardInterrupt
      yield batch

  monkeypatch.setattr(input_pipeline, "train_batches", interrupted)
  resumed = str(tmp_path / "resumed")
  with pytest.raises(KeyboardInterrupt):
    loro.run_loro(config(), resumed)
  assert not os.path.exists(os.path.join(resumed, "results.json"))
  calls.clear()
  monkeypatch.setattr(
    input_pipeline,
    "train_batches",
    lambda *a, **kw: (calls.append(kw["seed"]), real_batches(*a, **kw))[1],
  )
  loro.run_loro(config(), resumed)
  assert calls == [input_pipeline.epoch_seed(0, 2, 1)]  # only fold 2's last epoch was trained again
  assert _read(resumed, "predictions.csv") == _read(clean, "predictions.csv")
  without_provenance = lambda d: {
    k: v
    for k, v in json.loads(_read(d, "results.json")).items()  # noqa: E731
    if k != "provenance"
  }
  assert without_provenance(resumed) == without_provenance(clean)


def test_same_seed_same_results_other_seed_differs(mini_data_dir, tmp_path):
  a = loro.run_loro(mini_config(mini_data_dir, folds=(3,)), str(tmp_path / "a"))
  b = loro.run_loro(mini_config(mini_data_dir, folds=(3,)), str(tmp_path / "b"))
  loro.run_loro(mini_config(mini_data_dir, folds=(3,), seed=1), str(tmp_path / "c"))
  assert _read(tmp_path / "a", "predictions.csv") == _read(tmp_path / "b", "predictions.csv")
  assert a["loro"] == b["loro"]
  assert _read(tmp_path / "a", "predictions.csv") != _read(tmp_path / "c", "predictions.csv")


def test_workdir_refuses_another_config(mini_data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  loro.run_loro(mini_config(mini_data_dir, folds=(4,)), workdir)
  with pytest.raises(ValueError, match="another configuration.*seed"):
    loro.run_loro(mini_config(mini_data_dir, folds=(4,), seed=5), workdir)
  # Fields that cannot change results are not a different configuration.
  layout.check_config(
    mini_config(
      mini_data_dir,
      folds=(4,),
      checkpoint_every_epochs=7,
      multi_run="vmap",
      eval_batch_size=32,
      **{"input.num_threads": 3},
    ),
    workdir,
  )


def test_real_config_without_data_explains_and_never_falls_back(tmp_path):
  from configs import loro as loro_configs
  from tfds_ratspain import build

  config = loro_configs.get_config()
  config.data_dir = str(tmp_path / "empty")
  with pytest.raises(build.DataError, match="(?s)xhzongyuan/RatsPain.*--manual_dir"):
    loro.run_loro(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "empty" / "ratspain" / "synthetic")


def _run_py(*args, timeout=300):
  return subprocess.run(
    [sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
  )


def test_run_py_locked_config_rejects_typos(tmp_path):
  proc = _run_py(
    "--config=configs/loro.py:synthetic_mini", "--config.loss.lamda_prsc=0", f"--workdir={tmp_path}"
  )
  assert proc.returncode != 0 and "lamda_prsc" in proc.stderr


def test_training_path_never_imports_tensorflow(mini_data_dir, tmp_path):
  """run.py end to end (one fold) in a fresh interpreter: TensorFlow is never imported."""
  code = (
    "import sys, runpy; sys.argv = ['run.py', '--config=configs/loro.py:synthetic_mini', "
    f"'--config.data_dir={mini_data_dir}', '--config.folds=5', '--config.progress=False', "
    f"'--workdir={tmp_path}/w']\n"
    "try:\n  runpy.run_path('run.py', run_name='__main__')\n"
    "except SystemExit as e:\n  assert not e.code, e.code\n"
    "bad = sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.'))\n"
    "assert not bad, bad[:5]\nprint('NO_TF_OK')\n"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert "NO_TF_OK" in proc.stdout, proc.stderr[-3000:]
  assert os.path.exists(tmp_path / "w" / "results.json")


# ---------------------------------------------------------------------------
# Bad input: clear errors before anything is written (issue #17).

BAD_FIELDS = [
  ("seed", -1),  # numpy's SeedSequence refuses it mid-run, naming no field
  ("num_epochs", 0),
  ("num_epochs", -1),
  ("batch_size", -8),
  ("batch_size", 0),
  ("eval_batch_size", 0),
  ("image_size", 0),
  ("resize_size", 32),  # smaller than image_size (64)
  ("checkpoint_every_epochs", 0),
  ("optimizer.learning_rate", 0.0),
  ("optimizer.learning_rate", float("nan")),
  ("optimizer.weight_decay", -0.1),
  ("optimizer.b2", 1.0),
  ("loss.lambda_prsc", -1.0),
  ("loss.delta", -0.5),
  ("loss.k_h", 0),
  ("input.num_threads", 0),
  ("input.num_workers", -1),
  ("input.cache_mb", -1),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS)
def test_numeric_fields_are_checked_before_anything_is_written(
  mini_data_dir, tmp_path, field, value
):
  workdir = tmp_path / "w"
  with pytest.raises(ValueError, match=re.escape(f"config.{field}")):
    loro.run_loro(mini_config(mini_data_dir, **{field: value}), str(workdir))
  assert not workdir.exists()


def test_cli_reports_bad_config_without_traceback(mini_data_dir, tmp_path, capsys):
  from painseeker_jax import cli

  common = ["--config=configs/loro.py:synthetic_mini", f"--config.data_dir={mini_data_dir}"]
  rc = cli.main(["run", *common, "--config.num_epochs=0", f"--workdir={tmp_path / 'w'}"])
  err = capsys.readouterr().err
  assert (
    rc == 2 and "config.num_epochs=0: must be an integer >= 1" in err and "Traceback" not in err
  )
  assert not (tmp_path / "w").exists()
  rc = cli.main(
    [
      "train-final",
      *common,
      "--config.batch_size=-8",
      f"--output={tmp_path / 'm'}",
      f"--workdir={tmp_path / 'w'}",
    ]
  )
  err = capsys.readouterr().err
  assert rc == 2 and "config.batch_size=-8" in err
  assert not (tmp_path / "m").exists() and not (tmp_path / "w").exists()


def test_cli_keeps_the_traceback_of_a_library_value_error(tmp_path, monkeypatch, capsys):
  """A ValueError from inside a library (numpy here) is a bug, not a message for the user: it
  propagates with its traceback; one from the project's checks is printed (exit status 2)."""
  import numpy as np

  from painseeker_jax import cli

  def bug(args):
    np.broadcast_shapes((2,), (3,))  # raises inside numpy

  monkeypatch.setattr(cli, "merge_runs", bug)
  with pytest.raises(ValueError, match="shape mismatch"):
    cli.main(["merge-runs", str(tmp_path / "a"), str(tmp_path / "b")])
  monkeypatch.undo()
  assert cli.main(["merge-runs", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
  assert "holds no finished runs" in capsys.readouterr().err


def test_batch_larger_than_a_training_set_fails_before_writing(mini_data_dir, tmp_path):
  workdir = tmp_path / "w"
  with pytest.raises(
    ValueError,
    match=r"config.batch_size=1000 is larger than the \d+ labelled "
    "training images of fold rat1",
  ):
    loro.run_loro(mini_config(mini_data_dir, batch_size=1000, eval_batch_size=16), str(workdir))
  assert not workdir.exists()


def test_second_process_on_a_workdir_is_refused_naming_the_holder(mini_data_dir, tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import sys, time; sys.path.insert(0, sys.argv[2]); "
      "from painseeker_jax import layout\n"
      "with layout.claim(sys.argv[1], wait=False) as mine:\n"
      "  print('held' if mine else 'free', flush=True); time.sleep(120)",
      str(workdir),
      ROOT,
    ],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=f"in use by another run \\(pid {holder.pid} on "):
      loro.run_loro(mini_config(mini_data_dir, folds=(1,)), str(workdir))
    assert not (workdir / "config.json").exists()
  finally:
    holder.kill()
    holder.wait()


def _latest_step_dir(workdir, k):
  ckpt = os.path.join(workdir, f"fold_rat{k}", "checkpoints")
  steps = sorted((int(s) for s in os.listdir(ckpt) if s.isdigit()), reverse=True)
  return [os.path.join(ckpt, str(s)) for s in steps]


def _truncate(path, keep):
  with open(path, "r+b") as f:
    f.truncate(keep)


def test_truncated_checkpoint_resumes_from_the_previous_one(mini_data_dir, tmp_path):
  config = lambda: mini_config(mini_data_dir, folds=(2,), num_epochs=2)  # noqa: E731
  workdir = str(tmp_path / "w")
  loro.run_loro(config(), workdir)
  before = _read(workdir, "predictions.csv")
  steps = _latest_step_dir(workdir, 2)
  assert len(steps) == 2  # the two latest are kept
  # The newest checkpoint's largest data file cut in half (a crash mid-write).
  files = [os.path.join(d, f) for d, _, fs in os.walk(steps[0]) for f in fs]
  biggest = max(files, key=os.path.getsize)
  _truncate(biggest, os.path.getsize(biggest) // 2)
  loro.run_loro(config(), workdir)  # falls back one epoch, retrains it, same results
  assert _read(workdir, "predictions.csv") == before
  assert os.listdir(os.path.join(workdir, "fold_rat2", "broken_checkpoints"))
  # Every checkpoint's metadata damaged: a clear error naming the fold and the fix.
  for d in _latest_step_dir(workdir, 2):
    for root, _, fs in os.walk(d):
      for f in fs:
        _truncate(os.path.join(root, f), 5)
  with pytest.raises(ValueError, match=r"(?s)no readable checkpoint of fold rat2.*rm -r"):
    loro.run_loro(config(), workdir)
  assert _read(workdir, "predictions.csv") == before  # nothing finished is lost


def test_lr_multiplier():
  assert train.lr_multiplier("constant", 7, 10) == 1.0
  np.testing.assert_allclose(
    [train.lr_multiplier("cosine", s, 8) for s in (0, 2, 4, 6, 8, 9)],
    [1.0, 0.5 + 0.5 * np.cos(np.pi / 4), 0.5, 0.5 - 0.5 * np.cos(np.pi / 4), 0.0, 0.0],
    atol=1e-12,
  )
  with pytest.raises(ValueError, match="config.optimizer.schedule"):
    train.lr_multiplier("step", 0, 8)


@pytest.mark.parametrize("name", ["adam_l2", "adamw"])
def test_wd_params_kernels_decays_only_kernels(name):
  """With zero gradients the update is the weight decay alone: present for a kernel (ndim > 1),
  absent for a bias or a BatchNorm scale with wd_params='kernels', present with 'all'."""
  from configs import loro as loro_configs

  opt = loro_configs.get_config("synthetic").optimizer
  opt.name = name
  params = {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3), "scale": jnp.ones(3)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  for wd_params, decayed in (("all", {"kernel", "bias", "scale"}), ("kernels", {"kernel"})):
    opt.wd_params = wd_params
    tx = train.make_optimizer(opt)
    upd, _ = tx.update(zeros, tx.init(params), params)
    assert {k for k, u in upd.items() if np.any(np.asarray(u) != 0)} == decayed
  opt.wd_params = "biases"
  with pytest.raises(ValueError, match="config.optimizer.wd_params"):
    train.make_optimizer(opt)


def test_scheduled_step_scales_the_update(mini_data_dir):
  """A cosine-scheduled trainer at lr_scale 1 takes the constant trainer's step; at 0.5 it
  moves the parameters half as far (Adam's first step is lr * sign-like, so the update is
  linear in the scale); at 0 they stay."""
  batch = _batch()
  moved = {}
  for schedule, scale in (("constant", 1.0), ("cosine", 1.0), ("cosine", 0.5), ("cosine", 0.0)):
    trainer = train.make_trainer(mini_config(mini_data_dir, **{"optimizer.schedule": schedule}))
    state0 = trainer.init(jax.random.key(0))
    before = jax.device_get(state0.params)
    state, _ = trainer.step(state0, batch, jax.random.key(1), scale)
    moved[schedule, scale] = jax.tree.map(lambda a, b: a - b, jax.device_get(state.params), before)
  flat = {k: np.concatenate([x.ravel() for x in jax.tree.leaves(v)]) for k, v in moved.items()}
  np.testing.assert_allclose(flat["cosine", 1.0], flat["constant", 1.0], atol=2e-7)
  np.testing.assert_allclose(flat["cosine", 0.5], 0.5 * flat["constant", 1.0], atol=2e-7)
  assert np.all(flat["cosine", 0.0] == 0) and np.any(flat["constant", 1.0] != 0)


def test_metrics_jsonl_is_the_training_curve(mini_data_dir, tmp_path):
  """Every epoch of a fold is one line of <fold>/metrics.jsonl; a repeated step keeps the last."""
  workdir = str(tmp_path / "w")
  loro.run_loro(mini_config(mini_data_dir, folds=(2,), num_epochs=2), workdir)
  records = writers.read_jsonl_metrics(layout.metrics_path(workdir, 2))
  assert [r["step"] for r in records] == [7, 14]  # 60 training images // batch 8 = 7 steps
  assert {"accuracy", "ce", "prsc", "loss", "grad_norm"} <= set(records[0])
  with open(layout.metrics_path(workdir, 2), "a") as f:
    f.write(json.dumps({"step": 7, "accuracy": 0.25}) + "\n")
  assert writers.read_jsonl_metrics(layout.metrics_path(workdir, 2))[0] == {
    "step": 7,
    "accuracy": 0.25,
  }


def test_metrics_jsonl_survives_a_cut_write(tmp_path, caplog):
  """A crash in the middle of a line: the next write starts a new line, and the reader skips the
  cut one (naming it) and keeps the rest."""
  path = str(tmp_path / "metrics.jsonl")
  w = writers.MetricWriter(str(tmp_path / "tb"), jsonl=path)
  w.write_scalars(7, {"loss": 0.5})
  with open(path, "a") as f:
    f.write('{"step": 14, "lo')  # the crash
  w.write_scalars(14, {"loss": 0.25})  # the resumed fold writes step 14 again
  w.close()
  assert open(path).read().splitlines()[1:] == ['{"step": 14, "lo', '{"step": 14, "loss": 0.25}']
  with caplog.at_level("WARNING", logger="painseeker"):
    assert writers.read_jsonl_metrics(path) == [
      {"step": 7, "loss": 0.5},
      {"step": 14, "loss": 0.25},
    ]
  assert f"{path}, line 2: not a whole metrics record" in caplog.text


def test_workdir_from_before_the_schedule_fields_is_the_same_config(mini_data_dir, tmp_path):
  """A config.json written before optimizer.schedule / wd_params existed means their defaults."""
  workdir = str(tmp_path / "w")
  config = mini_config(mini_data_dir)
  layout.check_config(config, workdir)
  saved = layout.read_config(workdir)
  del saved["optimizer"]["schedule"], saved["optimizer"]["wd_params"]
  layout.write_json(layout.config_path(workdir), saved)
  layout.check_config(mini_config(mini_data_dir), workdir)  # the defaults: the same config
  assert "schedule" in layout.read_config(workdir)["optimizer"]  # rewritten with the new fields
  layout.write_json(layout.config_path(workdir), saved)
  with pytest.raises(ValueError, match="another configuration.*optimizer"):
    layout.check_config(mini_config(mini_data_dir, **{"optimizer.schedule": "cosine"}), workdir)


def test_fields_that_do_not_change_results_are_not_another_config(mini_data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  layout.check_config(mini_config(mini_data_dir), workdir)
  same = {"lbp.num_workers": 8, "model.conv": "xla", "eval_batch_size": 7, "progress": True}
  for key, value in same.items():
    assert layout.config_differences(mini_config(mini_data_dir, **{key: value}), workdir) == []
  other = mini_config(mini_data_dir, **{"lbp.svm_c": 10.0, "model.conv": "xla"})
  assert layout.config_differences(other, workdir) == ["lbp"]  # only the field that counts


@pytest.mark.parametrize("multi_run", ["sequential", "vmap"])
def test_loro_with_au_heads(mini_data_dir, tmp_path, multi_run):
  """lambda_au > 0: the AU loss is trained and logged, predictions.csv gains the AU columns and
  results.json per-AU scores per rat and pooled, consistent with the rows."""
  workdir = str(tmp_path / "w")
  config = mini_config(mini_data_dir, folds=(1, 2), multi_run=multi_run, **{"loss.lambda_au": 0.5})
  results = loro.run_loro(config, workdir)
  curve = writers.read_jsonl_metrics(layout.metrics_path(workdir, 1))
  assert curve[0]["au"] > 0
  np.testing.assert_allclose(
    curve[0]["loss"], curve[0]["ce"] + 0.1 * curve[0]["prsc"] + 0.5 * curve[0]["au"], rtol=1e-5
  )
  rows = layout.read_predictions(workdir)
  names = inference.SCALES["rgs"]
  with open(os.path.join(workdir, "predictions.csv")) as f:
    header = f.readline().strip().split(",")
  assert header == layout.PREDICTION_FIELDS + [
    c for n in names for c in (n, f"{n}_pred", f"{n}_label")
  ] + ["grimace_score"]
  for r in rows:
    expected = [float(r[n]) for n in names]
    assert all(0 <= e <= 2 for e in expected)
    assert float(r["grimace_score"]) == pytest.approx(np.mean(expected), abs=1e-3)
  pooled = results["loro"]["au"]
  assert set(pooled) == {*names, "grimace_score"} and pooled["au_ear"]["n"] == len(rows)
  hits = sum(int(r["au_ear_pred"]) == int(r["au_ear_label"]) for r in rows)
  assert pooled["au_ear"]["accuracy"] == pytest.approx(100 * hits / len(rows))
  assert set(results["per_rat"]["rat2"]["au"]) == set(pooled)


def test_paper_model_has_no_au_columns(mini_data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  results = loro.run_loro(mini_config(mini_data_dir, folds=(1,)), workdir)
  with open(os.path.join(workdir, "predictions.csv")) as f:
    assert f.readline().strip().split(",") == layout.PREDICTION_FIELDS
  assert "au" not in results["loro"] and "au" not in results["per_rat"]["rat1"]
  with pytest.raises(ValueError, match="config.scale"):
    loro.run_loro(
      mini_config(mini_data_dir, folds=(1,), scale="mgs", **{"loss.lambda_au": 1.0}), workdir
    )


def test_data_fingerprint():
  """Order-free, and any changed image byte, label or name changes it."""
  rows = [
    loro.prediction_row(
      {
        "filename": f"rat1/{i}.jpg",
        "rat_id": 1,
        "pain_level": i % 3,
        "pain": int(i % 3 > 0),
        "image": bytes([i, 1, 2]),
      },
      0.5,
      1,
      1,
    )
    for i in range(4)
  ]
  fp = loro.data_fingerprint(rows)
  assert fp["test_images"] == 4 and fp == loro.data_fingerprint(rows[::-1])
  for change in ({"image_sha256": "0" * 64}, {"pain_level": 2}, {"filename": "rat1/9.jpg"}):
    assert loro.data_fingerprint([dict(rows[0], **change)] + rows[1:])["sha256"] != fp["sha256"]
  # Rows without image bytes (none here) give the count only.
  assert loro.data_fingerprint(
    [{k: v for k, v in r.items() if k != "image_sha256"} for r in rows]
  ) == {"test_images": 4}
