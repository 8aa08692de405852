"""`painseeker pretrain-trunk` (issue #21) on a tiny pool: the trunk file goes through the
ImageNet path (`pretrained.init_from_pretrained`), the run resumes, no pain target."""

import json
import os

import numpy as np
import pytest
from conftest import ROOT

from painseeker_jax import cli, models, pretrain, pretrained
from tfds_ratspain.ratspain import synthetic

CONFIG = os.path.join(ROOT, "configs", "pretrain.py")


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
  root = tmp_path_factory.mktemp("pretrain")
  workdir, out = root / "work", root / "trunk.safetensors"
  argv = ["pretrain-trunk", f"--config={CONFIG}:tiny", "--workdir", workdir, "--output", out]
  assert cli.main([str(a) for a in argv]) == 0
  return {"workdir": workdir, "out": out, "argv": [str(a) for a in argv]}


def test_the_trunk_loads_through_the_imagenet_path(trunk):
  import jax

  state_dict = pretrained.read_state_dict(str(trunk["out"]))
  assert state_dict["fc.weight"].shape == (3 + 2, 512)  # 3 pose outputs + 2 pool rats
  meta = pretrained.read_metadata(str(trunk["out"]))
  assert "head pose + identity" in meta["painseeker_pretrain"]
  model = models.PainSeeker18(num_classes=2)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes))
  loaded = pretrained.init_from_pretrained(str(trunk["out"]), zeros)
  conv1 = np.asarray(loaded["params"]["trunk"]["conv1"]["kernel"])
  np.testing.assert_array_equal(conv1, state_dict["conv1.weight"].transpose(2, 3, 1, 0))
  assert not np.any(np.asarray(loaded["params"]["fc"]["kernel"]))  # the head stays as it was
  assert np.abs(conv1).sum() > 0


def test_fingerprint_is_of_the_weights_not_the_file_bytes(trunk, tmp_path):
  state_dict = pretrained.read_state_dict(str(trunk["out"]))
  meta = {f"key{i}": str(i) for i in range(8)}  # written in another order on every write
  a = pretrained.save_state_dict(str(tmp_path / "a.safetensors"), state_dict, meta)
  b = pretrained.save_state_dict(str(tmp_path / "b.safetensors"), state_dict, dict(meta, x="y"))
  assert open(a, "rb").read() != open(b, "rb").read()
  got = pretrained.fingerprint(a)
  assert got["file"] == "a.safetensors" and len(got["sha256"]) == 64
  assert got["sha256"] == pretrained.fingerprint(b)["sha256"]  # the same weights
  assert got["sha256"] == pretrained.fingerprint(str(trunk["out"]))["sha256"]
  changed = dict(state_dict, **{"fc.bias": state_dict["fc.bias"] + np.float32(1e-6)})
  c = pretrained.save_state_dict(str(tmp_path / "c.safetensors"), changed, meta)
  assert pretrained.fingerprint(c)["sha256"] != got["sha256"]  # one value moved
  renamed = {k.replace("fc.", "head."): v for k, v in state_dict.items()}
  d = pretrained.save_state_dict(str(tmp_path / "d.safetensors"), renamed, meta)
  assert pretrained.fingerprint(d)["sha256"] != got["sha256"]
  assert pretrained.fingerprint(None) is None and pretrained.fingerprint("none") is None


def test_results_hold_the_held_out_figures_and_the_leak_check(trunk):
  results = json.load(open(trunk["workdir"] / "pretrain_results.json"))
  assert results["held_out"]["num_images"] == 2 * 2  # val_per_rat of each of the 2 rats
  assert set(results["held_out"]["pose_mae_deg"]) == {"yaw", "pitch", "roll"}
  assert results["held_out"]["identity_chance"] == 0.5
  leak = results["leak_check"]
  assert leak["num_images"] == 12 and set(leak["pose_vs_au"]) == {"yaw", "pitch", "roll"}
  assert sorted(os.listdir(trunk["workdir"] / "pool")) == ["shard_00000.npz"]
  prov = results["provenance"]  # who made the trunk, and the digest its users record
  assert prov["trunk"] == pretrained.fingerprint(str(trunk["out"])) and prov["cpu"]["model"]


def test_a_rerun_resumes_and_refuses_to_overwrite(trunk, capsys, monkeypatch):
  assert cli.main(trunk["argv"]) == 2  # the output exists
  assert "already exists" in capsys.readouterr().err
  results_path = trunk["workdir"] / pretrain.RESULTS_JSON
  before = pretrained.read_state_dict(str(trunk["out"]))
  results_before = json.load(open(results_path))
  assert len(results_before["epochs"]) == 2 and results_before["last_epoch"]["loss"] > 0

  def no_training(*args):
    raise AssertionError("a finished pretraining trained again")

  monkeypatch.setattr(pretrain, "augment", no_training)  # called by every training step
  assert cli.main(trunk["argv"] + ["--overwrite"]) == 0  # nothing left to train
  after = pretrained.read_state_dict(str(trunk["out"]))
  for k in before:
    np.testing.assert_array_equal(before[k], after[k])
  results_after = json.load(open(results_path))  # the training figures survive the rerun
  assert results_after["epochs"] == results_before["epochs"]
  assert results_after["last_epoch"] == results_before["last_epoch"]
  all_epochs = results_before["seconds"]["train_all_epochs"]  # the first call's time, kept
  assert all_epochs > 0 and results_after["seconds"]["train_all_epochs"] == all_epochs
  assert results_after["seconds"]["train_this_call"] < all_epochs

  capsys.readouterr()
  assert cli.main(trunk["argv"] + ["--overwrite", "--config.seed=1"]) == 2  # another pool
  assert "another configuration (differs in: seed)" in capsys.readouterr().err


def test_settings_that_cannot_train_are_refused_before_any_work(tmp_path, capsys):
  for override, words in (
    ("--config.image_size=64", "--config.image_size=64: must be in 1..resize_size (56)"),
    ("--config.val_per_rat=6", "--config.val_per_rat=6: must be in 0..per_rat - 1"),
    ("--config.num_epochs=0", "--config.num_epochs=0: must be >= 1"),
  ):
    workdir = tmp_path / override.split(".")[-1].split("=")[0]
    argv = ["pretrain-trunk", f"--config={CONFIG}:tiny", "--workdir", workdir]
    argv += ["--output", tmp_path / "t.safetensors", override]
    assert cli.main([str(a) for a in argv]) == 2, override
    assert words in capsys.readouterr().err
    assert not workdir.exists()  # neither tied to the config nor a pool rendered


def test_a_work_directory_in_use_is_refused(tmp_path, capsys):
  import fcntl

  workdir = tmp_path / "work"
  workdir.mkdir()
  with open(workdir / "run.lock", "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's hold
    argv = ["pretrain-trunk", f"--config={CONFIG}:tiny", "--workdir", workdir]
    argv += ["--output", tmp_path / "t.safetensors"]
    assert cli.main([str(a) for a in argv]) == 2
  assert "is in use by another pretrain-trunk" in capsys.readouterr().err
  assert not (workdir / "pool").exists()


def test_nothing_held_out(tmp_path, capsys):
  """val_per_rat 0 trains on every image and says there is no held-out figure."""
  out = tmp_path / "t.safetensors"
  argv = ["pretrain-trunk", f"--config={CONFIG}:tiny", "--workdir", tmp_path / "w"]
  argv += ["--output", out, "--config.val_per_rat=0", "--config.num_epochs=1"]
  assert cli.main([str(a) for a in argv]) == 0
  assert "no image held out (val_per_rat 0)" in capsys.readouterr().out
  results = json.load(open(tmp_path / "w" / pretrain.RESULTS_JSON))
  assert results["held_out"] is None and results["train_images"] == 12 and out.exists()


def test_pool_is_new_rats_with_independent_au_scores():
  specs = synthetic.pool_plan(0, num_rats=30, per_rat=40)
  assert {s.rat_id for s in specs}.isdisjoint(range(1, 100))
  assert all(s.pain_level == -1 for s in specs)
  pool = {
    "pose": np.array([s.head_pose for s in specs], np.float32),
    "rat": np.array([s.rat_id for s in specs]),
    "au": np.array([s.au_scores for s in specs]),
  }
  leak = pretrain.leak_check(pool)
  for r in leak["pose_vs_au"].values():
    assert np.max(np.abs(r)) < 0.1  # 1,200 images: |r| of independent draws is ~0.03
  assert leak["max_abs_identity_vs_au"] < 0.15


def test_flip_negates_yaw_and_roll():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (64, 10, 10, 3), dtype=np.uint8)
  pose = rng.normal(size=(64, 3)).astype(np.float32)
  out, new = pretrain.augment(images, pose, 10, np.random.default_rng(1))
  flipped = np.array([not np.array_equal(o, i) for o, i in zip(out, images)])
  assert 0 < flipped.sum() < 64
  np.testing.assert_array_equal(out[flipped], images[flipped][:, :, ::-1])
  np.testing.assert_array_equal(new[flipped][:, [0, 2]], -pose[flipped][:, [0, 2]])
  np.testing.assert_array_equal(new[:, 1], pose[:, 1])
  np.testing.assert_array_equal(new[~flipped], pose[~flipped])


def test_loss_is_pose_mse_plus_identity_cross_entropy():
  out = np.array([[0.5, -1.0, 0.0, 2.0, 0.0]], np.float32)
  pose = np.array([[30.0, -30.0, 15.0]], np.float32)
  loss, (mse, ce) = pretrain.loss_fn(out, pose, np.array([1]), 2.0)
  want_mse = np.mean((out[0, :3] - pose[0] / pretrain.POSE_SCALE) ** 2)
  want_ce = -np.log(np.exp(0.0) / (np.exp(2.0) + np.exp(0.0)))
  assert float(mse) == pytest.approx(want_mse) and float(ce) == pytest.approx(want_ce, rel=1e-5)
  assert float(loss) == pytest.approx(2.0 * want_mse + want_ce, rel=1e-5)
