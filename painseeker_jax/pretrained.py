"""Pretrained ResNet-18 trunk: torchvision / timm weights <-> Flax.

Public API:

* `load_resnet18(path)` -> `{'params', 'batch_stats'}` for
  `models.ResNet18(num_classes=N)`, read from a torchvision-layout state
  dict (`conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`, ...,
  `fc.weight`) in a `.safetensors` file (timm's `resnet18.tv_in1k`, or
  torchvision weights converted) or a torchvision `.pth` file
  (`resnet18-f37072fd.pth`). N is the number of rows of the file's
  `fc.weight`: 1000 for the ImageNet files, for which `ResNet18(
  num_classes=1000).apply(load_resnet18(path), images_NHWC, train=False)`
  gives torchvision's logits for the same (ImageNet-normalised) input; any
  other for a trunk pretrained elsewhere (e.g. on synthetic rats, with a
  head of head-pose angles + identities), which is accepted the same way.
* `variables_to_state_dict(variables, model)`: the inverse of
  `state_dict_to_variables`, Flax variables of a `models.ResNet` (any
  `num_classes`) -> a torchvision-layout state dict (numpy, float32, with
  BatchNorm `num_batches_tracked` counters as torchvision writes them).
* `save_state_dict(path, state_dict, metadata)`: writes it atomically to a
  `.safetensors` file, with string metadata in its header
  (`read_metadata(path)` reads it back). Such a file is read by
  `load_resnet18`, so `--config.model.pretrained=<file>` takes the path the
  ImageNet weights take (`resolve_pretrained` -> `load_resnet18` ->
  `copy_trunk`).
* `copy_trunk(dst_variables, src_variables)`: the `trunk` subtree
  (params and batch_stats) of `src` copied into `dst` (e.g. a PainSeeker
  model whose head stays as initialised).
* `resolve_pretrained(spec)`: `config.model.pretrained` -> a file path or
  `None` (train from scratch).
* `init_from_pretrained(spec, variables)`: resolve + load + copy_trunk.

Every tensor of the state dict must be used: missing or unexpected keys and
shape mismatches raise `StateDictMismatchError` listing all of them (the
BatchNorm `num_batches_tracked` counters are the one expected extra).
`.pth` files are read with `torch.load(weights_only=True)` (no pickled
code is executed); `.safetensors` files (read or written) need only
`safetensors` + numpy. Nothing here imports TensorFlow.

The weights expect ImageNet mean/std normalised RGB in [0, 1] scale, which is
what `inference.normalize` does for every input.

Cache for `pretrained='imagenet'`: `$PAINSEEKER_CACHE` if set, else
`~/.cache/painseeker_jax`; the file is `resnet18.tv_in1k.safetensors` or
`resnet18-f37072fd.pth` there (torch hub's checkpoint folder,
`$TORCH_HOME/hub/checkpoints`, is also looked in).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from painseeker_jax import models

CACHE_ENV = "PAINSEEKER_CACHE"
DEFAULT_CACHE = os.path.join("~", ".cache", "painseeker_jax")
SAFETENSORS_NAME = "resnet18.tv_in1k.safetensors"
PTH_NAME = "resnet18-f37072fd.pth"
HF_REPO = "timm/resnet18.tv_in1k"
HF_FILENAME = "model.safetensors"
TORCHVISION_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
_TORCHVISION_SHA256_PREFIX = "f37072fd"
DOWNLOAD_TIMEOUT_S = 20
_COLLECTIONS = ("params", "batch_stats")
_IGNORED_SUFFIX = ".num_batches_tracked"
IMAGENET_CLASSES = 1000


class PretrainedWeightsError(RuntimeError):
  """Pretrained weights cannot be found, read or mapped onto the model."""


class StateDictMismatchError(PretrainedWeightsError, ValueError):
  """State dict keys or shapes do not match the model."""


# ---------------------------------------------------------------------------
# Reading state dicts.


_SAFETENSORS_SUFFIX = ".safetensors"
_SAFETENSORS_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since PyTorch 1.6
_SNIFF_BYTES = 16
# Where a torch.save training checkpoint keeps the model's state dict, first match wins.
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
_DATA_PARALLEL = "module."  # the prefix nn.DataParallel / DistributedDataParallel add


def _sniff(head: bytes) -> str | None:
  """'safetensors', 'torch' or None (neither) from a file's first bytes.

  safetensors: an 8-byte little-endian header length, then the JSON header
  (`{`). torch.save: a zip archive, or (legacy format) a pickle, protocol 2+.
  A zip's or pickle's 9th byte is never `{`, so the two cannot be confused.
  """
  if len(head) >= 9 and head[8:9] == b"{":
    n = int.from_bytes(head[:8], "little")
    if 2 <= n <= _SAFETENSORS_MAX_HEADER:
      return "safetensors"
  if head.startswith(_ZIP_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
    return "torch"
  return None


def _how_to_get_a_good_copy(fmt: str | None) -> str:
  lines = ["Get a good copy: delete it and download the weights again, e.g."]
  if fmt in ("safetensors", None):
    lines.append(
      f"    hf download {HF_REPO} {HF_FILENAME} --local-dir DIR   (pip install "
      f"huggingface_hub; the file is DIR/{HF_FILENAME})"
    )
  if fmt in ("torch", None):
    lines.append(f"    curl -L -o DIR/{PTH_NAME} {TORCHVISION_URL}")
  lines.append(
    "  or use --config.model.pretrained=imagenet, which downloads them into "
    f"{cache_dir()} when no weights file is there."
  )
  return "\n".join(lines)


def _safetensors_problem(path: str, size: int) -> str | None:
  """Why `path` is not a complete safetensors file, or None if it looks whole."""
  if size < 8:
    return (
      f"it is only {size} bytes long, less than the 8-byte header length a safetensors "
      "file starts with"
    )
  with open(path, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    if not 2 <= n <= _SAFETENSORS_MAX_HEADER:
      return f"its first 8 bytes give a header length of {n}, which no safetensors file has"
    if 8 + n > size:
      return (
        f"its header says {n} bytes of JSON follow, but the file is only {size} bytes long in all"
      )
    raw = f.read(n)
  try:
    header = json.loads(raw)
  except ValueError as e:  # UnicodeDecodeError and JSONDecodeError
    return f"its {n}-byte header is not valid JSON ({e})"
  if not isinstance(header, dict):
    return f"its header is a JSON {type(header).__name__}, not an object"
  data_end = 0
  for name, info in header.items():
    if name == "__metadata__":
      continue
    try:
      _, end = info["data_offsets"]
      data_end = max(data_end, int(end))
    except (TypeError, KeyError, ValueError):
      return f"its header entry {name!r} has no valid data_offsets"
  have = size - 8 - n
  if data_end > have:
    return f"its header lists {data_end} bytes of tensor data, but only {have} follow the header"
  return None


def _read_safetensors(path: str, size: int) -> dict[str, np.ndarray]:
  problem = _safetensors_problem(path, size)
  if problem is not None:
    raise PretrainedWeightsError(
      f"{path} is not a readable safetensors file: it is empty, truncated or corrupt ({problem}; "
      f"an interrupted download or copy?).\n{_how_to_get_a_good_copy('safetensors')}"
    )
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

  try:
    return dict(load_file(path))
  except Exception as e:  # pylint: disable=broad-except
    raise PretrainedWeightsError(
      f"Cannot read safetensors file {path} (is it corrupt?): {type(e).__name__}: {e}\n"
      f"{_how_to_get_a_good_copy('safetensors')}"
    ) from e


def _converted_path(path: str) -> str:
  """Where the conversion command writes: never `path` itself."""
  root, ext = os.path.splitext(path)
  if ext.lower() == _SAFETENSORS_SUFFIX:
    return root + ".converted" + _SAFETENSORS_SUFFIX
  return root + _SAFETENSORS_SUFFIX


def _conversion_command(path: str) -> str:
  """A shell command that converts the torch.save file `path` to safetensors."""
  src = os.path.abspath(path)
  # open(): torch.load hands a *path* ending in .safetensors to safetensors itself.
  code = (
    "import torch, safetensors.torch as st; st.save_file(torch.load(open("
    f'{json.dumps(src)}, "rb"), weights_only=True), {json.dumps(_converted_path(src))})'
  )
  return "python -c " + shlex.quote(code)


def _torch_error(e: Exception) -> str:
  """The gist of a torch.load exception, on one line."""
  msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
  if "WeightsUnpickler error:" in msg:  # the original error, after torch's advice
    msg = msg.split("WeightsUnpickler error:", 1)[1]
  elif msg.startswith("Weights only load failed.") and "\n\n" in msg:
    msg = msg.split("\n\n", 1)[1]
  line = next((s.strip() for s in msg.splitlines() if s.strip()), "")
  if len(line) > 300:
    line = line[:300] + "..."
  return f"{type(e).__name__}: {line}" if line else type(e).__name__


def _read_pth(path: str, fmt: str | None) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    if fmt is None:
      raise PretrainedWeightsError(
        f"{path} is neither a safetensors file nor a torch.save file (no safetensors header, "
        "zip archive or pickle at its start): it is truncated, corrupt or not a weights "
        f"file.\n{_how_to_get_a_good_copy(None)}"
      ) from e
    raise PretrainedWeightsError(
      f"{path} is a PyTorch (torch.save) file; reading it needs torch (it is loaded "
      "with torch.load(weights_only=True), which executes no pickled code). "
      "Either install torch (CPU build is enough: pip install torch), or "
      "convert the file once where torch is installed:\n"
      f"  {_conversion_command(path)}\n"
      "or download the safetensors version (timm/resnet18.tv_in1k, file "
      f"{HF_FILENAME}) instead."
    ) from e
  try:
    if path.lower().endswith(_SAFETENSORS_SUFFIX):
      # A file object: torch.load reads a *path* ending in .safetensors as safetensors.
      with open(path, "rb") as f:
        obj = torch.load(f, map_location="cpu", weights_only=True)
    else:  # a path gives clearer errors for a truncated zip
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    gist = _torch_error(e)
    if re.search(r"allowed global|[Uu]nsupported global", str(e)):
      raise PretrainedWeightsError(
        f"Cannot read {path} with torch.load(weights_only=True), which executes no pickled "
        f"code: the file holds more than tensors ({gist}). Save the bare state dict "
        "instead: torch.save(model.state_dict(), path)."
      ) from e
    raise PretrainedWeightsError(
      f"Cannot read {path} with torch.load(weights_only=True): it is truncated, corrupt or "
      f"not a PyTorch state dict ({gist}).\n{_how_to_get_a_good_copy(fmt)}"
    ) from e
  if isinstance(obj, Mapping):
    # A training checkpoint ({'epoch': ..., 'state_dict': ..., 'optimizer': ...}, as the
    # PyTorch ImageNet example saves it): the model's weights are under one of these keys.
    for key in _CHECKPOINT_KEYS:
      inner = obj.get(key)
      if isinstance(inner, Mapping) and all(isinstance(v, torch.Tensor) for v in inner.values()):
        obj = inner
        break
  if not isinstance(obj, Mapping):
    raise PretrainedWeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
  if obj and all(k.startswith(_DATA_PARALLEL) for k in obj):  # saved from DataParallel
    obj = {k[len(_DATA_PARALLEL) :]: v for k, v in obj.items()}
  out = {}
  for k, v in obj.items():
    if not isinstance(v, torch.Tensor):
      raise PretrainedWeightsError(
        f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor: the file is not a "
        f"state dict (nor a checkpoint holding one under {', '.join(_CHECKPOINT_KEYS)}). "
        "Save the bare weights: torch.save(model.state_dict(), path)"
      )
    v = v.detach().cpu()
    if v.is_floating_point() and v.dtype != torch.float64:
      v = v.float()  # bfloat16/float16 have no (or lossy) numpy export
    out[k] = v.numpy()
  return out


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a state dict (name -> numpy array) from .safetensors or .pth.

  The format is recognised from the content (safetensors header, or a
  torch.save zip/pickle), so the file name matters only for a file that is
  neither: one named `*.safetensors` is reported as a broken safetensors
  file, any other is handed to torch.load.

  Raises PretrainedWeightsError naming the file when it is missing, a
  directory, empty, truncated, corrupt, or a torch.save file while torch is
  not installed (with a command that converts it to safetensors).
  """
  path = os.path.expanduser(os.fspath(path))
  if os.path.isdir(path):
    raise PretrainedWeightsError(
      f"{path} is a directory, not a weights file: give the .safetensors or .pth file in it."
    )
  if not os.path.isfile(path):
    raise PretrainedWeightsError(f"No such weights file: {path}")
  try:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      head = f.read(_SNIFF_BYTES)
  except OSError as e:
    raise PretrainedWeightsError(f"Cannot open weights file {path}: {e.strerror or e}") from e
  if size == 0:
    raise PretrainedWeightsError(
      f"{path} is an empty file (0 bytes), not a weights file (an interrupted download or "
      f"copy?).\n{_how_to_get_a_good_copy(None)}"
    )
  fmt = _sniff(head)
  try:
    if fmt == "safetensors" or (fmt is None and path.lower().endswith(_SAFETENSORS_SUFFIX)):
      return _read_safetensors(path, size)
    return _read_pth(path, fmt)
  except OSError as e:
    raise PretrainedWeightsError(f"Cannot read weights file {path}: {e.strerror or e}") from e


# ---------------------------------------------------------------------------
# torchvision state dict <-> Flax variables.


def _torch_key(collection: str, path: tuple[str, ...]) -> str:
  """Flax (collection, module path..., leaf) -> torchvision key."""
  *modules, leaf = path
  if modules and modules[0] == "trunk":
    modules = modules[1:]
  names = []
  for m in modules:
    if m.startswith("layer") and "_" in m:  # layer{s}_{b} -> layer{s}.{b}
      stage, block = m.split("_", 1)
      names += [stage, block]
    elif m == "downsample_conv":
      names.append("downsample.0")
    elif m == "downsample_bn":
      names.append("downsample.1")
    else:
      names.append(m)
  if collection == "batch_stats":
    names.append({"mean": "running_mean", "var": "running_var"}[leaf])
  else:
    names.append({"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf])
  return ".".join(names)


def _from_torch(leaf: str, x: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and x.ndim == 4:
    return x.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if leaf == "kernel" and x.ndim == 2:
    return x.T  # Linear (out, in) -> Dense (in, out)
  return x


def _to_torch(leaf: str, x: np.ndarray) -> np.ndarray:
  """The inverse of `_from_torch`."""
  if leaf == "kernel" and x.ndim == 4:
    return x.transpose(3, 2, 0, 1)  # HWIO -> OIHW
  if leaf == "kernel" and x.ndim == 2:
    return x.T  # Dense (in, out) -> Linear (out, in)
  return x


def _leaves(tree, prefix=()):
  """(path tuple, leaf) for a nested mapping."""
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _leaves(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def _variable_shapes(model) -> dict:
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _fmt(items, limit=40) -> str:
  items = list(items)
  s = "\n".join(f"    {i}" for i in items[:limit])
  if len(items) > limit:
    s += f"\n    ... and {len(items) - limit} more"
  return s


def state_dict_to_variables(state_dict: Mapping[str, Any], model) -> dict:
  """Maps a torchvision-layout state dict onto `model`'s variables.

  `model` is a `models.ResNet` (every key, `fc` included, must match) or
  any module whose variables are named as in `models` (the trunk keys).

  Raises StateDictMismatchError listing every missing key, unexpected key and
  shape mismatch (`*.num_batches_tracked` counters are allowed extras).
  """
  shapes = _variable_shapes(model)
  out: dict = {}
  used, missing, mismatched = set(), [], []
  for col in _COLLECTIONS:
    for path, spec in _leaves(shapes.get(col, {})):
      key = _torch_key(col, path)
      if key not in state_dict:
        missing.append(f"{key} (for {col}/{'/'.join(path)}, Flax shape {tuple(spec.shape)})")
        continue
      used.add(key)
      src = np.asarray(state_dict[key])
      arr = _from_torch(path[-1], src)
      if arr.shape != tuple(spec.shape):
        mismatched.append(
          f"{key}: file has {tuple(src.shape)} -> {tuple(arr.shape)} after "
          f"layout conversion, model {col}/{'/'.join(path)} needs "
          f"{tuple(spec.shape)}"
        )
        continue
      _set(out.setdefault(col, {}), path, jnp.asarray(arr.astype(spec.dtype, copy=False)))
  unexpected = sorted(
    k
    for k in state_dict
    if k not in used
    and not (k.endswith(_IGNORED_SUFFIX) and k[: -len(_IGNORED_SUFFIX)] + ".running_mean" in used)
  )
  _raise_mismatch(
    f"State dict does not match {type(model).__name__}:",
    ("missing keys", missing),
    ("unexpected keys", unexpected),
    ("shape mismatches", mismatched),
    hint="  (expected: a torchvision resnet18 state dict, keys conv1.weight, "
    "bn1.running_mean, layer1.0.conv1.weight, ..., fc.weight)",
  )
  return out


def _raise_mismatch(title: str, *lists: tuple[str, list], hint: str = "") -> None:
  """Raises StateDictMismatchError listing every non-empty (what, items) list; else nothing."""
  if not any(items for _, items in lists):
    return
  parts = [title]
  parts += [f"  {what} ({len(items)}):\n{_fmt(items)}" for what, items in lists if items]
  raise StateDictMismatchError("\n".join(parts + ([hint] if hint else [])))


def variables_to_state_dict(variables: Mapping, model) -> dict[str, np.ndarray]:
  """`model`'s variables -> a torchvision-layout state dict; inverse of `state_dict_to_variables`.

  `model` is a `models.ResNet` (any `num_classes`: `fc.weight` gets that many
  rows) or any module whose variables are named as in `models`. Every
  `params`/`batch_stats` leaf becomes its torchvision key, with the layout
  converted back (conv kernels HWIO -> OIHW, Dense (in, out) -> Linear
  (out, in)) as a C-contiguous float32 numpy array; every BatchNorm also gets
  `<bn>.num_batches_tracked` (int64 scalar 0), as in torchvision's state
  dicts (`state_dict_to_variables` ignores them). Other collections are
  ignored. `state_dict_to_variables(variables_to_state_dict(v, model), model)`
  gives `v` back exactly.

  Raises StateDictMismatchError listing every leaf `variables` lacks, has in
  excess or has with another shape than `model`'s.
  """
  shapes = _variable_shapes(model)
  out: dict[str, np.ndarray] = {}
  missing, unexpected, mismatched = [], [], []
  for col in _COLLECTIONS:
    have = dict(_leaves(variables.get(col, {})))
    want = dict(_leaves(shapes.get(col, {})))
    unexpected += [f"{col}/{'/'.join(p)}" for p in have if p not in want]
    for path, spec in want.items():
      name = f"{col}/{'/'.join(path)}"
      if path not in have:
        missing.append(f"{name} (shape {tuple(spec.shape)})")
        continue
      arr = np.asarray(have[path])
      if arr.shape != tuple(spec.shape):
        mismatched.append(f"{name}: variables have {arr.shape}, model needs {tuple(spec.shape)}")
        continue
      key = _torch_key(col, path)
      assert key not in out, (key, path)  # the naming is one-to-one
      out[key] = np.array(_to_torch(path[-1], arr), dtype=np.float32, order="C")  # a copy
      if col == "batch_stats" and path[-1] == "mean":
        counter = key[: -len(".running_mean")] + _IGNORED_SUFFIX
        out[counter] = np.zeros((), np.int64)
  _raise_mismatch(
    f"Variables do not match {type(model).__name__}:",
    ("missing", missing),
    ("unexpected", sorted(unexpected)),
    ("shape mismatches", mismatched),
  )
  return out


def _num_classes(state_dict: Mapping[str, Any]) -> int:
  """Rows of `fc.weight`; IMAGENET_CLASSES when it is missing (or not a matrix), so that
  `state_dict_to_variables` reports it."""
  shape = np.shape(state_dict["fc.weight"]) if "fc.weight" in state_dict else ()
  return int(shape[0]) if len(shape) == 2 and shape[0] >= 1 else IMAGENET_CLASSES


def load_resnet18(path: str) -> dict:
  """`{'params', 'batch_stats'}` of `models.ResNet18(num_classes=N)`.

  `path` is a torchvision-layout ResNet-18 state dict, `.safetensors` or
  `.pth`; N is the number of rows of its `fc.weight` (1000 for the ImageNet
  weights; any other for a trunk pretrained elsewhere, e.g. written by
  `save_state_dict`). The number of classes is then
  `variables['params']['fc']['kernel'].shape[1]`.
  """
  state_dict = read_state_dict(path)
  return state_dict_to_variables(state_dict, models.ResNet18(num_classes=_num_classes(state_dict)))


# ---------------------------------------------------------------------------
# Writing state dicts.


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
  if metadata is None:
    return None
  if not isinstance(metadata, Mapping):
    raise TypeError(f"metadata must be a mapping of str to str, not a {type(metadata).__name__}")
  bad = [
    f"{k!r}: {type(v).__name__}"
    for k, v in metadata.items()
    if not (isinstance(k, str) and isinstance(v, str))
  ]
  if bad:
    raise TypeError(
      "safetensors metadata keys and values must be strings (json.dumps anything else): "
      + ", ".join(bad)
    )
  return dict(metadata)


def _create_temp(folder: str, base: str) -> tuple[str, int]:
  """A new hidden file next to the destination: (path, fd opened for writing).

  Created with mode 0o666 less the umask, as `open()` creates files (mkstemp's would be 0o600).
  """
  flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
  for _ in range(100):
    tmp = os.path.join(folder, f".{base}.{os.urandom(6).hex()}.tmp")
    try:
      return tmp, os.open(tmp, flags, 0o666)
    except FileExistsError:
      continue
  raise FileExistsError(f"Cannot create a temporary file in {folder}")


def save_state_dict(
  path: str, state_dict: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> str:
  """Writes `state_dict` (name -> array) to the `.safetensors` file `path`; returns `path`.

  `metadata` (str -> str) goes into the file's header (see `read_metadata`).
  The write is atomic: the file is written and synced under a temporary name
  in the same folder, then renamed over `path`, so `path` is either its old
  self or the whole new file, and no temporary file is left behind on error.
  Arrays are written C-contiguous, with their dtypes (numpy's, or a JAX
  array's via `np.asarray`).

  Raises ValueError when `path` does not end in `.safetensors` (the only
  format written), TypeError for metadata that is not strings.
  """
  path = os.path.expanduser(os.fspath(path))
  if not path.lower().endswith(_SAFETENSORS_SUFFIX):
    raise ValueError(
      f"save_state_dict writes safetensors files only; the path must end in "
      f"{_SAFETENSORS_SUFFIX!r}: {path}"
    )
  metadata = _check_metadata(metadata)
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top

  # np.asarray, not np.ascontiguousarray: that makes 0-d arrays (the counters) 1-d.
  data = save({k: np.asarray(v, order="C") for k, v in state_dict.items()}, metadata=metadata)
  folder, base = os.path.split(os.path.abspath(path))
  tmp, fd = _create_temp(folder, base)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def read_metadata(path: str) -> dict[str, str]:
  """The metadata (`__metadata__`) in the header of the `.safetensors` file `path`; {} if none.

  Reads only the header. Raises PretrainedWeightsError naming the file when
  it is missing or not a complete safetensors file.
  """
  path = os.path.expanduser(os.fspath(path))
  if not os.path.isfile(path):
    raise PretrainedWeightsError(f"No such safetensors file: {path}")
  try:
    problem = _safetensors_problem(path, os.path.getsize(path))
    if problem is None:
      with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
  except OSError as e:
    raise PretrainedWeightsError(f"Cannot read {path}: {e.strerror or e}") from e
  if problem is not None:
    raise PretrainedWeightsError(
      f"{path} is not a readable safetensors file: it is empty, truncated or corrupt ({problem})"
    )
  meta = header.get("__metadata__") or {}
  if not isinstance(meta, dict) or not all(
    isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
  ):
    raise PretrainedWeightsError(
      f"{path}: the header's __metadata__ is not a map of strings: {meta!r:.200}"
    )
  return dict(meta)


def copy_trunk(dst_variables: Mapping, src_variables: Mapping) -> dict:
  """`dst_variables` with its `trunk` params and batch_stats from `src`.

  Everything outside `trunk` (e.g. PainSeeker's `region_score` and `fc`)
  is kept from `dst`. Inputs are not modified; the trunk's leaves are new
  arrays (no buffer shared with `src`), cast to the `dst` dtype.

  Raises StateDictMismatchError when the two trunks differ in structure or
  shapes.
  """
  out = {k: v for k, v in dst_variables.items()}
  problems = []
  for col in _COLLECTIONS:
    dst_t = dst_variables.get(col, {}).get("trunk")
    src_t = src_variables.get(col, {}).get("trunk")
    if dst_t is None or src_t is None:
      problems.append(f"{col}/trunk missing in {'destination' if dst_t is None else 'source'}")
      continue
    dst_l, src_l = dict(_leaves(dst_t)), dict(_leaves(src_t))
    for p in sorted(set(dst_l) - set(src_l)):
      problems.append(f"{col}/trunk/{'/'.join(p)}: missing in source")
    for p in sorted(set(src_l) - set(dst_l)):
      problems.append(f"{col}/trunk/{'/'.join(p)}: not in destination")
    for p in sorted(set(dst_l) & set(src_l)):
      if tuple(np.shape(dst_l[p])) != tuple(np.shape(src_l[p])):
        problems.append(
          f"{col}/trunk/{'/'.join(p)}: source "
          f"{tuple(np.shape(src_l[p]))}, destination "
          f"{tuple(np.shape(dst_l[p]))}"
        )
    new_t: dict = {}
    for p, v in dst_l.items():
      src = src_l.get(p, v)
      # a copy: the training step donates the state's buffers, and `src` is read once per
      # process for every fold (`_load_resnet18_once`)
      _set(new_t, p, jnp.array(src, dtype=jnp.asarray(v).dtype, copy=True))
    col_out = {k: v for k, v in dst_variables[col].items()}
    col_out["trunk"] = new_t
    out[col] = col_out
  if problems:
    raise StateDictMismatchError(
      "Pretrained trunk does not fit the model (a ResNet-18 trunk needs "
      "config.model.size='full'):\n" + _fmt(problems)
    )
  return out


# ---------------------------------------------------------------------------
# config.model.pretrained -> file.


def cache_dir() -> str:
  """`$PAINSEEKER_CACHE` or `~/.cache/painseeker_jax` (not created)."""
  return os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def _torch_hub_checkpoints() -> str:
  torch_home = os.environ.get("TORCH_HOME") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "torch"
  )
  return os.path.join(os.path.expanduser(torch_home), "hub", "checkpoints")


def _cached_file() -> str | None:
  candidates = [
    os.path.join(cache_dir(), SAFETENSORS_NAME),
    os.path.join(cache_dir(), PTH_NAME),
    os.path.join(_torch_hub_checkpoints(), PTH_NAME),
  ]
  for c in candidates:
    if os.path.isfile(c):
      return c
  return None


def _download_hf(dest_dir: str) -> str:
  """timm/resnet18.tv_in1k via huggingface_hub -> dest_dir/SAFETENSORS_NAME."""
  import huggingface_hub  # pylint: disable=g-import-not-at-top

  # Timeouts: huggingface_hub's own (HF_HUB_ETAG_TIMEOUT,
  # HF_HUB_DOWNLOAD_TIMEOUT; 10 s by default).
  src = huggingface_hub.hf_hub_download(repo_id=HF_REPO, filename=HF_FILENAME)
  dest = os.path.join(dest_dir, SAFETENSORS_NAME)
  fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".part")
  os.close(fd)
  try:
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return dest


def _download_torchvision(dest_dir: str) -> str:
  """torchvision's resnet18-f37072fd.pth -> dest_dir, SHA-256 checked."""
  dest = os.path.join(dest_dir, PTH_NAME)
  fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".part")
  try:
    sha = hashlib.sha256()
    with (
      os.fdopen(fd, "wb") as f,
      urllib.request.urlopen(TORCHVISION_URL, timeout=DOWNLOAD_TIMEOUT_S) as r,
    ):
      while chunk := r.read(1 << 20):
        sha.update(chunk)
        f.write(chunk)
    if not sha.hexdigest().startswith(_TORCHVISION_SHA256_PREFIX):
      raise OSError(
        f"downloaded file has SHA-256 {sha.hexdigest()}, expected {_TORCHVISION_SHA256_PREFIX}..."
      )
    os.replace(tmp, dest)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return dest


def _download(dest_dir: str) -> str:
  """Tries huggingface_hub (if installed), then torchvision's URL."""
  errors = []
  try:
    os.makedirs(dest_dir, exist_ok=True)
  except OSError as e:
    raise PretrainedWeightsError(
      _instructions(f"cannot create the cache folder {dest_dir}: {e}")
    ) from e
  try:
    import huggingface_hub  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

    has_hf = True
  except ImportError:
    has_hf = False
    errors.append("huggingface_hub: not installed (pip install huggingface_hub)")
  if has_hf:
    try:
      return _download_hf(dest_dir)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"huggingface_hub ({HF_REPO}): {type(e).__name__}: {e}")
  try:
    return _download_torchvision(dest_dir)
  except Exception as e:  # pylint: disable=broad-except
    errors.append(f"{TORCHVISION_URL}: {type(e).__name__}: {e}")
  raise PretrainedWeightsError(
    _instructions(
      "download failed (is this machine offline?):\n" + "\n".join(f"    - {e}" for e in errors)
    )
  )


def _instructions(reason: str) -> str:
  d = cache_dir()
  return f"""ImageNet ResNet-18 weights (config.model.pretrained='imagenet') are not available: \
{reason}

Put one of these files in {d} (set ${CACHE_ENV} to use another folder):
  {SAFETENSORS_NAME}   timm's {HF_REPO}, file {HF_FILENAME}, renamed:
      hf download {HF_REPO} {HF_FILENAME} --local-dir /tmp/r18
      (pip install huggingface_hub; older versions: huggingface-cli download)
      mkdir -p {d} && cp /tmp/r18/{HF_FILENAME} {d}/{SAFETENSORS_NAME}
  {PTH_NAME}           torchvision's IMAGENET1K_V1 weights:
      mkdir -p {d} && curl -L -o {d}/{PTH_NAME} {TORCHVISION_URL}
      (reading a .pth needs torch installed; the safetensors file does not)
or pass a file directly: --config.model.pretrained=/path/to/weights.safetensors
To train from scratch instead (far below the paper on the real data):
  --config.model.pretrained=None"""


def resolve_pretrained(spec: str | None) -> str | None:
  """`config.model.pretrained` -> a weights file, or `None` (scratch).

  A `spec` of `None`, `''` or `'none'` (any case) means no pretrained
  weights; `'imagenet'` the cached file (see `cache_dir`; also torch hub's
  checkpoint folder), downloaded into the cache when missing and the machine
  is online; anything else is a path to a `.safetensors`/`.pth`.

  Raises PretrainedWeightsError, with instructions, when the file does not
  exist or cannot be downloaded.
  """
  if spec is None:
    return None
  spec = os.fspath(spec).strip()
  if spec == "" or spec.lower() == "none":
    return None
  if spec.lower() == "imagenet":
    found = _cached_file()
    return found if found is not None else _download(cache_dir())
  path = os.path.abspath(os.path.expanduser(spec))
  if os.path.isdir(path):
    raise PretrainedWeightsError(
      f"config.model.pretrained={spec!r} is a directory ({path}), not a weights file: give "
      "the path of a .safetensors/.pth ResNet-18 state dict in it, 'imagenet' or None."
    )
  if not os.path.isfile(path):
    raise PretrainedWeightsError(
      f"config.model.pretrained={spec!r}: no such file ({path}). Use a "
      "path to a .safetensors/.pth ResNet-18 state dict, 'imagenet' or "
      "None."
    )
  return path


def fingerprint(spec: str | None) -> dict | None:
  """{"file": name, "sha256": hex} of the weights `spec` names (as `resolve_pretrained`), or None
  for scratch: results record it, so runs fine-tuned from two builds of a trunk (e.g. the
  twin-pool trunk made on two machines) are told apart and never merged into one table.

  The digest is of the weights (each tensor's name, dtype, shape and values, in name order), not
  of the file's bytes: safetensors writes its header's metadata in another order on every write,
  so two writes of one trunk differ as files."""
  path = resolve_pretrained(spec)
  if path is None:
    return None
  state_dict = read_state_dict(path)
  h = hashlib.sha256()
  for name in sorted(state_dict):
    a = np.ascontiguousarray(state_dict[name])
    h.update(f"{name}\t{a.dtype.str}\t{a.shape}\n".encode())
    h.update(a.tobytes())
  return {"file": os.path.basename(path), "sha256": h.hexdigest()}


def init_from_pretrained(spec: str | None, variables: Mapping) -> Mapping:
  """`variables` with the trunk from `spec` (unchanged when it is None).

  `spec` is as for `resolve_pretrained`; `variables` are the freshly
  initialised `{'params', 'batch_stats'}` of a `ResNet` or `PainSeeker` with
  a ResNet-18 trunk. The head (`fc`, `region_score`) is kept as initialised.
  """
  path = resolve_pretrained(spec)
  if path is None:
    return variables
  return copy_trunk(variables, _load_resnet18_once(path))


_LOADED: dict = {}  # (real path, size, mtime) -> variables of the file read last


def _load_resnet18_once(path: str) -> dict:
  """`load_resnet18(path)`, read once per process while the file is unchanged (a LORO run
  starts six folds, a Table 3 run dozens, from the same trunk); copy_trunk never modifies it and
  copies what it takes from it."""
  st = os.stat(path)
  key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
  if key not in _LOADED:
    _LOADED.clear()
    _LOADED[key] = load_resnet18(path)
  return _LOADED[key]
