"""The oneDNN path (config.model.conv="onednn") against XLA's own convolutions and max pooling.

Same forward values, input and kernel gradients for every kind of convolution in
ResNet-18, the same training step (loss, gradients, BatchNorm statistics) of the
whole PainSeeker network, and the same parameters (so the same checkpoints).
"""

import logging
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import mini_config
from jax import lax
from jax.test_util import check_grads

from painseeker_jax import inference, losses, models, onednn_conv

pytestmark = pytest.mark.skipif(
  sys.platform != "linux" or platform.machine() != "x86_64",
  reason="the oneDNN path is built for x86-64 Linux (elsewhere config.model.conv=auto uses XLA's)",
)

# (batch, size, in, out, kernel, stride, pad): the stem, 3x3 stride 1 and 2, the 1x1 projection.
SHAPES = [
  (3, 20, 3, 8, 7, 2, 3),
  (2, 9, 16, 16, 3, 1, 1),
  (2, 9, 16, 32, 3, 2, 1),
  (2, 9, 16, 32, 1, 2, 0),
  (2, 2, 64, 64, 3, 1, 1),
]


def _xla(x, k, s, p):
  return lax.conv_general_dilated(
    x, k, (s, s), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}x{}x{}->{}k{}s{}p{}".format(*s))
def test_forward_and_gradients_equal_xla(shape):
  b, size, ci, co, kk, s, p = shape
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(b, size, size, ci)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kk, kk, ci, co)), jnp.float32)
  y_ref, vjp_ref = jax.vjp(lambda x, k: _xla(x, k, s, p), x, k)
  y, vjp = jax.vjp(lambda x, k: onednn_conv.conv2d(x, k, s, p), x, k)
  assert y.shape == y_ref.shape
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  for got, want in zip((y, *vjp(dy)), (y_ref, *vjp_ref(dy))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_numerical_gradients():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 5, 5, 4)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 4, 3)), jnp.float32)
  check_grads(
    lambda x, k: onednn_conv.conv2d(x, k, 2, 1),
    (x, k),
    order=1,
    modes=("rev",),
    eps=1e-2,
    atol=2e-2,
    rtol=2e-2,
  )


def test_unsupported_calls_fall_back_to_lax():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(1, 6, 6, 4)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 4, 4)), jnp.float32)
  dn = lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))
  cases = [
    dict(padding=((1, 0), (1, 0))),
    dict(padding=((1, 1), (1, 1)), rhs_dilation=(2, 2)),
    dict(padding="SAME"),
    dict(padding=((1, 1), (1, 1)), window_strides=(1, 2)),
  ]
  for case in cases:
    kw = dict(window_strides=(1, 1), dimension_numbers=dn) | case
    jaxpr = str(
      jax.make_jaxpr(lambda x, k, kw=kw: onednn_conv.conv_general_dilated(x, k, **kw))(x, k)
    )
    assert "ffi_call" not in jaxpr and "conv_general_dilated" in jaxpr, case
  jaxpr = str(
    jax.make_jaxpr(
      lambda x, k: onednn_conv.conv_general_dilated(
        x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn
      )
    )(x, k)
  )
  assert "ffi_call" in jaxpr
  bf = x.astype(jnp.bfloat16)
  jaxpr = str(
    jax.make_jaxpr(
      lambda x, k: onednn_conv.conv_general_dilated(
        x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn
      )
    )(bf, k.astype(jnp.bfloat16))
  )
  assert "ffi_call" not in jaxpr


def test_vmapped_conv_equals_xla():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(3, 2, 6, 6, 4)), jnp.float32)  # 3 stacked runs
  k = jnp.asarray(rng.normal(size=(3, 3, 3, 4, 5)), jnp.float32)
  got = jax.vmap(lambda x, k: onednn_conv.conv2d(x, k, 1, 1))(x, k)
  want = jax.vmap(lambda x, k: _xla(x, k, 1, 1))(x, k)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("size", [9, 8, 7])
def test_max_pool_equals_flax(size):
  """Values and input gradient of the stem's 3x3/2 max pooling; all-negative inputs check that
  the padding never wins (torch's and flax's -inf padding)."""
  rng = np.random.default_rng(5)
  for x in (rng.normal(size=(2, size, size, 5)), -1 - rng.random((2, size, size, 5))):
    x = jnp.asarray(x, jnp.float32)
    y_ref, vjp_ref = jax.vjp(lambda x: models.torch_max_pool(x, "xla"), x)
    y, vjp = jax.vjp(lambda x: models.torch_max_pool(x, "onednn"), x)
    dy = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    np.testing.assert_array_equal(y, y_ref)
    # an input that is the maximum of several windows sums their gradients, in another order
    np.testing.assert_allclose(vjp(dy)[0], vjp_ref(dy)[0], rtol=1e-6, atol=1e-6)
  distinct = jnp.asarray(
    rng.permutation(x.size).reshape(x.shape) * 0.1, jnp.float32
  )  # no near-ties
  check_grads(
    lambda x: onednn_conv.max_pool(x, 3, 2, 1), (distinct,), order=1, modes=("rev",), eps=1e-2
  )
  stacked = jnp.stack([x, 2 * x])  # under vmap (config.multi_run=vmap)
  np.testing.assert_array_equal(
    jax.vmap(lambda x: onednn_conv.max_pool(x, 3, 2, 1))(stacked),
    jax.vmap(lambda x: models.torch_max_pool(x, "xla"))(stacked),
  )


def test_painseeker_training_step_equals_xla():
  """The whole network at 64 px (K = 2x2): same parameters, loss, gradients, BatchNorm
  statistics."""
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(6, 64, 64, 3)), jnp.float32)
  y = jnp.array([0, 1, 1, 0, 1, 0])
  out = {}
  for conv in ("xla", "onednn"):
    model = models.create_model("painseeker", 2, conv=conv)
    variables = model.init(jax.random.key(0), x[:1], train=False)

    def loss_fn(params, model=model, variables=variables):
      logits, beta, _, bs = models.forward(model, dict(variables, params=params), x, train=True)
      return losses.total_loss(logits, y, beta, 0.1, 2, 0.2)[0], bs

    (loss, bs), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
    out[conv] = variables, loss, bs, grads
  (v0, l0, bs0, g0), (v1, l1, bs1, g1) = out["xla"], out["onednn"]
  assert jax.tree.structure(v0) == jax.tree.structure(v1)  # same parameters: same checkpoints
  jax.tree.map(np.testing.assert_array_equal, v0, v1)
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), bs1, bs0)
  for (path, a), b in zip(jax.tree.leaves_with_path(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(
      a,
      b,
      rtol=2e-3,
      atol=2e-4 * float(np.max(np.abs(b))) + 1e-7,
      err_msg=jax.tree_util.keystr(path),
    )


def test_config_switch(mini_data_dir, monkeypatch):
  config = mini_config(mini_data_dir)
  assert config.model.conv == "auto"
  assert inference.make_model(config).conv == "onednn"  # CPU, one device, float32, handlers load
  assert inference.make_model(mini_config(mini_data_dir, **{"model.conv": "xla"})).conv == "xla"
  assert inference.make_model(mini_config(mini_data_dir, dtype="bfloat16")).conv == "xla"
  with pytest.raises(ValueError, match="config.model.conv='cudnn'; use auto, xla or onednn"):
    inference.make_model(mini_config(mini_data_dir, **{"model.conv": "cudnn"}))
  with pytest.raises(ValueError, match="float32 convolutions on one CPU device.*conv=auto"):
    inference.make_model(mini_config(mini_data_dir, dtype="bfloat16", **{"model.conv": "onednn"}))
  monkeypatch.setattr(jax, "device_count", lambda *a: 8)
  assert inference.make_model(config).conv == "xla"  # a sharded mesh keeps XLA's convolutions


def test_missing_onednn_explains_and_auto_falls_back(monkeypatch, tmp_path, caplog):
  monkeypatch.setattr(onednn_conv, "_prefixes", lambda: [str(tmp_path)])
  monkeypatch.setenv("PAINSEEKER_CACHE", str(tmp_path / "cache"))
  onednn_conv.load.cache_clear()
  onednn_conv.available.cache_clear()
  try:
    with pytest.raises(
      onednn_conv.OnednnUnavailable, match="pip install onednn-cpu-gomp onednn-devel-cpu-gomp"
    ):
      onednn_conv.load()
    with caplog.at_level(logging.WARNING, logger="painseeker"):
      assert models.resolve_conv("auto") == "xla"
    assert "oneDNN convolutions unavailable" in caplog.text
    caplog.clear()
    assert models.resolve_conv("auto") == "xla"  # decided once: no second compile or warning
    assert "oneDNN convolutions unavailable" not in caplog.text
    with pytest.raises(onednn_conv.OnednnUnavailable):
      models.resolve_conv("onednn")
  finally:
    onednn_conv.load.cache_clear()
    onednn_conv.available.cache_clear()
  monkeypatch.undo()
  assert models.resolve_conv("auto") == "onednn"


def test_compiles_into_the_cache_atomically(monkeypatch, tmp_path):
  monkeypatch.setenv("PAINSEEKER_CACHE", str(tmp_path))
  path = onednn_conv._compile()
  assert path.startswith(str(tmp_path)) and path.endswith("libpainseeker_onednn.so")
  assert [f for f in (tmp_path / "onednn").rglob("*") if f.is_file()] == [tmp_path.joinpath(path)]
  assert onednn_conv._compile() == path  # found, not rebuilt


def test_library_that_fails_to_load_is_unavailable(monkeypatch):
  def broken(path):
    raise OSError(f"{path}: cannot open shared object file")

  monkeypatch.setattr(onednn_conv.ctypes.cdll, "LoadLibrary", broken)
  onednn_conv.load.cache_clear()
  onednn_conv.available.cache_clear()
  try:
    with pytest.raises(
      onednn_conv.OnednnUnavailable, match="loading .*libpainseeker_onednn.so failed.*conv=xla"
    ):
      onednn_conv.load()
    assert models.resolve_conv("auto") == "xla"
  finally:
    onednn_conv.load.cache_clear()
    onednn_conv.available.cache_clear()


def test_onednn_is_looked_for_in_the_python_a_venv_was_made_from(monkeypatch):
  """A venv made with --system-site-packages sees the base Python's packages, the oneDNN wheels
  among them; their lib/ and include/ are under sys.base_prefix, not the venv's prefix."""
  monkeypatch.setattr(sys, "prefix", "/somewhere/venv")
  monkeypatch.setattr(sys, "base_prefix", "/opt/python3.11")
  prefixes = onednn_conv._prefixes()
  assert prefixes[:2] == ["/somewhere/venv", "/opt/python3.11"]
