"""The inference core: preprocessing, the model of a config, and p_pain.

Shared by training (fold evaluation), `painseeker predict` and model export,
so all three see one definition of the input normalisation and the output.
Imports neither TensorFlow, TFDS nor the trainer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from painseeker_jax import models
from painseeker_jax.scales import SCALES

CLASS_NAMES = ("no_pain", "pain")
NUM_CLASSES = len(CLASS_NAMES)
# ImageNet statistics (RGB, 0..1 scale). Used for every model, pretrained or not,
# so that checkpoints and the predict command share one preprocessing.
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def au_names(config) -> tuple[str, ...]:
  """The AUs the config's model has heads for: those of `config.scale` when
  `config.loss.lambda_au` > 0, else none (the paper's model)."""
  if not config.loss.get("lambda_au", 0):
    return ()
  scale = config.get("scale", "rgs")
  if scale not in SCALES:
    raise ValueError(f"config.scale={scale!r}; use one of {', '.join(SCALES)}")
  return SCALES[scale]


def normalize(images_uint8, mean_rgb=MEAN_RGB, std_rgb=STD_RGB):
  """uint8 NHWC -> float32, `(x / 255 - mean_rgb) / std_rgb` (on the device)."""
  x = jnp.asarray(images_uint8, jnp.float32) / 255.0
  return (x - jnp.asarray(mean_rgb, jnp.float32)) / jnp.asarray(std_rgb, jnp.float32)


def make_model(config, dtype: str | None = None, conv: str | None = None):
  """The config's network. `dtype` (default `config.dtype`) is the compute dtype;
  parameters stay float32. `conv` (default `config.model.conv`): the convolution kernels."""
  name = dtype or config.get("dtype", "float32")
  if name not in DTYPES:
    raise ValueError(f"config.dtype={name!r}; use float32 or bfloat16")
  conv = models.resolve_conv(conv or config.model.get("conv", "auto"), DTYPES[name])
  return models.create_model(
    config.model.name,
    NUM_CLASSES,
    size=config.model.size,
    dtype=DTYPES[name],
    conv=conv,
    num_aus=len(au_names(config)),
  )


def variables_template(model, image_size: int) -> dict:
  """Shapes/dtypes of `{"params", "batch_stats"}` for `model` at `image_size` (no compute)."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  return {"params": v["params"], "batch_stats": v["batch_stats"]}


def num_regions(model, image_size: int) -> int | None:
  """K, the number of local regions PainSeeker attends over (None for ResNet)."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = variables_template(model, image_size)
  out = jax.eval_shape(lambda v, x: models.forward(model, v, x, train=False), variables, x)
  return None if out[1] is None else int(out[1].shape[-1])


def outputs(model, variables, images_uint8, mean_rgb=MEAN_RGB, std_rgb=STD_RGB):
  """(p_pain_B, beta_BxK or None, au_probs_BxAx3 or None): the softmax probability of `pain`,
  the attention, and the softmax over the levels 0/1/2 of each AU (models with AU heads)."""
  x = normalize(images_uint8, mean_rgb, std_rgb)
  logits, beta, au_logits, _ = models.forward(model, variables, x, train=False)
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, 1]
  return p, beta, None if au_logits is None else jax.nn.softmax(au_logits, axis=-1)


def p_pain(model, variables, images_uint8, mean_rgb=MEAN_RGB, std_rgb=STD_RGB):
  """(p_pain_B, beta_BxK or None): the softmax probability of `pain` and the attention."""
  return outputs(model, variables, images_uint8, mean_rgb, std_rgb)[:2]


def stack_variables(trees: list):
  """Trees of equal structure -> one tree with a new leading axis (folds, ensemble members)."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
