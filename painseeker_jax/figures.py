"""Figure writers: attention overlays (paper Fig. 4) and the sensitivity plot (Fig. 5).

matplotlib with the Agg backend; every figure is written to a temporary file
and renamed, so a PNG is never half-written.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from painseeker_jax import layout  # noqa: E402


def attention_map(beta_K: np.ndarray, size: int) -> np.ndarray:
  """beta over a G x G grid (K = G^2, row-major as the trunk's feature map) ->
  size x size map scaled to [0, 1], bilinearly upsampled."""
  beta_K = np.asarray(beta_K, np.float32)
  g = int(round(np.sqrt(beta_K.size)))
  if g * g != beta_K.size:
    raise ValueError(f"beta has {beta_K.size} regions, not a square grid")
  grid = beta_K.reshape(g, g)
  grid = (grid - grid.min()) / max(float(grid.max() - grid.min()), 1e-12)
  img = Image.fromarray(grid.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
  return np.clip(np.asarray(img), 0.0, 1.0)


def overlay(
  image_HxWx3: np.ndarray, beta_K: np.ndarray, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
  """The attention map coloured with `cmap` and blended onto the face (uint8 RGB)."""
  h, w = image_HxWx3.shape[:2]
  heat = attention_map(beta_K, max(h, w))
  if heat.shape != (h, w):
    heat = np.asarray(Image.fromarray(heat, mode="F").resize((w, h), Image.BILINEAR))
  colours = plt.get_cmap(cmap)(heat)[..., :3]
  out = (1 - alpha) * image_HxWx3.astype(np.float32) / 255.0 + alpha * colours
  return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _save(fig, path: str, dpi: int = 100) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  try:
    with layout.replacing(path) as tmp:
      fig.savefig(tmp, dpi=dpi)
  finally:
    plt.close(fig)


def attention_figure(
  examples: list[dict], path: str, columns=("PainSeeker", "PainSeeker w/o PRSC")
) -> None:
  """One row per example: the face, then one overlay per method.

  examples: dicts with `image` (HxWx3 uint8), `title` (row label) and
  `betas` (one beta_K per entry of `columns`).
  """
  if not examples:
    raise ValueError("no examples to draw")
  n, m = len(examples), 1 + len(columns)
  fig, axes = plt.subplots(n, m, figsize=(2.6 * m, 2.7 * n), squeeze=False)
  for r, ex in enumerate(examples):
    axes[r, 0].imshow(ex["image"])
    axes[r, 0].set_ylabel(ex["title"], fontsize=8)
    for c, (name, beta) in enumerate(zip(columns, ex["betas"]), start=1):
      axes[r, c].imshow(overlay(ex["image"], beta))
      if r == 0:
        axes[r, c].set_title(name, fontsize=9)
    if r == 0:
      axes[r, 0].set_title("face", fontsize=9)
    for ax in axes[r]:
      ax.set_xticks([])
      ax.set_yticks([])
  fig.tight_layout()
  _save(fig, path)


def sensitivity_figure(
  sweeps: dict, path: str, labels: dict | None = None, title: str | None = None
) -> None:
  """Three panels (one per swept parameter): F1 and accuracy vs. the value (mean ± std over
  seeds) and, thin and faint, each seed's own curve: the seeds are paired (every setting of a
  seed starts from the same initialisation and data order), so a parameter's effect shows as
  parallel seed curves and seed noise as crossing ones.

  sweeps: {param: [{"value", "f1_mean", "f1_std", "accuracy_mean", "accuracy_std"}, ...]},
  optionally with "f1_per_seed" / "accuracy_per_seed" (one value or None per seed); a point
  whose means are None (not run yet) is a gap in its curve.
  """
  labels = labels or {"lambda_prsc": r"$\lambda$", "delta": r"$\delta$", "k_h": r"$K_h$"}
  params = list(sweeps)
  fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.4), squeeze=False)
  for ax, p in zip(axes[0], params):
    pts = sorted(sweeps[p], key=lambda d: d["value"])
    x = np.arange(len(pts))
    f1, f1_sd, acc, acc_sd = (
      np.array([np.nan if d[k] is None else d[k] for d in pts], np.float64)
      for k in ("f1_mean", "f1_std", "accuracy_mean", "accuracy_std")
    )
    ax.errorbar(x, f1, yerr=f1_sd, marker="o", color="tab:blue", capsize=3, label="F1")
    ax.set_ylabel("F1", color="tab:blue")
    ax2 = ax.twinx()
    ax2.errorbar(x, acc, yerr=acc_sd, marker="s", color="tab:red", capsize=3, label="accuracy")
    for axis, key, color, marker in (
      (ax, "f1", "tab:blue", "o"),
      (ax2, "accuracy", "tab:red", "s"),
    ):
      seeds_PxS = [d.get(f"{key}_per_seed") or [] for d in pts]
      for s in range(max(map(len, seeds_PxS), default=0)):
        y = [np.nan if s >= len(v) or v[s] is None else v[s] for v in seeds_PxS]
        axis.plot(x, y, marker=marker, ms=3, lw=0.8, alpha=0.35, color=color)
    ax2.set_ylabel("accuracy (%)", color="tab:red")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{d['value']:g}" for d in pts])
    ax.set_xlabel(labels.get(p, p))
    ax.grid(alpha=0.3)
    if np.isnan(f1).all():
      ax.text(0.5, 0.5, "no finished run yet", transform=ax.transAxes, ha="center", va="center")
      ax.set_yticks([])
      ax2.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  _save(fig, path)
