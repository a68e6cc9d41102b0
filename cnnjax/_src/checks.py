"""Input checks shared by every technique: fail early, name what was received and what is valid."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["check_images", "is_concrete", "as_key", "check_positive_int"]

#: Smallest spatial size accepted anywhere; techniques may ask for more.
MIN_SIZE = 8


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
    raise ValueError(f"key must be an int seed or a jax.random.key, got {key!r}")


def check_positive_int(value: Any, what: str = "steps") -> int:
    """``value`` as an int if it is one and >= 1; else a ValueError naming ``what``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)
