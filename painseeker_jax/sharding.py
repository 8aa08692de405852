"""Data parallelism with JAX's own sharding: one mesh axis `data` over all devices.

The trainer's step and the fold evaluation are jit-compiled with

  * the batch sharded along its leading (batch) axis over the `data` axis
    (`batch_sharding(mesh)`, `P("data")`),
  * parameters, BatchNorm statistics and the optimizer state replicated
    (`replicated(mesh)`, `P()`).

XLA's SPMD partitioner then inserts the collectives: gradients are all-reduced
and BatchNorm's mean/variance are computed over the *global* batch (the same
numbers as on one device, up to float summation order). No pmap, no
`axis_name`. One device is the same code path: a mesh of one device.

Multi-host (several processes, e.g. a TPU pod slice or SLURM/MPI jobs):
`maybe_initialize_distributed()` calls `jax.distributed.initialize()` when the
environment says there are several processes; `jax.devices()` then lists the
devices of every host and the mesh spans them all. Every host decodes the same
global batch (same seed) and `shard_batch` places only its own shards.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
log = logging.getLogger("painseeker")

# Environment variables that mean "this process is one of several" (checked with their value
# where they carry a process count). jax.distributed.initialize() auto-detects the rest.
_PROCESS_COUNT_VARS = ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def multi_host_environment() -> bool:
  """True when the environment describes a multi-process JAX job."""
  if os.environ.get("PAINSEEKER_DISTRIBUTED", "").lower() in ("1", "true", "yes"):
    return True
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  for var in _PROCESS_COUNT_VARS:
    try:
      if int(os.environ.get(var, "1")) > 1:
        return True
    except ValueError:
      pass
  hosts = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES") or ""
  return len([h for h in hosts.split(",") if h.strip()]) > 1  # a TPU pod slice


def maybe_initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` once, only in a multi-host environment.

  Must run before JAX touches a device (the trainer calls it first thing). Returns
  True when JAX's distributed runtime is (now) initialized.
  """
  if jax.distributed.is_initialized():
    return True
  if not multi_host_environment():
    return False
  from jax._src import xla_bridge  # noqa: PLC0415  (no public equivalent)

  if xla_bridge.backends_are_initialized():
    raise RuntimeError(
      "A multi-host environment was detected, but JAX already initialised its devices, so "
      "jax.distributed.initialize() can no longer be called. Call "
      "painseeker_jax.sharding.maybe_initialize_distributed() before any other JAX call "
      "(or unset PAINSEEKER_DISTRIBUTED / JAX_COORDINATOR_ADDRESS for a single-host run)."
    )
  kwargs = {}  # a hand-made cluster: JAX_COORDINATOR_ADDRESS (read by JAX) + these two
  if os.environ.get("JAX_NUM_PROCESSES"):
    kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
  if os.environ.get("JAX_PROCESS_ID"):
    kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
  jax.distributed.initialize(**kwargs)  # SLURM, Open MPI, TPU pods, Kubernetes: auto-detected
  log.info(
    "jax.distributed: process %d of %d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis `data` over `devices` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.array(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def fold_batch_sharding(mesh: Mesh) -> NamedSharding:
  """F x B x ... arrays (folds stacked on a leading axis): the fold axis whole, B split."""
  return NamedSharding(mesh, P(None, DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state, metrics)."""
  return NamedSharding(mesh, P())


def describe(mesh: Mesh, batch_size: int) -> str:
  """Where a run runs, e.g. "8 cpu devices (cpu), 1 process; mesh data=8; global batch 32 = 4
  per device"."""
  devices = mesh.devices.flatten()
  kind = devices[0].device_kind
  return (
    f"{devices.size} {devices[0].platform} device{'s' if devices.size > 1 else ''} ({kind}), "
    f"{jax.process_count()} process{'es' if jax.process_count() > 1 else ''}; mesh "
    f"{DATA_AXIS}={mesh.size}; global batch {batch_size} = {batch_size // mesh.size} per device"
  )


def check_divisible(batch_size: int, num_devices: int, name: str = "config.batch_size") -> None:
  """The global batch is split evenly over the devices, or a message says what to change."""
  if batch_size % num_devices:
    lower = (batch_size // num_devices) * num_devices
    upper = lower + num_devices
    choices = " or ".join(str(b) for b in (lower, upper) if b > 0)
    raise ValueError(
      f"{name}={batch_size} does not divide over the {num_devices} devices of the data-parallel "
      f"mesh (the global batch is split evenly along the `data` axis); set --{name} to a "
      f"multiple of {num_devices} (e.g. {choices}), or run on fewer devices (e.g. "
      f"CUDA_VISIBLE_DEVICES / XLA_FLAGS=--xla_force_host_platform_device_count)."
    )


def shard_batch(batch, mesh: Mesh):
  """Puts a host batch (pytree of numpy arrays, leading axis = global batch) on the mesh.

  Single process: `jax.device_put` splits it over the devices. Several processes:
  every process holds the same global batch and fills only its addressable shards.
  """
  return _put_global(batch, batch_sharding(mesh))


def shard_fold_batch(batch, mesh: Mesh):
  """Like `shard_batch` for F x B x ... arrays: the batch axis (1) split, the fold axis whole."""
  return _put_global(batch, fold_batch_sharding(mesh))


def _put_global(batch, sharding):
  """A host pytree holding the global arrays -> global jax.Arrays with `sharding`."""
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(
    lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]),
    batch,
  )


def replicate(tree, mesh: Mesh):
  """Places (or re-places) a pytree, e.g. a train state, replicated on every device of `mesh`."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
    lambda x: (
      x
      if getattr(x, "sharding", None) == sharding
      else jax.make_array_from_callback(np.shape(x), sharding, lambda idx, v=np.asarray(x): v[idx])
    ),
    tree,
  )
