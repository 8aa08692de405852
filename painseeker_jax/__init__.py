"""JAX/Flax reimplementation of PainSeeker (Liu et al. 2025)."""

from painseeker_jax import host_memory as _host_memory

_host_memory.tune()  # before JAX starts its threads; see host_memory.py
