"""``lax.map`` in vmapped chunks that compiles its body once; work split into chunks that fit a
memory budget (``memory_budget``: bytes of device memory for a technique's intermediate results)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CPU_MEMORY_BUDGET",
    "DEFAULT_CHUNK_BYTES",
    "MEMORY_FACTOR",
    "MEMORY_FRACTION",
    "budget_chunk",
    "check_memory_budget",
    "chunk_size_for",
    "chunked_map",
    "default_memory_budget",
    "forward_bytes",
    "map_row_chunks",
    "pad_rows",
    "pad_rows_to",
    "row_chunks",
]

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


def pad_rows_to(tree, multiple: int):
    """Every leaf of ``tree`` (one leading length ``n``) padded with copies of its first row to
    the next multiple of ``multiple`` (NumPy leaves stay NumPy); returns ``(n, padded tree)``."""
    n = len(jax.tree.leaves(tree)[0])
    pad = -n % multiple

    def padded(a):
        xp = np if isinstance(a, np.ndarray) else jnp
        return xp.concatenate([a, xp.repeat(a[:1], pad, axis=0)])

    return n, (jax.tree.map(padded, tree) if pad else tree)


#: Bytes of a technique's intermediate results per byte of the network's forward pass on an image
#: (:func:`forward_bytes`): the values kept for the gradient, their cotangents and the work space.
#: XLA's own figure (``memory_analysis().temp_size_in_bytes`` of the compiled step, per image) was
#: 2.5 times the forward pass for ``visualize`` on ``tiny_cnn`` (32 px, lucid preset), 0.9 to 1.5
#: times on EfficientNet-Lite0 (128 px, lucid; 1.5 for a single target) and 0.7 times for
#: FashionNet's input gradient; ``benchmarks/synthesis.py`` and ``attacks.py`` report both.
MEMORY_FACTOR = 3

#: The share of a device's ``memory_stats()["bytes_limit"]`` a technique may use by default.
MEMORY_FRACTION = 0.5

#: The default ``memory_budget`` on a device that reports no memory limit (CPU): 2 GiB.
CPU_MEMORY_BUDGET = 2 * 1024**3


def default_memory_budget(device: jax.Device | None = None) -> int:
    """The default ``memory_budget`` of ``device`` (default: JAX's first device): half of its
    ``memory_stats()["bytes_limit"]`` where it reports one (GPU, TPU), else
    :data:`CPU_MEMORY_BUDGET`."""
    device = jax.devices()[0] if device is None else device
    try:
        stats = device.memory_stats()
    except Exception:  # a backend without memory statistics
        stats = None
    limit = (stats or {}).get("bytes_limit")
    return int(limit * MEMORY_FRACTION) if limit else CPU_MEMORY_BUDGET


def check_memory_budget(memory_budget) -> int:
    """``memory_budget`` as a positive int of bytes (None: :func:`default_memory_budget`); anything
    else (0, negative, a float, NaN, a bool) is a ``ValueError`` naming what was received."""
    if memory_budget is None:
        return default_memory_budget()
    integral = isinstance(memory_budget, numbers.Integral) and not isinstance(memory_budget, bool)
    if not integral or memory_budget < 1:
        raise ValueError(
            "memory_budget must be a positive integer number of bytes (e.g. 2 * 1024**3) or None for the "
            f"device's default, got {memory_budget!r}"
        )
    return int(memory_budget)


_FORWARD_BYTES: dict = {}

#: Operations whose outputs XLA materialises in a network's forward pass (elementwise operations
#: fuse into them); a call with a custom derivative counts as one such output.
_MATERIALISED = frozenset(
    {"conv_general_dilated", "dot_general", "reduce_window", "reduce_window_max", "reduce_window_sum",
     "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_jvp_call", "select_and_scatter_add"}
)  # fmt: skip


def _materialised_bytes(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _MATERIALISED:
            total += sum(math.prod(v.aval.shape) * jnp.dtype(v.aval.dtype).itemsize for v in eqn.outvars)
            continue
        for value in eqn.params.values():  # nested jits, named scopes, control flow
            for sub in value if isinstance(value, tuple) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    total += _materialised_bytes(sub)
    return total


def forward_bytes(apply, params, shape: tuple[int, ...], dtype=jnp.float32) -> int:
    """Bytes of the network's forward pass for one input of ``shape`` (``[h, w, c]``, no batch
    axis): the outputs of its convolutions, matrix products, pooling windows and calls with a
    custom derivative, the values XLA keeps (elementwise operations fuse into them). Read from
    the traced program (``jax.make_jaxpr``: no FLOPs, nothing compiled); cached per function,
    parameter shapes and input shape. A technique's memory per image is a multiple of it."""
    leaves = tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(params))
    cache_key = (apply, leaves, tuple(shape), str(jnp.dtype(dtype)))
    if cache_key not in _FORWARD_BYTES:
        traced = jax.make_jaxpr(apply)(params, jax.ShapeDtypeStruct((1, *shape), dtype))
        _FORWARD_BYTES[cache_key] = max(1, _materialised_bytes(traced.jaxpr))
    return _FORWARD_BYTES[cache_key]


def budget_chunk(count: int, bytes_each: int, memory_budget: int, multiple: int = 1) -> int:
    """How many of ``count`` items of ``bytes_each`` bytes run together under ``memory_budget``:
    all of them when they fit, else the largest multiple of ``multiple`` (the devices of a mesh)
    that fits, at least ``multiple``, then evened out so that the chunks differ little (the last
    is padded to the same size: one compiled program)."""
    if count * bytes_each <= memory_budget:
        return count
    chunk = max(multiple, memory_budget // max(1, bytes_each) // multiple * multiple)
    calls = -(-count // chunk)
    even = -(-count // calls)  # as even as possible: at most calls - 1 padded rows
    return -(-even // multiple) * multiple


def row_chunks(tree, chunk: int):
    """``(start, rows)`` for consecutive chunks of ``chunk`` rows of every leaf of ``tree`` (NumPy
    arrays of one leading length; None leaves stay None); the last is padded with copies of its own
    first row (valid inputs) to ``chunk`` rows, so every chunk has one shape. ``chunk`` equal to
    the rows yields ``tree`` itself."""
    n = len(jax.tree.leaves(tree)[0])
    if n == chunk:  # one chunk, no padding: the rows as they are
        yield 0, tree
        return
    for start in range(0, n, chunk):
        rows = jax.tree.map(lambda a, start=start: np.asarray(a)[start : start + chunk], tree)
        yield start, pad_rows_to(rows, chunk)[1]


def map_row_chunks(run, tree, chunk: int, axis: int = 0):
    """``run(start, rows)`` for each of :func:`row_chunks`, the results joined along ``axis`` with
    the padding dropped, as if ``run(0, tree)`` had run on all the rows.

    Each result's leaves are copied into arrays for all ``n`` rows on the host as soon as the
    chunk is done (a leaf may hold several entries per row: ``k`` per row when its length along
    ``axis`` is ``k * chunk``), so only one chunk's results are alive at a time beside them; the
    joined leaves go back to the device (``jax.device_put``: a transfer, where ``jnp.asarray``
    would compile a program per shape), except those ``run`` gave as NumPy, which stay NumPy.
    None leaves stay None. A single chunk of all the rows is ``run(0, tree)`` itself.
    """
    n = len(jax.tree.leaves(tree)[0])
    if chunk == n:
        return run(0, tree)
    out = treedef = numpy_leaves = None
    for start, rows in row_chunks(tree, chunk):
        leaves, treedef = jax.tree.flatten(run(start, rows))
        if out is None:
            numpy_leaves = [isinstance(a, np.ndarray) for a in leaves]
            out = []
            for a in leaves:
                shape = list(np.shape(a))
                shape[axis] = shape[axis] // chunk * n
                out.append(np.empty(shape, np.asarray(a).dtype))
        real = min(chunk, n - start)
        for o, a in zip(out, leaves):
            k = np.shape(a)[axis] // chunk
            src = np.take(np.asarray(a), np.arange(real * k), axis)
            index = [slice(None)] * o.ndim
            index[axis] = slice(start * k, (start + real) * k)
            o[tuple(index)] = src
        del leaves
    return treedef.unflatten([o if keep else jax.device_put(o) for o, keep in zip(out, numpy_leaves)])
