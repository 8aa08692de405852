"""Losses for PainSeeker: cross-entropy, PRSC (Eq. 5) and their sum (Eq. 6).

All functions are pure and jit-friendly. Shapes are in the argument names:
`B` batch, `C` classes, `K` facial regions (feature-map cells).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import optax


def _masked_mean(values_B: jax.Array, mask_B: jax.Array | None) -> jax.Array:
  """`sum_b m_b v_b / sum_b m_b` (plain mean if no mask; 0 if all masked)."""
  if mask_B is None:
    return jnp.mean(values_B)
  mask_B = jnp.asarray(mask_B, values_B.dtype)
  # `where` so that NaN/inf in masked-out (padding) rows cannot leak through.
  total = jnp.sum(jnp.where(mask_B > 0, values_B * mask_B, 0.0))
  count = jnp.sum(mask_B)
  return total / jnp.where(count > 0, count, 1.0)


def cross_entropy(
  logits_BxC: jax.Array, labels_B: jax.Array, mask_B: jax.Array | None = None
) -> jax.Array:
  """Mean softmax cross-entropy over the unmasked examples.

  `L_ce = (1 / sum_b m_b) * sum_b m_b * (-log softmax(z_b)[y_b])`

  `logits_BxC` are unnormalised scores, `labels_B` integer class ids and
  `mask_B` optional 0/1 weights (e.g. 0 for batch padding; an all-zero mask
  gives 0). Returns the scalar float32 loss.
  """
  per_example_B = optax.softmax_cross_entropy_with_integer_labels(
    jnp.asarray(logits_BxC, jnp.float32), labels_B
  )
  return _masked_mean(per_example_B, mask_B)


def au_cross_entropy(au_logits_BxAx3: jax.Array, au_labels_BxA: jax.Array) -> jax.Array:
  """Mean cross-entropy of the action-unit (AU) heads over the AU scores that are known.

  `L_au = (1 / sum_{b,a} m_ba) * sum_{b,a} m_ba * (-log softmax(z_ba)[y_ba])`, with
  `m_ba = 1` where `y_ba` is a score 0/1/2 and 0 where it is -1 ("not scorable", or an image
  without AU scores, or batch padding). Every known (image, AU) pair weighs the same; 0 when
  nothing is known. `au_logits_BxAx3`: unnormalised scores of the three levels of each AU.
  """
  labels_BxA = jnp.asarray(au_labels_BxA)
  known_BxA = labels_BxA >= 0
  per_entry_BxA = optax.softmax_cross_entropy_with_integer_labels(
    jnp.asarray(au_logits_BxAx3, jnp.float32), jnp.where(known_BxA, labels_BxA, 0)
  )
  return _masked_mean(per_entry_BxA.reshape(-1), known_BxA.reshape(-1))


def _check_k_h(k_h, num_regions: int) -> None:
  if isinstance(k_h, bool) or not isinstance(k_h, numbers.Integral):
    raise ValueError(f"config.loss.k_h must be an integer, got {k_h!r}")
  if not 1 <= k_h <= num_regions - 1:
    raise ValueError(
      f"config.loss.k_h={k_h} is invalid for K={num_regions} regions: need "
      f"1 <= k_h <= K - 1 = {num_regions - 1} (PRSC compares the k_h top "
      "regions with the mean of the remaining K - k_h >= 1 regions)."
    )


def validate_prsc_args(k_h, num_regions: int, delta) -> None:
  """Checks PRSC hyper-parameters at config time; never clips.

  Raises ValueError (naming `config.loss.k_h` / `config.loss.delta`) if `k_h`
  is not an integer in `[1, K - 1]`, K = `num_regions`, or `delta < 0`.
  """
  if num_regions < 2:
    raise ValueError(
      f"PRSC needs at least 2 regions, got K={num_regions} (input images too small for the model?)"
    )
  _check_k_h(k_h, num_regions)
  if not isinstance(delta, numbers.Real) or isinstance(delta, bool):
    raise ValueError(f"config.loss.delta must be a number, got {delta!r}")
  if not delta >= 0:  # also rejects NaN
    raise ValueError(f"config.loss.delta must be >= 0, got {delta}")


def prsc_loss(beta_BxK: jax.Array, k_h: int, delta, mask_B: jax.Array | None = None) -> jax.Array:
  """Pain-region score-consistency (PRSC) loss, Eq. 5.

  Sort each row of `beta` descending; `top` = the `k_h` largest, `rest`
  = the other `K - k_h`. Then:

    L_b = (1 / k_h) * sum_{i in top} max(0, delta - (beta_i - mean(rest)))
    L   = mean_b L_b          (masked mean if `mask_B` is given)

  Gradients flow through the sorted values (ties are handled by the sort's
  permutation; any consistent assignment gives the same loss).

  `beta_BxK` holds the region weights (rows sum to 1 for PainSeeker); `k_h`
  is the number of high-score regions, a static int in `[1, K - 1]`; `delta`
  is the margin (python float or scalar array) and `mask_B` optional 0/1
  example weights.

  Raises ValueError at trace time if `k_h` is invalid for `K` (static shape),
  or if a python `delta` is negative.
  """
  K = beta_BxK.shape[-1]
  _check_k_h(k_h, K)
  if isinstance(delta, numbers.Real) and not delta >= 0:
    raise ValueError(f"config.loss.delta must be >= 0, got {delta}")
  beta_BxK = jnp.asarray(beta_BxK, jnp.float32)
  sorted_BxK = -jnp.sort(-beta_BxK, axis=-1)  # descending
  top_BxKh = sorted_BxK[:, :k_h]
  rest_mean_Bx1 = jnp.mean(sorted_BxK[:, k_h:], axis=-1, keepdims=True)
  hinge_BxKh = jax.nn.relu(delta - (top_BxKh - rest_mean_Bx1))
  return _masked_mean(jnp.mean(hinge_BxKh, axis=-1), mask_B)


def total_loss(
  logits_BxC: jax.Array,
  labels_B: jax.Array,
  beta_BxK: jax.Array | None,
  lambda_prsc,
  k_h: int,
  delta,
  mask_B: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """PainSeeker objective, Eq. 6.

  `L = L_ce + lambda_prsc * L_prsc`; with `beta_BxK=None` (plain
  ResNet-18) the PRSC term is 0 and `k_h`/`delta` are ignored.

  Returns `(total, {'ce': L_ce, 'prsc': L_prsc})` (all scalars).
  """
  ce = cross_entropy(logits_BxC, labels_B, mask_B)
  if beta_BxK is None:
    prsc = jnp.zeros((), jnp.float32)
  else:
    prsc = prsc_loss(beta_BxK, k_h, delta, mask_B)
  total = ce + lambda_prsc * prsc
  return total, {"ce": ce, "prsc": prsc}
