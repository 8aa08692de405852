"""Tests for painseeker_jax.models (tiny variant + eval_shape at 224)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from painseeker_jax import models

TORCHVISION_RESNET18_PARAMS = 11_689_512


def _init(model, images):
  return model.init(jax.random.key(0), images, train=False)


def _images(batch, size, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


@pytest.fixture(scope="module")
def tiny_painseeker():
  model = models.create_model("painseeker", 2, size="tiny")
  images = _images(3, 64)
  variables = jax.jit(lambda x: _init(model, x))(images)
  return model, variables, images


def test_resnet18_param_count_matches_torchvision():
  model = models.ResNet18(num_classes=1000)
  shapes = jax.eval_shape(lambda: _init(model, jnp.zeros((1, 224, 224, 3))))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  assert n == TORCHVISION_RESNET18_PARAMS


def test_resnet18_shapes_at_224():
  trunk = models.ResNetTrunk(stage_sizes=(2, 2, 2, 2))
  x = jnp.zeros((2, 224, 224, 3))
  fmap = jax.eval_shape(lambda: trunk.init_with_output(jax.random.key(0), x, train=False)[0])
  assert fmap.shape == (2, 7, 7, 512)

  logits = jax.eval_shape(
    lambda: models.ResNet18(num_classes=2).init_with_output(jax.random.key(0), x, train=False)[0]
  )
  assert logits.shape == (2, 2)

  logits, beta = jax.eval_shape(
    lambda: models.create_model("painseeker", 2).init_with_output(
      jax.random.key(0), x, train=False
    )[0]
  )
  assert logits.shape == (2, 2)
  assert beta.shape == (2, 49)


def test_conv1_output_is_112_at_224():
  trunk = models.ResNetTrunk(stage_sizes=(2, 2, 2, 2))
  x = jnp.zeros((1, 224, 224, 3))
  _, state = jax.eval_shape(
    lambda: trunk.init_with_output(jax.random.key(0), x, train=False, capture_intermediates=True)
  )
  conv1_out = state["intermediates"]["conv1"]["__call__"][0]
  assert conv1_out.shape == (1, 112, 112, 64)


@pytest.mark.parametrize("size,k", [(64, 4), (96, 9), (100, 16)])
def test_painseeker_num_regions_follows_feature_map(size, k):
  model = models.create_model("painseeker", 2, size="tiny")
  x = jnp.zeros((2, size, size, 3))
  logits, beta = jax.eval_shape(
    lambda: model.init_with_output(jax.random.key(0), x, train=False)[0]
  )
  assert logits.shape == (2, 2)
  assert beta.shape == (2, k)


def test_stem_padding_is_symmetric_like_torch():
  trunk = models.ResNetTrunk(**models.TINY)
  x = _images(2, 32, seed=1)
  _, state = jax.jit(
    lambda x: trunk.init_with_output(jax.random.key(0), x, train=False, capture_intermediates=True)
  )(x)
  ours = state["intermediates"]["conv1"]["__call__"][0]
  kernel = state["params"]["conv1"]["kernel"]

  def manual(padding):
    return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(2, 2), padding=padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  np.testing.assert_allclose(ours, manual(((3, 3), (3, 3))), atol=1e-5)
  # 'SAME' pads (2, 3) for a 7x7/2 conv on even inputs: must NOT match.
  assert not np.allclose(ours, manual("SAME"), atol=1e-3)


def test_max_pool_pads_with_neg_inf():
  x = -jnp.arange(1.0, 17.0).reshape(1, 4, 4, 1)  # all negative
  y = models.torch_max_pool(x)
  assert y.shape == (1, 2, 2, 1)
  # Windows rows/cols {-1,0,1}, {1,2,3}: zero padding would give 0 at [0, 0].
  np.testing.assert_array_equal(y[0, :, :, 0], [[-1.0, -2.0], [-5.0, -6.0]])


def test_tiny_resnet_logits():
  model = models.create_model("resnet18", 3, size="tiny")
  x = _images(2, 32)
  variables = jax.jit(lambda x: _init(model, x))(x)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert logits.shape == (2, 3)
  assert np.all(np.isfinite(logits))
  logits2, beta, _, stats = models.forward(model, variables, x, train=False)
  assert beta is None and stats is None
  np.testing.assert_allclose(logits, logits2, rtol=1e-6)


def test_painseeker_beta_is_distribution(tiny_painseeker):
  model, variables, x = tiny_painseeker
  fwd = jax.jit(lambda v, x: models.forward(model, v, x, train=False))
  logits, beta, _, stats = fwd(variables, x)
  assert logits.shape == (3, 2)
  assert beta.shape == (3, 4)
  assert stats is None
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(beta))
  assert np.all(beta > 0)
  np.testing.assert_allclose(beta.sum(-1), 1.0, rtol=1e-6)


def test_train_mode_updates_batch_stats(tiny_painseeker):
  model, variables, x = tiny_painseeker
  fwd = jax.jit(lambda v, x: models.forward(model, v, x, train=True))
  logits, beta, _, new_stats = fwd(variables, x)
  assert np.all(np.isfinite(logits))
  np.testing.assert_allclose(beta.sum(-1), 1.0, rtol=1e-6)
  old = variables["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new_stats)
  old_mean = old["trunk"]["bn1"]["mean"]
  new_mean = new_stats["trunk"]["bn1"]["mean"]
  assert not np.allclose(old_mean, new_mean)
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), old, new_stats)
  assert all(jax.tree.leaves(changed))


def test_submodule_names_are_torchvision_like():
  model = models.ResNet18(num_classes=10)
  shapes = jax.eval_shape(lambda: _init(model, jnp.zeros((1, 64, 64, 3))))
  trunk = shapes["params"]["trunk"]
  assert set(trunk) == {"conv1", "bn1"} | {f"layer{s}_{b}" for s in range(1, 5) for b in range(2)}
  assert "downsample_conv" not in trunk["layer1_0"]
  for s in range(2, 5):
    assert {"downsample_conv", "downsample_bn"} <= set(trunk[f"layer{s}_0"])
    assert "downsample_conv" not in trunk[f"layer{s}_1"]
  assert trunk["conv1"]["kernel"].shape == (7, 7, 3, 64)
  assert "bias" not in trunk["conv1"]
  assert shapes["params"]["fc"]["kernel"].shape == (512, 10)
  assert set(shapes["batch_stats"]["trunk"]["bn1"]) == {"mean", "var"}


def test_create_model_errors_and_overrides():
  with pytest.raises(ValueError, match="painseeker"):
    models.create_model("vgg16", 2)
  with pytest.raises(ValueError, match="size"):
    models.create_model("resnet18", 2, size="huge")
  m = models.create_model("PainSeeker", 2, size="tiny", num_filters=4)
  assert isinstance(m, models.PainSeeker)
  assert m.num_filters == 4 and tuple(m.stage_sizes) == (1, 1, 1, 1)
  m = models.create_model("resnet18", 5)
  assert isinstance(m, models.ResNet)
  assert tuple(m.stage_sizes) == (2, 2, 2, 2) and m.num_filters == 64


@pytest.mark.parametrize("name", ["painseeker", "resnet18"])
def test_au_heads(name):
  """num_aus > 0 adds `au_fc` on the fused (PainSeeker) or pooled (ResNet) feature: logits of the
  levels 0/1/2 per AU; the pain logits and attention do not depend on it."""
  plain = models.create_model(name, 2, size="tiny")
  heads = models.create_model(name, 2, size="tiny", num_aus=5)
  x = _images(3, 64)
  v = jax.jit(lambda x: _init(heads, x))(x)
  logits, beta, au, _ = models.forward(heads, v, x, train=False)
  assert au.shape == (3, 5, 3) and au.dtype == jnp.float32 and np.all(np.isfinite(au))
  assert v["params"]["au_fc"]["kernel"].shape[-1] == 15
  without = {"params": {k: p for k, p in v["params"].items() if k != "au_fc"}}
  logits0, beta0, au0, _ = models.forward(plain, dict(v, **without), x, train=False)
  assert au0 is None
  np.testing.assert_allclose(logits, logits0, rtol=1e-6)
  assert (beta is None) == (name == "resnet18")
  if beta is not None:
    np.testing.assert_allclose(beta, beta0, rtol=1e-6)
