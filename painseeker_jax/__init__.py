"""JAX/Flax reimplementation of PainSeeker (Liu et al. 2025)."""
