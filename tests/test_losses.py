"""Tests for painseeker_jax.losses against plain numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from painseeker_jax import losses


def prsc_reference(beta, k_h, delta, mask=None):
  """Loop-based numpy PRSC (Eq. 5)."""
  beta = np.asarray(beta, np.float64)
  per_example = []
  for row in beta:
    s = sorted(row.tolist(), reverse=True)
    top, rest = s[:k_h], s[k_h:]
    rest_mean = sum(rest) / len(rest)
    per_example.append(sum(max(0.0, delta - (b - rest_mean)) for b in top) / k_h)
  per_example = np.array(per_example)
  if mask is None:
    return per_example.mean()
  mask = np.asarray(mask, np.float64)
  return (per_example * mask).sum() / mask.sum()


def ce_reference(logits, labels, mask=None):
  logits = np.asarray(logits, np.float64)
  out = []
  for z, y in zip(logits, labels):
    m = z.max()
    log_z = m + np.log(np.exp(z - m).sum())
    out.append(log_z - z[y])
  out = np.array(out)
  if mask is None:
    return out.mean()
  mask = np.asarray(mask, np.float64)
  return (out * mask).sum() / mask.sum()


def random_beta(seed, batch, k):
  g = np.random.default_rng(seed).normal(size=(batch, k))
  e = 1.0 / (1.0 + np.exp(-g))
  return (e / e.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
  "k,k_h,delta",
  [
    (49, 1, 0.0),
    (49, 5, 0.01),
    (49, 10, 0.005),
    (49, 48, 0.02),
    (9, 3, 0.1),
    (4, 2, 0.5),
    (2, 1, 0.3),
  ],
)
def test_prsc_matches_reference(k, k_h, delta):
  beta = random_beta(k * 100 + k_h, 6, k)
  got = losses.prsc_loss(jnp.asarray(beta), k_h, delta)
  np.testing.assert_allclose(got, prsc_reference(beta, k_h, delta), rtol=1e-5, atol=1e-7)


def test_prsc_mask_and_jit():
  beta = random_beta(0, 5, 9)
  mask = np.array([1, 0, 1, 1, 0], np.float32)
  fn = jax.jit(losses.prsc_loss, static_argnums=1)
  got = fn(jnp.asarray(beta), 3, 0.05, jnp.asarray(mask))
  np.testing.assert_allclose(got, prsc_reference(beta, 3, 0.05, mask), rtol=1e-5)


@pytest.mark.parametrize("k_h", [1, 3, 8])
def test_prsc_grads(k_h):
  # Raw (unnormalised) random values: distinct, and with delta large enough
  # that hinges are active and away from their kinks.
  beta = jnp.asarray(np.random.default_rng(k_h).uniform(size=(3, 9)), jnp.float32)
  check_grads(
    lambda b: losses.prsc_loss(b, k_h, 2.0), (beta,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2
  )


def test_prsc_grad_sign():
  beta = jnp.asarray(random_beta(1, 2, 9))
  grad = jax.grad(lambda b: losses.prsc_loss(b, 2, 1.0))(beta)
  order = np.argsort(-np.asarray(beta), axis=-1)
  for g, o in zip(np.asarray(grad), order):
    assert np.all(g[o[:2]] < 0)  # pushes top regions up
    assert np.all(g[o[2:]] > 0)  # and the rest down


def test_prsc_zero_when_margins_met():
  # Top 2 regions hold 0.4 each, remaining 4 hold 0.05: gap 0.35 >= delta.
  beta = jnp.asarray([[0.4, 0.05, 0.05, 0.4, 0.05, 0.05], [0.05, 0.4, 0.05, 0.05, 0.05, 0.4]])
  assert float(losses.prsc_loss(beta, 2, 0.3)) == 0.0
  assert float(losses.prsc_loss(beta, 2, 0.35 - 1e-3)) == 0.0
  assert float(losses.prsc_loss(beta, 2, 0.45)) == pytest.approx(0.1)


def test_prsc_ties():
  beta = jnp.full((3, 4), 0.25)
  loss, grad = jax.value_and_grad(lambda b: losses.prsc_loss(b, 2, 0.125))(beta)
  assert float(loss) == 0.125
  assert np.all(np.isfinite(grad))
  beta = jnp.full((2, 49), 1.0 / 49)
  loss, grad = jax.value_and_grad(lambda b: losses.prsc_loss(b, 7, 0.01))(beta)
  np.testing.assert_allclose(loss, 0.01, rtol=1e-5)
  assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("k_h", [1, 48])
def test_prsc_extreme_k_h(k_h):
  beta = random_beta(k_h, 4, 49)
  got = losses.prsc_loss(jnp.asarray(beta), k_h, 0.02)
  np.testing.assert_allclose(got, prsc_reference(beta, k_h, 0.02), rtol=1e-5)


@pytest.mark.parametrize("k_h", [0, 49, 50, -1])
def test_invalid_k_h_raises(k_h):
  with pytest.raises(ValueError, match=r"config\.loss\.k_h"):
    losses.validate_prsc_args(k_h, 49, 0.01)
  with pytest.raises(ValueError, match=r"config\.loss\.k_h"):
    losses.prsc_loss(jnp.full((2, 49), 1 / 49), k_h, 0.01)


def test_prsc_raises_under_jit_at_trace_time():
  fn = jax.jit(losses.prsc_loss, static_argnums=1)
  with pytest.raises(ValueError, match=r"config\.loss\.k_h"):
    fn(jnp.full((2, 4), 0.25), 4, 0.1)


def test_validate_prsc_args():
  losses.validate_prsc_args(1, 49, 0.0)
  losses.validate_prsc_args(48, 49, 0.5)
  with pytest.raises(ValueError, match=r"config\.loss\.delta"):
    losses.validate_prsc_args(5, 49, -0.1)
  with pytest.raises(ValueError, match=r"config\.loss\.k_h"):
    losses.validate_prsc_args(2.0, 49, 0.1)
  with pytest.raises(ValueError, match="regions"):
    losses.validate_prsc_args(1, 1, 0.1)
  with pytest.raises(ValueError, match=r"config\.loss\.delta"):
    losses.prsc_loss(jnp.full((1, 4), 0.25), 1, -1.0)


def test_cross_entropy_matches_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 3)).astype(np.float32) * 3
  labels = rng.integers(0, 3, size=7)
  np.testing.assert_allclose(
    losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)),
    ce_reference(logits, labels),
    rtol=1e-5,
  )
  mask = np.array([1, 1, 0, 1, 0, 0, 1], np.float32)
  np.testing.assert_allclose(
    losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask)),
    ce_reference(logits, labels, mask),
    rtol=1e-5,
  )


def test_cross_entropy_masked_rows_cannot_poison():
  logits = jnp.asarray([[0.0, 1.0], [jnp.nan, 0.0]])
  labels = jnp.asarray([1, 0])
  mask = jnp.asarray([1.0, 0.0])
  got = losses.cross_entropy(logits, labels, mask)
  np.testing.assert_allclose(got, ce_reference([[0.0, 1.0]], [1]), rtol=1e-6)
  assert float(losses.cross_entropy(logits[:1], labels[:1], jnp.zeros(1))) == 0.0


def test_total_loss_composition():
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)
  labels = jnp.asarray([0, 1, 1, 0])
  beta = jnp.asarray(random_beta(3, 4, 9))
  mask = jnp.asarray([1.0, 1.0, 0.0, 1.0])

  total, parts = losses.total_loss(logits, labels, beta, 0.7, 3, 0.05, mask)
  ce = losses.cross_entropy(logits, labels, mask)
  prsc = losses.prsc_loss(beta, 3, 0.05, mask)
  np.testing.assert_allclose(parts["ce"], ce, rtol=1e-6)
  np.testing.assert_allclose(parts["prsc"], prsc, rtol=1e-6)
  np.testing.assert_allclose(total, ce + 0.7 * prsc, rtol=1e-6)
  assert float(parts["prsc"]) > 0

  total0, parts0 = losses.total_loss(logits, labels, beta, 0.0, 3, 0.05)
  np.testing.assert_allclose(total0, parts0["ce"], rtol=1e-6)

  total_none, parts_none = losses.total_loss(logits, labels, None, 1.0, None, None)
  assert float(parts_none["prsc"]) == 0.0
  np.testing.assert_allclose(total_none, parts0["ce"], rtol=1e-6)


def test_total_loss_grad_under_jit():
  logits = jnp.asarray([[0.3, -0.2], [1.0, 0.5]])
  labels = jnp.asarray([1, 0])
  beta = jnp.asarray(random_beta(5, 2, 4))

  @jax.jit
  def f(z, b):
    return losses.total_loss(z, labels, b, 1.0, 1, 0.5)[0]

  gz, gb = jax.grad(f, argnums=(0, 1))(logits, beta)
  assert np.all(np.isfinite(gz)) and np.all(np.isfinite(gb))
  assert np.any(gb != 0)


def test_au_cross_entropy_matches_masked_reference():
  """Mean CE over the known (image, AU) pairs; -1 entries are left out."""
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(5, 4, 3)).astype(np.float32)
  labels = rng.integers(-1, 3, (5, 4))
  labels[0] = -1  # an image without AU scores
  known = labels >= 0
  ref = ce_reference(logits[known], labels[known])
  np.testing.assert_allclose(losses.au_cross_entropy(logits, labels), ref, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(losses.au_cross_entropy)(logits, labels), ref, rtol=1e-6)
  assert float(losses.au_cross_entropy(logits, -np.ones((5, 4), int))) == 0.0


def test_au_cross_entropy_grads():
  rng = np.random.default_rng(4)
  logits = jnp.asarray(rng.normal(size=(3, 5, 3)))
  labels = jnp.asarray(rng.integers(-1, 3, (3, 5)))
  check_grads(lambda z: losses.au_cross_entropy(z, labels), (logits,), order=2, modes=["rev"])
  g = jax.grad(losses.au_cross_entropy)(logits, labels)
  assert np.all(np.asarray(g)[np.asarray(labels) < 0] == 0)  # unknown scores pull nothing
