"""Input checks shared by every technique: fail early, name what was received and what is valid.

One helper per kind of value, so every entry point says the same thing about the same mistake:

* :func:`check_images`: a float NHWC batch in [0, 1].
* :func:`check_int` / :func:`check_positive_int`: integers (never a float such as 2.5, never a bool).
* :func:`check_float`: one finite real number in a range.
* :func:`check_floats`: a scalar or a 1-D array of finite numbers in a range, for hyperparameters
  that may be one value per target (they become traced array arguments).
* :func:`as_key`: an int seed or a JAX key, as a typed key.

And one way to report a run that went non-finite: :class:`DivergedError`, raised by
:func:`check_finite_run` (and by ``fit``, with the last good state attached).
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DivergedError",
    "MAX_STEPS",
    "MIN_SIZE",
    "as_key",
    "check_finite_run",
    "check_float",
    "check_labels",
    "split_pair",
    "check_floats",
    "check_images",
    "check_int",
    "check_positive_int",
    "is_concrete",
    "numpy_seed",
    "wait",
]

#: Smallest spatial size accepted anywhere; techniques may ask for more.
MIN_SIZE = 8

#: The most optimiser steps any technique takes in one call.
MAX_STEPS = 100_000


def is_concrete(x: Any) -> bool:
    """Whether ``x`` holds values now (not a tracer inside jit/vmap/grad, not an abstract
    ``jax.ShapeDtypeStruct``)."""
    return not isinstance(x, (jax.core.Tracer, jax.ShapeDtypeStruct))


def check_images(
    images: Any,
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    min_size: int = MIN_SIZE,
    what: str = "images",
) -> jax.Array:
    """Check that ``images`` is a float NHWC batch in [0, 1] and return it as float32.

    Args:
      images: the array to check (NumPy or JAX, or a tracer).
      channels: the required channel count, if any.
      size: the required ``(h, w)``, if any.
      min_size: the smallest accepted height and width.
      what: how to name the array in messages.

    Returns:
      ``images`` as a float32 ``jax.Array`` (an abstract ``jax.ShapeDtypeStruct`` is checked
      for shape and dtype only, and returned as a float32 one).

    Raises:
      ValueError: wrong rank, channels, size, dtype kind; values outside [0, 1] or not finite
        (value checks run only on concrete arrays, never inside a trace).
    """
    shape = getattr(images, "shape", None)
    dtype = getattr(images, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"{what} must be an array [n, h, w, c], got {type(images).__name__}")
    if len(shape) != 4:
        hint = " (add a batch axis: images[None])" if len(shape) == 3 else ""
        raise ValueError(f"{what} must be NHWC [n, h, w, c], got shape {tuple(shape)}{hint}")
    n, h, w, c = shape
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"{what} must be floating point in [0, 1], got dtype {dtype} "
            "(convert uint8 images with images / 255.0)"
        )
    if channels is not None and c != channels:
        raise ValueError(f"{what} must have {channels} channels (NHWC), got shape {tuple(shape)}")
    if size is not None and (h, w) != tuple(size):
        raise ValueError(f"{what} must be {size[0]}x{size[1]}, got {h}x{w} (shape {tuple(shape)})")
    if h < min_size or w < min_size:
        raise ValueError(f"{what} are {h}x{w}; the smallest accepted size is {min_size}x{min_size}")
    if n == 0:
        raise ValueError(f"{what} is an empty batch (shape {tuple(shape)})")
    if is_concrete(images):
        arr = np.asarray(images)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} contain {int(np.sum(~np.isfinite(arr)))} non-finite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{what} must have values in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                "(images in 0..255 must be divided by 255; normalisation is the model's job)"
            )
    if isinstance(images, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(images.shape, jax.numpy.float32)
    return jax.numpy.asarray(images, jax.numpy.float32)


def as_key(key: Any) -> jax.Array:
    """An int seed, a typed PRNG key or a raw ``uint32[2]`` key, as a typed scalar key."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jax.numpy.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"expected a single PRNG key, got a key array of shape {key.shape}")
        return key
    if isinstance(key, jax.Array) and key.shape == (2,) and key.dtype == jax.numpy.uint32:
        return jax.random.wrap_key_data(key)
    raise ValueError(f"key must be an int seed or a jax.random.key, got {key!r:.60}")


def numpy_seed(key: Any) -> int | list[int]:
    """A NumPy seed from an int seed or a JAX key (for host-side draws: an int seeds NumPy
    with itself, a key with its raw data)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    return [int(v) for v in np.asarray(jax.random.key_data(as_key(key))).ravel()]


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return "finite"


def _in_range(v: float, lo, hi, lo_open: bool, hi_open: bool) -> bool:
    if lo is not None and (v <= lo if lo_open else v < lo):
        return False
    return not (hi is not None and (v >= hi if hi_open else v > hi))


def check_int(value: Any, name: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool, not a float such as 2.0) in
    ``[lo, hi]``; else a ``ValueError`` naming ``name``, the range and what was received."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer {_range_text(lo, hi, False, False)}, got {value!r}")
    if not _in_range(int(value), lo, hi, False, False):
        raise ValueError(f"{name} must be an integer {_range_text(lo, hi, False, False)}, got {value!r}")
    return int(value)


def check_positive_int(value: Any, name: str = "steps", *, hi: int | None = None) -> int:
    """``value`` as an int if it is an integer >= 1 (and <= ``hi``); else a ``ValueError``."""
    return check_int(value, name, lo=1, hi=hi)


def check_float(
    value: Any,
    name: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """``value`` as a float if it is one finite real number in the range; else a ``ValueError``.

    ``lo_open`` / ``hi_open`` exclude the bounds (``lo=0, lo_open=True`` is "> 0"). NaN and
    infinities are always refused, as are bools and strings.
    """
    want = _range_text(lo, hi, lo_open, hi_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0 and is_concrete(value):
            return check_float(float(value), name, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)
        raise ValueError(f"{name} must be a finite number {want}, got {value!r:.60}")
    v = float(value)
    if not math.isfinite(v) or not _in_range(v, lo, hi, lo_open, hi_open):
        raise ValueError(f"{name} must be a finite number {want}, got {value!r}")
    return v


def check_floats(
    value: Any,
    name: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    length: int | None = None,
) -> np.ndarray:
    """A scalar or a 1-D sequence of finite numbers in the range, as float32 ``[k]`` (a scalar
    gives ``[1]``); with ``length``, ``k`` must be 1 or ``length``. For hyperparameters that
    may be one value per target: they travel into compiled programs as arrays.
    """
    want = _range_text(lo, hi, lo_open, hi_open)
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be a finite number {want} or a 1-D sequence of them, got {value!r}")
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a finite number {want} or a 1-D sequence of them, got {value!r:.60}"
        ) from None
    if arr.ndim > 1 or arr.size == 0:
        raise ValueError(f"{name} must be a number or a non-empty 1-D sequence, got shape {arr.shape}")
    arr = arr.reshape(-1)
    bad = [v for v in arr.tolist() if not (math.isfinite(v) and _in_range(v, lo, hi, lo_open, hi_open))]
    if bad:
        raise ValueError(f"{name} must be finite and {want}, got {bad[0]!r}")
    if length is not None and len(arr) not in (1, length):
        raise ValueError(f"{name} has {len(arr)} values: give one, or one per target ({length})")
    return arr.astype(np.float32)


class DivergedError(ValueError):
    """A run went non-finite (NaN or infinite losses, images or parameters).

    Every technique reports a diverged run this way, never with NaN results. ``result``, when
    not None, holds what was kept of the run (``fit``: the last good state).
    """

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


def wait(x: Any, poll: float = 0.05) -> Any:
    """``x`` once computed, waiting in Python rather than inside XLA, so that Ctrl-C is raised
    at once and not only when a long compiled call ends."""
    for leaf in jax.tree.leaves(x):
        while hasattr(leaf, "is_ready") and not leaf.is_ready():
            time.sleep(poll)
    return x


def check_finite_run(technique: str, images: Any, history: Any = None, *, hint: str = "") -> None:
    """Raise :class:`DivergedError` if a run's ``history`` (its losses per step) or its result
    ``images`` hold non-finite values (checked on the host, after :func:`wait`: no program is
    compiled, and Ctrl-C stops the wait)."""
    hint = hint or "lower the learning rate or add a prior"
    wait((images, history))
    if history is not None:
        h = np.asarray(history)  # on the host already (drive, to_host)
        bad = ~np.isfinite(h)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DivergedError(
                f"{technique} diverged: the loss became non-finite (first at index {where} of its "
                f"history {h.shape}); {hint}"
            )
    if isinstance(images, jax.Array) and not images.is_fully_addressable:  # over several processes
        from cnnjax._src.sharding import to_host

        bad = int(to_host(jnp.sum(~jnp.isfinite(images))))
    else:
        bad = int(np.sum(~np.isfinite(np.asarray(images))))
    if bad:
        raise DivergedError(f"{technique} diverged: {bad} non-finite values in its result; {hint}")


def check_labels(logits: jax.Array, labels: jax.Array) -> None:
    """Raise a ``ValueError`` unless ``labels`` has the shape of ``logits`` without its class axis."""
    if jnp.ndim(logits) < 1 or jnp.shape(labels) != jnp.shape(logits)[:-1]:
        raise ValueError(
            f"labels must have the shape of logits without its class axis: "
            f"logits {jnp.shape(logits)}, labels {jnp.shape(labels)}"
        )


def split_pair(split: Any, what: str = "data") -> tuple[Any, Any]:
    """``(images, labels)`` of a data split given as a ``Dataset`` or a pair; else a ``ValueError``."""
    if hasattr(split, "images") and hasattr(split, "labels"):
        return split.images, split.labels
    try:
        images, labels = split
    except (TypeError, ValueError):
        raise ValueError(
            f"{what} must be (images, labels) or a Dataset, got {type(split).__name__}"
        ) from None
    return images, labels
