"""Random test arrays drawn by NumPy on the host.

An eager ``jax.random.normal(key, shape)`` compiles a program for every new shape (about half
a second each here, 34 of them in the suite once); NumPy's draws cost nothing, and JAX takes
the arrays as they are.
"""

import numpy as np


def normal(seed: int, shape, scale: float = 1.0) -> np.ndarray:
    """Standard normal float32 values (times ``scale``)."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def uniform(seed: int, shape, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Uniform float32 values in ``[lo, hi)``."""
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)
