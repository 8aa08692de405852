"""Convolutions through oneDNN on the CPU: the fast CPU path (`config.model.conv`).

XLA:CPU's own convolutions run ResNet-18's training step at about half the speed
of PyTorch on the same CPU (benchmarks/README.md, "Training step"); PyTorch uses
oneDNN's convolution kernels. This module gives the Flax model the same kernels:
`csrc/onednn_conv.cc` holds three XLA FFI handlers (forward, input gradient,
kernel gradient) that call oneDNN, and `conv_general_dilated` is a drop-in for
`lax.conv_general_dilated` (a `custom_vjp` over the three) that `nn.Conv`
accepts as its `conv_general_dilated` field. Two more handlers give the stem's
max pooling (`max_pool`), whose gradient XLA:CPU computes far slower (figures:
benchmarks/README.md).
Parameters, their names, shapes and initialisation, and therefore checkpoints,
are the same as on XLA's path; results agree to float tolerance
(tests/test_onednn_conv.py).

The handlers are compiled on first use with the system C++ compiler (`$CXX`,
else `c++`) against the oneDNN wheels (`onednn-cpu-gomp`, `onednn-devel-cpu-gomp`,
installed with the package on x86-64 Linux) and JAX's FFI headers, into
`$PAINSEEKER_CACHE` (default `~/.cache/painseeker_jax`)/onednn/<hash>/, keyed by
the source, the JAX version and the oneDNN headers; later runs load it (about 10
s the first time).

Supported: float32, NHWC/HWIO, no dilation, one feature group, equal strides and
symmetric equal padding in both spatial dimensions (every convolution of
ResNet-18); any other call falls back to `lax.conv_general_dilated`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

log = logging.getLogger("painseeker")

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "onednn_conv.cc")
_TARGETS = (
  "PainseekerOnednnConvFwd",
  "PainseekerOnednnConvBwdData",
  "PainseekerOnednnConvBwdWeights",
  "PainseekerOnednnMaxPoolFwd",
  "PainseekerOnednnMaxPoolBwd",
)
_NHWC_HWIO = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


class OnednnUnavailable(RuntimeError):
  """The oneDNN path cannot be used here; the message says why and what to do."""


def _prefixes():
  """Where pip puts the wheels' data files (lib/, include/): the environment, the Python it was
  made from (a venv with --system-site-packages sees that one's packages), then the user base."""
  seen = []
  user = (sysconfig.get_config_var("userbase") or "", os.path.expanduser("~/.local"))
  for p in (sys.prefix, sys.base_prefix, *user):
    if p and p not in seen:
      seen.append(p)
  return seen


def _find_onednn() -> tuple[str, str]:
  """(include dir, lib dir) of the oneDNN wheels."""
  for prefix in _prefixes():
    inc, lib = os.path.join(prefix, "include"), os.path.join(prefix, "lib")
    if os.path.exists(os.path.join(inc, "oneapi", "dnnl", "dnnl.hpp")) and os.path.exists(
      os.path.join(lib, "libdnnl.so")
    ):
      return inc, lib
  raise OnednnUnavailable(
    "oneDNN's headers and library were not found (looked for include/oneapi/dnnl/dnnl.hpp and "
    f"lib/libdnnl.so under {', '.join(_prefixes())}); install them with "
    "`pip install onednn-cpu-gomp onednn-devel-cpu-gomp` (x86-64 Linux), or set "
    "--config.model.conv=xla."
  )


def cache_dir() -> str:
  return os.path.join(
    os.environ.get("PAINSEEKER_CACHE", os.path.expanduser("~/.cache/painseeker_jax")), "onednn"
  )


def _compile() -> str:
  """Path of the compiled handler library (compiled once per source/JAX/oneDNN version)."""
  if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    raise OnednnUnavailable(
      f"the oneDNN convolution path is built for x86-64 Linux, not {sys.platform} "
      f"{platform.machine()}; use --config.model.conv=xla."
    )
  inc, lib = _find_onednn()
  with open(SOURCE, "rb") as f:
    source = f.read()
  with open(os.path.join(inc, "oneapi", "dnnl", "dnnl_version.h"), "rb") as f:
    version = f.read()
  digest = hashlib.sha256(source + version + jax.__version__.encode() + inc.encode()).hexdigest()[
    :16
  ]
  out_dir = os.path.join(cache_dir(), digest)
  target = os.path.join(out_dir, "libpainseeker_onednn.so")
  if os.path.exists(target):
    return target
  os.makedirs(out_dir, exist_ok=True)
  cxx = os.environ.get("CXX", "c++")
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
  os.close(fd)
  cmd = [
    cxx,
    "-O2",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-w",
    f"-I{jax.ffi.include_dir()}",
    f"-I{inc}",
    SOURCE,
    f"-L{lib}",
    "-ldnnl",
    f"-Wl,-rpath,{lib}",
    "-o",
    tmp,
  ]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True)
  except FileNotFoundError:
    os.unlink(tmp)
    raise OnednnUnavailable(
      f"no C++ compiler ({cxx!r}) to build {SOURCE}; install one (e.g. g++) or set "
      "CXX, or use --config.model.conv=xla."
    ) from None
  if proc.returncode:
    os.unlink(tmp)
    raise OnednnUnavailable(
      f"compiling {SOURCE} failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}\n"
      "Use --config.model.conv=xla."
    )
  os.replace(tmp, target)  # atomic: a concurrent run sees the old state or the whole library
  log.info("compiled the oneDNN convolution handlers into %s", target)
  return target


@functools.lru_cache(maxsize=1)
def load() -> str:
  """Compiles (once) and registers the FFI handlers; returns the library path.

  Raises OnednnUnavailable."""
  path = _compile()
  try:
    lib = ctypes.cdll.LoadLibrary(path)
  except OSError as e:  # e.g. the oneDNN wheel was uninstalled after the build
    raise OnednnUnavailable(
      f"loading {path} failed ({e}); reinstall onednn-cpu-gomp, or delete "
      f"{cache_dir()} to rebuild, or use --config.model.conv=xla."
    ) from None
  for name in _TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
  return path


@functools.lru_cache(maxsize=1)
def available() -> bool:
  """True when the handlers load here (compiling them if needed); logs why not otherwise.

  Decided once per process: `load` caches only a success, and every model built
  during a run (validation, each fold, evaluation) asks, so a failed compile
  would otherwise be retried, and warned about, each time.
  """
  try:
    load()
    return True
  except OnednnUnavailable as e:
    log.warning("oneDNN convolutions unavailable, using XLA's: %s", e)
    return False


def _call(name, shape, a, b, stride, pad):
  load()
  return jax.ffi.ffi_call(name, jax.ShapeDtypeStruct(shape, jnp.float32), vmap_method="sequential")(
    a, b, stride=np.int64(stride), pad=np.int64(pad)
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x_BxHxWxC, k_KxKxCxO, stride: int, pad: int):
  """NHWC x HWIO convolution, square kernel, `stride` and symmetric `pad` in both dimensions."""
  B, H, W, _ = x_BxHxWxC.shape
  K, _, _, c_out = k_KxKxCxO.shape
  ho, wo = (H + 2 * pad - K) // stride + 1, (W + 2 * pad - K) // stride + 1
  return _call("PainseekerOnednnConvFwd", (B, ho, wo, c_out), x_BxHxWxC, k_KxKxCxO, stride, pad)


def _fwd(x, k, stride, pad):
  # symbolic_zeros: x.perturbed is False when nothing asks for the input's gradient (the stem's
  # images), so that pass is never run.
  y = conv2d(x.value, k.value, stride, pad)
  return y, (x.value, k.value, x.perturbed, k.perturbed)


def _bwd(stride, pad, res, dy):
  x, k, need_dx, need_dk = res
  dx = _call("PainseekerOnednnConvBwdData", x.shape, dy, k, stride, pad) if need_dx else None
  dk = _call("PainseekerOnednnConvBwdWeights", k.shape, x, dy, stride, pad) if need_dk else None
  return dx, dk


conv2d.defvjp(_fwd, _bwd, symbolic_zeros=True)


def _supported(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation,
  rhs_dilation,
  dimension_numbers,
  feature_group_count,
) -> bool:
  if (
    lhs.dtype != jnp.float32
    or rhs.dtype != jnp.float32
    or lhs.ndim != 4
    or feature_group_count != 1
  ):
    return False
  if dimension_numbers is None or isinstance(dimension_numbers, str):
    return False
  dn = dimension_numbers
  if not isinstance(dn, lax.ConvDimensionNumbers):
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dn)
  if dn != _NHWC_HWIO:
    return False
  if any(d != 1 for d in (lhs_dilation or (1, 1))) or any(d != 1 for d in (rhs_dilation or (1, 1))):
    return False
  if (
    isinstance(padding, str) or len(set(map(tuple, padding))) != 1 or padding[0][0] != padding[0][1]
  ):
    return False
  return rhs.shape[0] == rhs.shape[1] and len(set(window_strides)) == 1


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  batch_group_count=1,
  precision=None,
  preferred_element_type=None,
):
  """`lax.conv_general_dilated` through oneDNN where supported (see the module doc), else lax's."""
  if (
    batch_group_count == 1
    and preferred_element_type is None
    and _supported(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
    )
  ):
    return conv2d(lhs, rhs, int(window_strides[0]), int(padding[0][0]))
  return lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    batch_group_count=batch_group_count,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def _pool_out(n: int, kernel: int, stride: int, pad: int) -> int:
  return (n + 2 * pad - kernel) // stride + 1


def _pool_fwd_call(x_BxHxWxC, kernel, stride, pad):
  load()
  B, H, W, C = x_BxHxWxC.shape
  shape = (B, _pool_out(H, kernel, stride, pad), _pool_out(W, kernel, stride, pad), C)
  return jax.ffi.ffi_call(
    "PainseekerOnednnMaxPoolFwd",
    (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.uint8)),
    vmap_method="sequential",
  )(x_BxHxWxC, kernel=np.int64(kernel), stride=np.int64(stride), pad=np.int64(pad))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x_BxHxWxC, kernel: int, stride: int, pad: int):
  """NHWC max pooling over square `kernel` windows, `stride` and symmetric `pad` (-inf padding).

  XLA:CPU expands the gradient of `nn.max_pool` into a select-and-scatter, many
  times the cost of the forward (benchmarks/README.md); oneDNN's backward reads
  the argmax its forward stored, one byte per output.
  """
  return _pool_fwd_call(x_BxHxWxC, kernel, stride, pad)[0]


def _pool_fwd(x, kernel, stride, pad):
  y, ws = _pool_fwd_call(x, kernel, stride, pad)
  return y, (ws, x.shape)


def _pool_bwd(kernel, stride, pad, res, dy):
  ws, x_shape = res
  dx = jax.ffi.ffi_call(
    "PainseekerOnednnMaxPoolBwd",
    jax.ShapeDtypeStruct(x_shape, jnp.float32),
    vmap_method="sequential",
  )(dy, ws, kernel=np.int64(kernel), stride=np.int64(stride), pad=np.int64(pad))
  return (dx,)


max_pool.defvjp(_pool_fwd, _pool_bwd)
