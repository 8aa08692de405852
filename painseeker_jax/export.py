"""Self-contained model directories for prediction, and loading LORO work directories.

A *model directory* (written by `painseeker train-final`, read by
`painseeker predict`) needs neither the training work directory nor the data
set. It holds two files:

  model.json        {"format": "painseeker-model", "format_version": 1,
                     "painseeker_jax_version", "created", "config" (the full
                     training config), "model": {"name", "size"},
                     "image_size", "normalization": {"scale", "mean_rgb",
                     "std_rgb"}, "class_names": ["no_pain", "pain"],
                     "num_regions", "scale", "au_names", "training": {...}}
  variables.msgpack  {"params", "batch_stats"} (flax.serialization msgpack)

`scale` is the grimace scale of the config (`rgs`, `mgs`) and `au_names` the
action units the model has heads for (`inference.au_names`: the scale's AUs when
`config.loss.lambda_au` > 0, else an empty list); model directories written before
these fields existed hold no AU heads. Both are checked against the stored config on
loading.

It is written to a temporary directory next to the target and renamed into
place, so a model directory is either complete or absent.

A LORO work directory (`run.py`) can be used for prediction too: its fold
models (orbax checkpoints, `layout.checkpoint_dir`) are loaded and form an
ensemble whose probabilities are averaged (p_pain, and for models with AU
heads the probabilities of each AU's levels).

Loading refuses (ModelLoadError, naming the file and the field or variable) what
would score every input wrongly: non-finite parameters or negative BatchNorm
variances (`check_finite`, also for the fold models of a work directory), a
normalization that is not three finite numbers each with std > 0, and an
`image_size` that is not the size the model was trained at (`check_image_size`
and `_check_model_image_size`).

This module never imports TensorFlow, the data set code or the trainer.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import numbers
import os
import shutil
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import serialization

from painseeker_jax import inference, layout

FORMAT = "painseeker-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
VARIABLES_FILE = "variables.msgpack"
CLASS_NAMES = inference.CLASS_NAMES
# The input sizes a model directory may state (pixels, square). Far beyond anything trainable
# on one accelerator at the top, below any useful face crop at the bottom; `save_model` refuses
# to export outside it, so no exported model falls outside.
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 4096


class ModelLoadError(ValueError):
  """A model directory or work directory cannot be used for prediction."""


@dataclasses.dataclass
class LoadedModel:
  """Everything prediction needs.

  `variables` is a list of `{"params", "batch_stats"}` trees, one per member
  of the ensemble (one for a model directory, one per fold for a LORO work
  directory); `members` names them. `au_names` are the grimace-scale action
  units the model has heads for (`inference.au_names`; empty: none).
  """

  model: Any
  variables: list
  members: list
  image_size: int
  mean_rgb: tuple
  std_rgb: tuple
  class_names: tuple
  num_regions: int | None
  kind: str  # "model" (model directory) or "loro" (work directory ensemble)
  source: str  # the directory it was loaded from
  config: ml_collections.ConfigDict
  au_names: tuple[str, ...] = ()

  @property
  def is_ensemble(self) -> bool:
    return len(self.variables) > 1

  @property
  def scale(self) -> str | None:
    """The grimace scale of the AU heads (`rgs`, `mgs`); None without AU heads."""
    return self.config.get("scale", "rgs") if self.au_names else None

  def describe(self) -> str:
    name = f"{self.config.model.name} ({self.config.model.size}), {self.image_size} px input"
    if self.au_names:
      name += f"; {self.scale.upper()} AU heads ({', '.join(self.au_names)})"
    if self.kind == "loro":
      means = "p_pain is the mean of their probabilities"
      if self.au_names:
        means = "p_pain and the AU level probabilities are the means of theirs"
      return (
        f"ensemble of {len(self.variables)} LORO fold models ({', '.join(self.members)}) from "
        f"{self.source}; {means}; {name}"
      )
    return f"model directory {self.source}; {name}"


def _version() -> str:
  try:
    from importlib.metadata import version

    return version("painseeker-jax")
  except Exception:  # not installed (e.g. run from a source tree)
    return "unknown"


def create_model(config):
  """The network of a saved config, computing in float32 (whatever dtype it was trained in)
  with the convolution kernels this machine runs (`model.conv` auto, whatever kernels trained
  it: a model trained with `conv=onednn` on one CPU is scored on a GPU too)."""
  return inference.make_model(config, dtype="float32", conv="auto")


def _check_variables(template: dict, variables: Any, where: str) -> dict:
  """Raises ModelLoadError (naming `where`) unless `variables` has the template's tree
  and shapes."""
  if not isinstance(variables, dict) or not {"params", "batch_stats"} <= set(variables):
    raise ModelLoadError(f"{where}: does not hold params and batch_stats")
  variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
  t_paths = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(template)}
  v_paths = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(variables)}
  if set(t_paths) != set(v_paths):
    diff = sorted(set(t_paths) ^ set(v_paths))
    raise ModelLoadError(
      f"{where}: the stored variables do not match the configured model "
      f"(differ in {', '.join(diff[:3])}{' ...' if len(diff) > 3 else ''})"
    )
  for k, t in t_paths.items():
    if tuple(np.shape(v_paths[k])) != tuple(t.shape):
      raise ModelLoadError(
        f"{where}: {k} has shape {tuple(np.shape(v_paths[k]))}, the configured "
        f"model expects {tuple(t.shape)}"
      )
  return jax.tree.map(lambda t, v: np.asarray(v, dtype=t.dtype), template, variables)


def _path_str(path) -> str:
  """A tree path as `params/fc/kernel`."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def check_finite(variables: dict, where: str) -> None:
  """Raises ModelLoadError (naming `where` and the first offending variable, e.g.
  `params/fc/kernel`) unless every value is finite and every BatchNorm running
  variance (`batch_stats/.../var`) is >= 0: such a model gives NaN for every input."""
  for path, x in jax.tree_util.tree_leaves_with_path(variables):
    a = np.asarray(x)
    bad = ~np.isfinite(a)
    if bad.any():
      raise ModelLoadError(
        f"{where}: {_path_str(path)} holds {int(bad.sum())} non-finite value(s) (NaN or inf) "
        f"of {a.size}; the file is damaged or the training diverged"
      )
    keys = [getattr(k, "key", None) for k in path]
    if keys[:1] == ["batch_stats"] and keys[-1] == "var" and (a < 0).any():
      raise ModelLoadError(
        f"{where}: {_path_str(path)} holds {int((a < 0).sum())} negative running "
        f"variance(s) of {a.size}; the file is damaged"
      )


def check_image_size(image_size: Any, where: str, field: str = "image_size") -> int:
  """`image_size` as an int in MIN_IMAGE_SIZE..MAX_IMAGE_SIZE; else ModelLoadError naming
  `where` and `field`."""
  if not isinstance(image_size, numbers.Integral) or isinstance(image_size, bool):
    raise ModelLoadError(f"{where}: {field} {image_size!r} is not an integer (pixels)")
  if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
    raise ModelLoadError(
      f"{where}: {field} {image_size} is outside {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels"
    )
  return int(image_size)


def _check_normalization(mean: tuple, std: tuple, where: str) -> None:
  """Three finite numbers each, std > 0; else ModelLoadError naming the field."""
  for field, values in (("mean_rgb", mean), ("std_rgb", std)):
    for v in values:
      if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
        raise ModelLoadError(
          f"{where}: normalization.{field} {list(values)} holds {v!r}; need three finite numbers"
        )
  if not all(v > 0 for v in std):
    raise ModelLoadError(
      f"{where}: normalization.std_rgb {list(std)} must be > 0 (the images are divided by it)"
    )


# ---------------------------------------------------------------------------
# Model directories.


def save_model(
  directory: str, config, variables: dict, *, overwrite: bool = False, training: dict | None = None
) -> str:
  """Writes a self-contained model directory (atomically: temp dir, then rename).

  `directory` is the target; it must not exist (FileExistsError) unless
  `overwrite`, which replaces an existing directory. `config` is the training
  config (ConfigDict), `variables` the `{"params", "batch_stats"}` of the
  trained model and `training` extra provenance stored under "training" in
  model.json. Returns the directory.
  """
  directory = os.path.abspath(directory)
  if os.path.lexists(directory) and not overwrite:
    raise FileExistsError(f"{directory} already exists; use --overwrite to replace it")
  model = create_model(config)
  check_image_size(config.image_size, "the config to export", "config.image_size")
  clean = _check_variables(
    inference.variables_template(model, config.image_size),
    jax.device_get(variables),
    "the variables to export",
  )
  check_finite(clean, "the variables to export")
  meta = {
    "format": FORMAT,
    "format_version": FORMAT_VERSION,
    "painseeker_jax_version": _version(),
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "config": json.loads(config.to_json_best_effort()),
    "model": {"name": config.model.name, "size": config.model.size},
    "image_size": int(config.image_size),
    "normalization": {
      "scale": 255.0,
      "mean_rgb": list(inference.MEAN_RGB),
      "std_rgb": list(inference.STD_RGB),
      "note": "x = (uint8 RGB / scale - mean_rgb) / std_rgb; images resized "
      "(bilinear, aspect not kept) to image_size x image_size",
    },
    "class_names": list(CLASS_NAMES),
    "num_regions": inference.num_regions(model, config.image_size),
    "scale": config.get("scale", "rgs"),
    "au_names": list(inference.au_names(config)),
    "training": training or {},
  }
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = f"{directory}.tmp{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    with open(os.path.join(tmp, VARIABLES_FILE), "wb") as f:
      f.write(serialization.msgpack_serialize(clean))
    with open(os.path.join(tmp, MODEL_JSON), "w", encoding="utf-8") as f:
      f.write(json.dumps(meta, indent=2) + "\n")
    if os.path.lexists(directory):
      old = f"{directory}.old{os.getpid()}"
      os.replace(directory, old)
      os.replace(tmp, directory)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, directory)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return directory


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except OSError as e:
    raise ModelLoadError(f"{path}: cannot read the file ({e.strerror})") from None
  except ValueError as e:
    raise ModelLoadError(f"{path}: not valid JSON ({e})") from None


def _check_model_image_size(meta: dict, config, model, meta_path: str) -> tuple[int, int | None]:
  """Validates model.json's `image_size` (the input size the network was trained at)
  against the rest of the file; returns it and the number of attention regions K (None:
  ResNet).

  `save_model` writes `image_size` from the training config (stored alongside), and
  `num_regions` as the model's K at that size, so an exported model always passes:
  image_size an integer in MIN_IMAGE_SIZE..MAX_IMAGE_SIZE, equal to `config.image_size`,
  and giving the stored K (for PainSeeker K = ceil(image_size / 32) ** 2 with the ResNet
  trunk; the parameters' shapes alone do not depend on the input size).
  """
  image_size = check_image_size(meta["image_size"], meta_path)
  trained = config.get("image_size")
  if trained != image_size:
    raise ModelLoadError(
      f"{meta_path}: image_size {image_size} differs from the training config's "
      f"config.image_size {trained!r}; the file was edited or damaged"
    )
  try:
    k = inference.num_regions(model, image_size)
  except Exception as e:  # shape errors of a size the network cannot take
    raise ModelLoadError(
      f"{meta_path}: image_size {image_size}: the network cannot take this input size "
      f"({type(e).__name__}: {e})"
    ) from None
  if "num_regions" in meta and meta["num_regions"] != k:
    raise ModelLoadError(
      f"{meta_path}: image_size {image_size} gives K = {k} attention regions but "
      f"num_regions is {meta['num_regions']!r}; the file was edited or damaged"
    )
  return image_size, k


def _check_au_names(meta: dict, config, meta_path: str) -> tuple[str, ...]:
  """The AU names of a model directory: those the stored config gives its model heads for
  (`inference.au_names`, which `create_model` builds). model.json's `scale` and `au_names`
  (absent in model directories written before them: no AU heads) must agree with the config;
  else ModelLoadError."""
  names = inference.au_names(config)
  if "au_names" in meta and meta["au_names"] != list(names):
    raise ModelLoadError(
      f"{meta_path}: au_names {meta['au_names']!r} differ from the AU heads of the training "
      f"config ({list(names)}); the file was edited or damaged"
    )
  if names and "scale" in meta and meta["scale"] != config.get("scale", "rgs"):
    raise ModelLoadError(
      f"{meta_path}: scale {meta['scale']!r} differs from the training config's config.scale "
      f"{config.get('scale', 'rgs')!r}; the file was edited or damaged"
    )
  return names


def load_model_dir(directory: str) -> LoadedModel:
  """Loads a model directory written by `save_model`."""
  meta_path = os.path.join(directory, MODEL_JSON)
  meta = _read_json(meta_path)
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise ModelLoadError(
      f'{meta_path}: not a painseeker model description (no "format": "{FORMAT}")'
    )
  version = meta.get("format_version")
  if version != FORMAT_VERSION:
    raise ModelLoadError(
      f"{meta_path}: model format version {version!r} (written by painseeker-jax "
      f"{meta.get('painseeker_jax_version', '?')}); this painseeker-jax "
      f"({_version()}) reads version {FORMAT_VERSION}. Use a matching painseeker-jax, or "
      "re-export the model with `painseeker train-final`."
    )
  try:
    config = ml_collections.ConfigDict(meta["config"])
    image_size = meta["image_size"]
    norm = meta["normalization"]
    mean, std, scale = tuple(norm["mean_rgb"]), tuple(norm["std_rgb"]), float(norm["scale"])
    class_names = tuple(meta["class_names"])
  except (KeyError, TypeError, ValueError) as e:
    raise ModelLoadError(
      f"{meta_path}: incomplete model description (missing or bad {e})"
    ) from None
  if scale != 255.0 or len(mean) != 3 or len(std) != 3:
    raise ModelLoadError(f"{meta_path}: unsupported normalization {norm}")
  _check_normalization(mean, std, meta_path)
  if class_names != CLASS_NAMES:
    raise ModelLoadError(
      f"{meta_path}: class names {list(class_names)}; expected {list(CLASS_NAMES)}"
    )
  try:
    model = create_model(config)
  except (ValueError, AttributeError, KeyError) as e:
    raise ModelLoadError(f"{meta_path}: cannot build the model ({e})") from None
  image_size, num_regions = _check_model_image_size(meta, config, model, meta_path)
  names = _check_au_names(meta, config, meta_path)
  var_path = os.path.join(directory, VARIABLES_FILE)
  try:
    with open(var_path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise ModelLoadError(f"{var_path}: cannot read the file ({e.strerror})") from None
  try:
    variables = serialization.msgpack_restore(raw)
  except Exception as e:  # msgpack raises several types on corrupt data
    raise ModelLoadError(
      f"{var_path}: corrupt or truncated variables file ({type(e).__name__}: {e})"
    ) from None
  variables = _check_variables(inference.variables_template(model, image_size), variables, var_path)
  check_finite(variables, var_path)
  return LoadedModel(
    model=model,
    variables=[variables],
    members=["final"],
    image_size=image_size,
    mean_rgb=mean,
    std_rgb=std,
    class_names=class_names,
    num_regions=num_regions,
    kind="model",
    source=os.path.abspath(directory),
    config=config,
    au_names=names,
  )


# ---------------------------------------------------------------------------
# LORO work directories.


def _restore_checkpoint(workdir: str, held_out: int, template: dict) -> tuple[dict, int]:
  """Latest orbax checkpoint of a fold -> (params/batch_stats, step)."""
  ckpt_dir = layout.checkpoint_dir(workdir, held_out)
  mngr = layout.checkpoint_manager(workdir, held_out, create=False)
  try:
    step = mngr.latest_step()
    if step is None:
      raise ModelLoadError(f"{ckpt_dir}: no checkpoint")
    try:
      import orbax.checkpoint as ocp  # noqa: PLC0415  (only needed for work directories)

      # No target: the saved tree (a TrainState's fields) comes back as dicts;
      # only params and batch_stats are kept (the optimiser state is dropped).
      restored = mngr.restore(step, args=ocp.args.StandardRestore())
    except Exception as e:
      raise ModelLoadError(
        f"{ckpt_dir}/{step}: cannot restore the checkpoint ({type(e).__name__}: {e})"
      ) from None
  finally:
    mngr.close()
  where = f"{ckpt_dir}/{step}"
  variables = _check_variables(template, restored, where)
  check_finite(variables, where)
  return variables, step


def load_loro_workdir(workdir: str) -> LoadedModel:
  """The fold models of a LORO work directory, as an ensemble.

  Uses every fold of the work directory's `config.folds`; refuses a run that
  has not finished (no results) or a fold without a checkpoint.
  """
  config_path = layout.config_path(workdir)
  config = ml_collections.ConfigDict(_read_json(config_path))
  try:
    model = create_model(config)
    image_size = int(config.image_size)
  except (ValueError, AttributeError, KeyError, TypeError) as e:
    raise ModelLoadError(f"{config_path}: not a LORO configuration ({e})") from None
  if not layout.is_finished(workdir):
    raise ModelLoadError(
      f"{workdir}: the LORO run has not finished (no {layout.RESULTS_JSON}); rerun "
      "`python run.py` with the same --config and --workdir to finish it"
    )
  # A lab's LOAO run lists its folds (split names) in results.json; RatsPain's are the rats.
  saved = layout.read_results(workdir).get("fold_splits")
  try:
    folds = [str(k) for k in saved] if saved else [int(k) for k in config.folds]
  except (ValueError, TypeError, AttributeError) as e:
    raise ModelLoadError(f"{config_path}: not a LORO configuration ({e})") from None
  template = inference.variables_template(model, image_size)
  variables, members = [], []
  for k in folds:
    if not os.path.isdir(layout.checkpoint_dir(workdir, k)):
      raise ModelLoadError(
        f"{layout.fold_dir(workdir, k)}: no checkpoints of fold {layout.fold_label(k)} "
        f"(listed in {config_path})"
      )
    v, _ = _restore_checkpoint(workdir, k, template)
    variables.append(v)
    members.append(layout.fold_label(k))
  return LoadedModel(
    model=model,
    variables=variables,
    members=members,
    image_size=image_size,
    mean_rgb=inference.MEAN_RGB,
    std_rgb=inference.STD_RGB,
    class_names=CLASS_NAMES,
    num_regions=inference.num_regions(model, image_size),
    kind="loro",
    source=os.path.abspath(workdir),
    config=config,
    au_names=inference.au_names(config),
  )


def load(path: str) -> LoadedModel:
  """A model directory (model.json) or a LORO work directory (config.json + fold_rat<k>/)."""
  if not os.path.isdir(path):
    raise ModelLoadError(f"{path}: model directory not found")
  if os.path.exists(os.path.join(path, MODEL_JSON)):
    return load_model_dir(path)
  if os.path.exists(layout.config_path(path)):
    return load_loro_workdir(path)
  raise ModelLoadError(
    f"{path}: neither a model directory (no {MODEL_JSON}; make one with "
    "`painseeker train-final`) nor a LORO work directory (no config.json)"
  )
