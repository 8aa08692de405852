"""host_memory: glibc keeps a worker thread's freed blocks for reuse (no new page faults)."""

import os
import subprocess
import sys

import pytest

from painseeker_jax import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In a fresh interpreter: import the package (which tunes malloc), then let a new thread
# allocate, touch and free 64 MiB twice (as XLA:CPU's worker threads do with a step's
# temporaries) and print the page faults of the second round.
_PROBE = r"""
import ctypes, resource, threading
import painseeker_jax
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
out = []
def work():
  for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    p = libc.malloc(64 << 20)
    libc.memset(p, 1, 64 << 20)
    libc.free(p)
    out.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
t = threading.Thread(target=work)
t.start(); t.join()
print(out[1])
"""


def _second_round_faults(mode):
  env = dict(os.environ, PAINSEEKER_MALLOC=mode, PYTHONPATH=ROOT)
  proc = subprocess.run(
    [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
  )
  return int(proc.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
def test_tuned_malloc_reuses_a_threads_freed_memory():
  pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
  assert _second_round_faults("default") > pages // 2  # glibc's defaults: fresh pages each time
  assert _second_round_faults("tuned") < pages // 100  # tuned: the same pages again


def test_modes(monkeypatch):
  assert host_memory.tune("default") is False
  with pytest.raises(ValueError, match="PAINSEEKER_MALLOC='fast'"):
    host_memory.tune("fast")
  monkeypatch.setattr(host_memory, "_has_accelerator_plugin", lambda: True)
  assert host_memory.tune("auto") is False  # GPU/TPU hosts keep glibc's defaults
