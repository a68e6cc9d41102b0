"""``lax.map`` in vmapped chunks that compiles its body once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DEFAULT_CHUNK_BYTES", "chunked_map", "chunk_size_for", "pad_rows"]

#: Bytes of intermediate results per vmapped chunk when a technique sizes its own chunks
#: (bounds memory for, e.g., 1000 classes of gradient maps).
DEFAULT_CHUNK_BYTES = 64_000_000


def chunked_map(f: Callable, xs: Any, batch: int) -> Any:
    """``jax.lax.map(f, xs, batch_size=batch)`` in equal chunks of at most ``batch``: the
    leading axis is padded (repeating the last element) to a multiple of the chunk and the
    padding dropped from the result.

    ``lax.map`` runs a remainder that does not fill a chunk as a second, separately compiled
    copy of ``f``; for a network's forward pass that doubles the compile time.
    """
    n = jax.tree.leaves(xs)[0].shape[0]
    chunks = -(-n // max(1, min(int(batch), n)))
    batch = -(-n // chunks)  # as even as possible: at most chunks - 1 padded elements
    pad = (-n) % batch
    if pad:
        xs = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), xs)
    out = jax.lax.map(f, xs, batch_size=batch)
    return jax.tree.map(lambda a: a[:n], out) if pad else out


def chunk_size_for(count: int, bytes_each: int, budget: int = DEFAULT_CHUNK_BYTES) -> int:
    """How many of ``count`` items of ``bytes_each`` fit in ``budget`` bytes (at least 1)."""
    return max(1, min(count, budget // max(1, bytes_each)))


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` with zero rows appended up to ``rows`` along its first axis (a chunk of a stream
    padded to the one shape its compiled program takes)."""
    pad = rows - len(x)
    return np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad > 0 else x
