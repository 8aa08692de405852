"""Data-parallel training on a device mesh (painseeker_jax.sharding) and bf16 compute.

The multi-device checks run in a subprocess with 8 simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`, read by JAX at import),
comparing against a mesh of 1 device in the same process.
"""

import json
import os
import subprocess
import sys
import textwrap
import types

import jax
import numpy as np
import pytest
from conftest import ROOT, mini_config

from painseeker_jax import inference, loro, sharding, train


def _batch(n=8, size=64, seed=0):
  rng = np.random.default_rng(seed)
  return {
    "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
    "label": np.array([0, 1] * (n // 2), np.int32),
  }


def test_divisibility_message_names_the_field():
  sharding.check_divisible(64, 8)
  with pytest.raises(
    ValueError,
    match=r"config.batch_size=64 does not divide over the 3 devices.*"
    r"multiple of 3 \(e.g. 63 or 66\)",
  ):
    sharding.check_divisible(64, 3)
  with pytest.raises(ValueError, match="config.eval_batch_size=10"):
    sharding.check_divisible(10, 4, "config.eval_batch_size")


def test_validate_config_checks_both_batch_sizes(mini_data_dir):
  three = types.SimpleNamespace(size=3)  # as if on a mesh of 3 devices
  with pytest.raises(ValueError, match="config.batch_size=8 does not divide"):
    train.make_trainer(mini_config(mini_data_dir), three)
  with pytest.raises(ValueError, match="config.eval_batch_size=16 does not divide"):
    loro.validate_config(mini_config(mini_data_dir, batch_size=9), 3)
  with pytest.raises(ValueError, match="config.dtype"):
    train.make_trainer(mini_config(mini_data_dir, dtype="float16"))
  with pytest.raises(ValueError, match="config.multi_run"):
    loro.validate_config(mini_config(mini_data_dir, multi_run="folds"), 1)
  with pytest.raises(ValueError, match=r"config.folds=\(2, 2\) names 2 more than once"):
    loro.validate_config(mini_config(mini_data_dir, folds=(2, 2)), 1)


def test_multi_host_environment_detection(monkeypatch):
  for var in (
    "PAINSEEKER_DISTRIBUTED",
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "TPU_PROCESS_ADDRESSES",
    "TPU_WORKER_HOSTNAMES",
  ):
    monkeypatch.delenv(var, raising=False)
  assert not sharding.multi_host_environment()
  assert sharding.maybe_initialize_distributed() is False  # single host: nothing to do
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")  # one-host TPU VM (e.g. Colab v2-8)
  assert not sharding.multi_host_environment()
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1-w-0,t1-w-1")  # a pod slice
  assert sharding.multi_host_environment()
  monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert sharding.multi_host_environment()
  # Too late to initialise (this process already uses its devices): a clear error, no hang.
  jax.devices()
  with pytest.raises(RuntimeError, match="maybe_initialize_distributed"):
    sharding.maybe_initialize_distributed()


def test_single_device_is_a_mesh_of_one(mini_data_dir):
  config = mini_config(mini_data_dir)
  mesh = sharding.make_mesh(jax.devices()[:1])
  trainer = train.make_trainer(config, mesh)
  state, out = trainer.step(
    trainer.init(jax.random.key(0)), sharding.shard_batch(_batch(), mesh), jax.random.key(1)
  )
  assert np.isfinite(float(out["loss"])) and int(state.step) == 1
  assert state.params["fc"]["kernel"].sharding == sharding.replicated(mesh)


def test_bfloat16_step_is_close_to_float32(mini_data_dir):
  """bf16 activations, fp32 parameters: a finite loss close to the fp32 one."""
  outs = {}
  for dtype in ("float32", "bfloat16"):
    config = mini_config(mini_data_dir, dtype=dtype)
    trainer = train.make_trainer(config)
    state, out = trainer.step(trainer.init(jax.random.key(0)), _batch(), jax.random.key(1))
    kernels = jax.tree.leaves(state.params)
    assert all(k.dtype == np.float32 for k in kernels)  # parameters stay float32
    outs[dtype] = jax.device_get(out)
  assert (
    inference.make_model(mini_config(mini_data_dir, dtype="bfloat16")).dtype == jax.numpy.bfloat16
  )
  assert np.isfinite(outs["bfloat16"]["loss"])
  np.testing.assert_allclose(outs["bfloat16"]["loss"], outs["float32"]["loss"], rtol=3e-2)
  assert outs["bfloat16"]["loss"] != outs["float32"]["loss"]  # it did compute in bf16


_EIGHT_DEVICES = textwrap.dedent(r"""
    import json, sys
    import jax, numpy as np
    sys.path[:0] = [sys.argv[3], sys.argv[4]]
    from conftest import mini_config
    from painseeker_jax import inference, loro, sharding, train

    data_dir, workdir = sys.argv[1], sys.argv[2]
    assert jax.device_count() == 8, jax.devices()
    mesh1, mesh8 = sharding.make_mesh(jax.devices()[:1]), sharding.make_mesh()
    assert mesh8.size == 8
    # Adam's eps raised from 1e-8: on the first steps Adam's update is lr * g / (|g| + eps), about
    # lr * sign(g), so float summation-order noise in a near-zero gradient component flips a
    # whole step (measured: 3e-4 with eps 1e-8, 2e-7 with eps 1e-3).
    eps = {"optimizer.eps": 1e-3}
    config = mini_config(data_dir, **eps)  # batch 8: one image per device
    model = inference.make_model(config)
    rng = np.random.default_rng(0)
    batches = [{"image": rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),
                "label": rng.integers(0, 2, 8).astype(np.int32)} for _ in range(2)]
    res = {}
    for name, mesh in (("1", mesh1), ("8", mesh8)):
      trainer = train.make_trainer(config, mesh)
      step, state, outs = trainer.step, trainer.init(jax.random.key(0)), []
      for i, b in enumerate(batches):  # two steps: the second one uses the updated statistics
        sb = sharding.shard_batch(b, mesh)
        assert len(sb["image"].addressable_shards) == mesh.size
        assert sb["image"].addressable_shards[0].data.shape[0] == 8 // mesh.size
        state, out = step(state, sb, jax.random.key(i))
        outs.append(jax.device_get(out))
      assert state.params["fc"]["kernel"].sharding.is_fully_replicated
      assert len(state.params["fc"]["kernel"].sharding.device_set) == mesh.size
      res[name] = (outs, jax.device_get({"params": state.params, "batch_stats": state.batch_stats}))
    (o1, v1), (o8, v8) = res["1"], res["8"]
    for a, b in zip(o1, o8):
      for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # BatchNorm over the global batch: with one image per device, per-device statistics
    # would be far off.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 v1["batch_stats"], v8["batch_stats"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6),
                 v1["params"], v8["params"])

    # Fold-stacked evaluation, batch sharded, fold axis whole.
    v = inference.stack_variables([v1, v8])
    images = rng.integers(0, 256, (2, 16, 64, 64, 3), dtype=np.uint8)
    p1 = loro.make_fold_eval(model, "map", mesh1)(v, sharding.shard_fold_batch(images, mesh1))
    p8 = loro.make_fold_eval(model, "map", mesh8)(v, sharding.shard_fold_batch(images, mesh8))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 jax.device_get(p1), jax.device_get(p8))

    # A short LORO run on all 8 devices completes and matches the 1-device run.
    cfg = lambda: mini_config(data_dir, folds=(1,), **eps)
    r8 = loro.run_loro(cfg(), workdir + "/eight")
    # The same fold trained through the stacked (vmapped) trainer, batch sharded over 8 devices.
    loro.run_loro(mini_config(data_dir, folds=(1,), multi_run="vmap", **eps),
                  workdir + "/eight_vmap")
    real_make_mesh = sharding.make_mesh
    sharding.make_mesh = lambda devices=None: real_make_mesh(jax.devices()[:1])
    r1 = loro.run_loro(cfg(), workdir + "/one")
    read = lambda d: np.loadtxt(d + "/predictions.csv", delimiter=",", skiprows=1, usecols=4)
    np.testing.assert_allclose(read(workdir + "/eight"), read(workdir + "/one"), atol=1e-4)
    np.testing.assert_allclose(read(workdir + "/eight_vmap"), read(workdir + "/one"), atol=1e-3)
    print(json.dumps({"loss8": float(o8[0]["loss"]), "loss1": float(o1[0]["loss"]),
                      "n_pred": len(read(workdir + "/eight")), "f1": r8["loro"]["f1"]}))
""")


def test_eight_devices_match_one_device(mini_data_dir, tmp_path):
  """8 simulated devices: the same losses, parameters and BatchNorm statistics as 1 device
  (two steps), the same fold predictions, and a one-fold LORO run that completes (also
  through the stacked trainer, config.multi_run=vmap)."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
    [
      sys.executable,
      "-c",
      _EIGHT_DEVICES,
      mini_data_dir,
      str(tmp_path),
      ROOT,
      os.path.join(ROOT, "tests"),
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["n_pred"] == 12 and np.isclose(out["loss8"], out["loss1"], rtol=1e-5)
