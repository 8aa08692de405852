"""glibc malloc settings for CPU training: reuse freed memory instead of new pages.

XLA:CPU allocates each training step's temporary buffers afresh (about 430 MB for
a ResNet-18 step of 16 images at 224 px) from its worker threads. With glibc's
defaults such a block comes from `mmap` (too large for a thread's arena) and
goes back to the kernel when freed, so every step takes ~111,000 page faults and
the kernel zeroes the memory again: about 10% of the step on a 2-core machine
(benchmarks/README.md, "Host memory"). Three `mallopt` settings keep it instead:
one arena for all threads (M_ARENA_MAX 1, so the worker threads allocate from
the main heap, which can grow to any size), no `mmap` for blocks below 1 GiB and
no trimming of the heap's free top. The price: the process keeps its peak heap
until it ends, and threads share one malloc lock.

Applied when `painseeker_jax` is imported (threads pick their arena at their
first allocation, so it must happen before JAX starts its thread pools), on
Linux with glibc, when no accelerator plugin for JAX is installed (on GPU/TPU
hosts the step's buffers live on the device). `PAINSEEKER_MALLOC=default`
leaves glibc's defaults, `PAINSEEKER_MALLOC=tuned` applies them regardless.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, 2**31 - 1))


def _has_accelerator_plugin() -> bool:
  return any(importlib.util.find_spec(m) is not None for m in ("jax_plugins", "libtpu"))


def tune(mode: str | None = None) -> bool:
  """Applies SETTINGS (see the module docstring); returns whether they were applied."""
  mode = os.environ.get("PAINSEEKER_MALLOC", "auto") if mode is None else mode
  if mode not in ("auto", "tuned", "default"):
    raise ValueError(f"PAINSEEKER_MALLOC={mode!r}; use auto, tuned or default")
  if mode == "default" or not sys.platform.startswith("linux"):
    return False
  if mode == "auto" and _has_accelerator_plugin():
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc (e.g. musl)
    return False
  return all(mallopt(param, value) == 1 for param, value in SETTINGS)
