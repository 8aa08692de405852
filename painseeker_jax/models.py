"""ResNet-18 and PainSeeker models in Flax linen.

The trunk follows torchvision's `resnet18` layout exactly (same layer order,
kernel sizes, strides and *symmetric* explicit padding), so that torchvision
ImageNet weights can be copied into it one tensor at a time. Images are NHWC.

Parameter tree (identical for `ResNet` and `PainSeeker` under `trunk`):

  params/trunk/conv1/kernel                      <- torch conv1.weight
  params/trunk/bn1/{scale,bias}                  <- torch bn1.{weight,bias}
  batch_stats/trunk/bn1/{mean,var}               <- torch bn1.running_{mean,var}
  params/trunk/layer{s}_{b}/conv{1,2}/kernel     <- torch layer{s}.{b}.conv{1,2}
  params/trunk/layer{s}_{b}/bn{1,2}/...          <- torch layer{s}.{b}.bn{1,2}
  params/trunk/layer{s}_{b}/downsample_conv/...  <- torch layer{s}.{b}.downsample.0
  params/trunk/layer{s}_{b}/downsample_bn/...    <- torch layer{s}.{b}.downsample.1
  params/fc/{kernel,bias}                        <- torch fc.{weight,bias} (ResNet)

with `s` in 1..4 and `b` the block index within the stage (0-based, as in
torch). Conv kernels are HWIO (torch OIHW needs `transpose(2, 3, 1, 0)`),
Dense kernels are (in, out) (torch Linear weight needs `.T`).

`PainSeeker` adds `params/region_score` (g of Eq. 2, Dense(1)) and
`params/fc` (h of Eq. 3, Dense(num_classes)).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

# torchvision initialises convs with kaiming_normal_(mode='fan_out', 'relu').
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight.
_dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

_PAD_3x3 = ((1, 1), (1, 1))
_PAD_1x1 = ((0, 0), (0, 0))
_PAD_7x7 = ((3, 3), (3, 3))


def torch_max_pool(x_NHWC: jax.Array, impl: str = "xla") -> jax.Array:
  """torch `MaxPool2d(kernel_size=3, stride=2, padding=1)`: pads with -inf.

  `impl='onednn'`: oneDNN's pooling (its gradient runs much faster on the CPU
  than XLA's select-and-scatter; figures: benchmarks/README.md); the same
  values and gradients.
  """
  if impl == "onednn" and x_NHWC.dtype == jnp.float32:
    from painseeker_jax import onednn_conv  # noqa: PLC0415

    return onednn_conv.max_pool(x_NHWC, 3, 2, 1)
  return nn.max_pool(x_NHWC, (3, 3), strides=(2, 2), padding=_PAD_3x3)


class BasicBlock(nn.Module):
  """torchvision BasicBlock: two 3x3 convs + (projection) shortcut."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1

  @nn.compact
  def __call__(self, x_BxHxWxC):
    in_channels = x_BxHxWxC.shape[-1]
    s = (self.strides, self.strides)
    y = self.conv(self.filters, (3, 3), s, padding=_PAD_3x3, name="conv1")(x_BxHxWxC)
    y = self.norm(name="bn1")(y)
    y = nn.relu(y)
    y = self.conv(self.filters, (3, 3), padding=_PAD_3x3, name="conv2")(y)
    y = self.norm(name="bn2")(y)

    residual = x_BxHxWxC
    if self.strides != 1 or in_channels != self.filters:
      residual = self.conv(self.filters, (1, 1), s, padding=_PAD_1x1, name="downsample_conv")(
        residual
      )
      residual = self.norm(name="downsample_bn")(residual)
    return nn.relu(residual + y)


CONV_IMPLS = ("xla", "onednn")


def _conv_fn(conv: str):
  """The `lax.conv_general_dilated` stand-in of a conv implementation (None: XLA's own)."""
  if conv == "xla":
    return None
  if conv == "onednn":
    from painseeker_jax import onednn_conv  # noqa: PLC0415  (compiles C++ on first use)

    return onednn_conv.conv_general_dilated
  raise ValueError(f"Unknown conv implementation {conv!r}; valid: {CONV_IMPLS}")


def resolve_conv(conv: str, dtype: Any = jnp.float32) -> str:
  """`config.model.conv` -> `'xla'` or `'onednn'`.

  `'auto'`: oneDNN on a one-device CPU run in float32 when its handlers load
  (the oneDNN wheels and a C++ compiler are there; otherwise a warning and
  XLA's), XLA's own convolutions everywhere else.
  """
  if conv not in CONV_IMPLS + ("auto",):
    raise ValueError(f"config.model.conv={conv!r}; use auto, xla or onednn")
  cpu_single = jax.default_backend() == "cpu" and jax.device_count() == 1
  if conv == "auto":
    if not (cpu_single and jnp.dtype(dtype) == jnp.float32):
      return "xla"
    from painseeker_jax import onednn_conv  # noqa: PLC0415

    return "onednn" if onednn_conv.available() else "xla"
  if conv == "onednn":
    if not cpu_single or jnp.dtype(dtype) != jnp.float32:
      raise ValueError(
        "config.model.conv='onednn' runs float32 convolutions on one CPU device; this run has "
        f"{jax.device_count()} {jax.default_backend()} device(s) and "
        f"dtype {jnp.dtype(dtype).name}. "
        "Use --config.model.conv=auto (or xla)."
      )
    from painseeker_jax import onednn_conv  # noqa: PLC0415

    onednn_conv.load()  # raises OnednnUnavailable saying why
  return conv


class ResNetTrunk(nn.Module):
  """Stem + four stages; returns the last feature map `B x H' x W' x C`.

  At 224x224 input and the ResNet-18 configuration the output is 7x7x512.
  `conv` selects how convolutions and the stem's max pooling are computed
  (`'xla'`, or `'onednn'`: oneDNN's CPU kernels, `painseeker_jax.onednn_conv`);
  the parameters are the same either way.
  """

  stage_sizes: Sequence[int]
  num_filters: int = 64
  dtype: Any = jnp.float32
  conv: str = "xla"

  @nn.compact
  def __call__(self, images_BxHxWx3, train: bool = True):
    conv = partial(
      nn.Conv,
      use_bias=False,
      dtype=self.dtype,
      kernel_init=_conv_init,
      conv_general_dilated=_conv_fn(self.conv),
    )
    norm = partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
    )

    x = jnp.asarray(images_BxHxWx3, self.dtype)
    x = conv(self.num_filters, (7, 7), (2, 2), padding=_PAD_7x7, name="conv1")(x)
    x = norm(name="bn1")(x)
    x = nn.relu(x)
    x = torch_max_pool(x, self.conv)
    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(
          self.num_filters * 2**i, conv=conv, norm=norm, strides=strides, name=f"layer{i + 1}_{j}"
        )(x)
    return x


class ResNet(nn.Module):
  """Plain ResNet classifier: trunk -> global average pool -> Dense `fc`.

  `apply(variables, images_NHWC, train=...)` returns logits `B x C`.
  """

  stage_sizes: Sequence[int]
  num_classes: int
  num_filters: int = 64
  dtype: Any = jnp.float32
  conv: str = "xla"
  num_aus: int = 0  # > 0: AU heads on the pooled feature (`au_heads`)

  @nn.compact
  def __call__(self, images_BxHxWx3, train: bool = True):
    fmap_BxHxWxD = ResNetTrunk(
      self.stage_sizes, self.num_filters, dtype=self.dtype, conv=self.conv, name="trunk"
    )(images_BxHxWx3, train=train)
    pooled_BxD = jnp.mean(fmap_BxHxWxD, axis=(1, 2))
    logits_BxC = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=_dense_init, name="fc")(
      pooled_BxD
    )
    logits_BxC = jnp.asarray(logits_BxC, jnp.float32)
    if self.num_aus:
      return logits_BxC, au_heads(self, pooled_BxD)
    return logits_BxC


class PainSeeker(nn.Module):
  """PainSeeker: region-attention over the trunk's last feature map.

  With `x_k` (k = 1..K, K = H'W') the D-dim feature of region k (Eq. 1):

    beta_k = sigmoid(g(x_k)) / sum_j sigmoid(g(x_j))        (Eq. 2)
    logits = h(sum_j beta_j x_j)                             (Eq. 3)

  with g = Dense(1) (`region_score`) and h = Dense(num_classes) (`fc`).
  Returns `(logits_BxC, beta_BxK)`; K follows the feature map (49 at 224).
  Attention weights and the fused feature are computed in float32.
  With `num_aus` > 0 it also returns the AU heads' logits on the fused
  feature, `(logits_BxC, beta_BxK, au_logits_BxAx3)` (`au_heads`).
  """

  stage_sizes: Sequence[int]
  num_classes: int
  num_filters: int = 64
  dtype: Any = jnp.float32
  conv: str = "xla"
  num_aus: int = 0

  @nn.compact
  def __call__(self, images_BxHxWx3, train: bool = True):
    fmap_BxHxWxD = ResNetTrunk(
      self.stage_sizes, self.num_filters, dtype=self.dtype, conv=self.conv, name="trunk"
    )(images_BxHxWx3, train=train)
    B, H, W, D = fmap_BxHxWxD.shape
    feats_BxKxD = jnp.reshape(fmap_BxHxWxD, (B, H * W, D))  # Eq. 1
    scores_BxKx1 = nn.Dense(1, dtype=self.dtype, kernel_init=_dense_init, name="region_score")(
      feats_BxKxD
    )
    gates_BxK = jax.nn.sigmoid(jnp.asarray(scores_BxKx1[..., 0], jnp.float32))
    beta_BxK = gates_BxK / jnp.sum(gates_BxK, axis=-1, keepdims=True)  # Eq. 2
    fused_BxD = jnp.einsum("bk,bkd->bd", beta_BxK, jnp.asarray(feats_BxKxD, jnp.float32))
    logits_BxC = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=_dense_init, name="fc")(
      fused_BxD
    )  # Eq. 3
    if self.num_aus:
      return jnp.asarray(logits_BxC, jnp.float32), beta_BxK, au_heads(self, fused_BxD)
    return jnp.asarray(logits_BxC, jnp.float32), beta_BxK


def au_heads(module: nn.Module, feature_BxD: jax.Array) -> jax.Array:
  """The grimace-scale action-unit heads: for each of `module.num_aus` AUs, logits of the
  levels 0/1/2 from the image's feature (one Dense(3 A), `au_fc`), float32 `B x A x 3`.
  Called inside `module`'s compact `__call__`."""
  out_BxA3 = nn.Dense(
    3 * module.num_aus, dtype=module.dtype, kernel_init=_dense_init, name="au_fc"
  )(feature_BxD)
  return jnp.asarray(out_BxA3, jnp.float32).reshape(feature_BxD.shape[0], module.num_aus, 3)


ResNet18 = partial(ResNet, stage_sizes=(2, 2, 2, 2))
PainSeeker18 = partial(PainSeeker, stage_sizes=(2, 2, 2, 2))

# Tiny variants (channels 8/16/32/64, one block per stage) for fast tests.
TINY = dict(stage_sizes=(1, 1, 1, 1), num_filters=8)
ResNetTiny = partial(ResNet, **TINY)
PainSeekerTiny = partial(PainSeeker, **TINY)

_MODELS = {"painseeker": PainSeeker, "resnet18": ResNet}
_SIZES = {"full": dict(stage_sizes=(2, 2, 2, 2), num_filters=64), "tiny": TINY}


def create_model(name: str, num_classes: int, *, size: str = "full", **kw) -> nn.Module:
  """Builds a model by name.

  `name` is `'painseeker'` or `'resnet18'` (case-insensitive) and
  `num_classes` the number of output classes; `size` is `'full'` (the
  ResNet-18 trunk, the default) or `'tiny'` (`TINY`, for tests). The keyword
  arguments `**kw` override module fields: `stage_sizes`, `num_filters`,
  `dtype`, `conv` (`'xla'` or `'onednn'`).

  Raises ValueError for an unknown `name` or `size`.
  """
  key = name.lower()
  if key not in _MODELS:
    raise ValueError(f"Unknown model name {name!r}; valid names: {sorted(_MODELS)}")
  if size not in _SIZES:
    raise ValueError(f"Unknown model size {size!r}; valid sizes: {sorted(_SIZES)}")
  fields = {**_SIZES[size], **kw}
  return _MODELS[key](num_classes=num_classes, **fields)


def forward(
  model: nn.Module, variables, images_BxHxWx3, train: bool, rngs=None
) -> tuple[jax.Array, jax.Array | None, jax.Array | None, Any | None]:
  """Applies either model and returns `(logits, beta_or_None, au_logits_or_None, batch_stats)`.

  `model` is a `ResNet` or `PainSeeker` module, `variables` its
  `{'params': ..., 'batch_stats': ...}` and `images_BxHxWx3` the input images
  (NHWC). When `train` is True, BatchNorm uses batch statistics and updates
  the running ones. `rngs` is an optional PRNG dict passed to `apply`.

  The four results are `logits_BxC`; `beta_BxK` (`None` for `ResNet`);
  `au_logits_BxAx3` (`None` without AU heads, `num_aus` 0); and the updated
  `batch_stats` collection (`None` when nothing was mutable).
  """
  mutable = ["batch_stats"] if train else False
  out = model.apply(variables, images_BxHxWx3, train=train, mutable=mutable, rngs=rngs)
  new_batch_stats = None
  if mutable:
    out, updates = out
    new_batch_stats = updates.get("batch_stats")
  out = out if isinstance(out, tuple) else (out,)
  au_logits = out[-1] if getattr(model, "num_aus", 0) else None
  if au_logits is not None:
    out = out[:-1]
  logits_BxC, beta_BxK = (out[0], out[1]) if len(out) == 2 else (out[0], None)
  return logits_BxC, beta_BxK, au_logits, new_batch_stats
