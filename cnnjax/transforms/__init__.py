"""Random image transforms ``(key, images) -> images``: transformation robustness and augmentation.

Optimising an image through random jitter, scaling and rotation keeps it from exploiting
pixel-exact patterns that only work at one alignment (Mordvintsev et al. 2015; Olah et al.,
"Feature Visualization", Distill 2017); training on randomly cropped and flipped images is the
same idea for the weights. Every transform takes an explicit key and draws one random setting
per call, so under ``jax.vmap`` over keys every element of a batch gets its own, and
:func:`per_image` gives every image of a batch its own draw (what training augmentation wants:
:func:`augmentation`). Factories are cached on their arguments: the same settings return the
same function, so techniques jitted over them compile once.

Example:
  >>> from cnnjax import transforms
  >>> t = transforms.compose(transforms.pad(12), transforms.jitter(8),
  ...                        transforms.random_scale((0.9, 1.0, 1.1)), transforms.random_rotate((-5, 0, 5)))
  >>> images = np.full((2, 32, 32, 3), 0.5, np.float32)
  >>> jax.jit(t)(jax.random.key(0), images).shape  # 12 + 12 - 8 pixels more
  (2, 48, 48, 3)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import check_float, check_int
from cnnjax._src.contract import Transform
from cnnjax._src.depthwise import depthwise_conv

__all__ = [
    "augmentation",
    "blur",
    "compose",
    "gaussian_blur",
    "gaussian_kernel",
    "jitter",
    "pad",
    "per_image",
    "random_crop",
    "random_flip",
    "random_rotate",
    "random_scale",
    "roll",
]


def _nonneg(value, what):
    return check_int(value, what, lo=0)


def _check_nhwc(images, what):
    if images.ndim != 4:
        raise ValueError(f"{what} expects NHWC images [n, h, w, c], got shape {images.shape}")


@functools.cache
def pad(width: int, mode: str = "constant", value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels (``mode`` "constant" with ``value``, "reflect" or
    "edge"). Deterministic; the key is unused. Lucid pads with mid-grey so the borders of a
    jittered image carry no signal."""
    width = _nonneg(width, "pad width")
    if mode not in ("constant", "reflect", "edge"):
        raise ValueError(f"pad mode must be 'constant', 'reflect' or 'edge', got {mode!r}")

    def transform(key, images):
        _check_nhwc(images, "pad")
        cfg = ((0, 0), (width, width), (width, width), (0, 0))
        if mode == "constant":
            return jnp.pad(images, cfg, mode="constant", constant_values=value)
        return jnp.pad(images, cfg, mode=mode)

    return transform


@functools.cache
def jitter(d: int) -> Transform:
    """Crop ``h - d`` by ``w - d`` pixels at a random offset in ``0..d`` (each axis)."""
    d = _nonneg(d, "jitter")

    def transform(key, images):
        _check_nhwc(images, "jitter")
        n, h, w, c = images.shape
        if d >= min(h, w):
            raise ValueError(f"jitter {d} is not smaller than the image ({h}x{w})")
        oy, ox = jax.random.randint(key, (2,), 0, d + 1)
        return jax.lax.dynamic_slice(images, (0, oy, ox, 0), (n, h - d, w - d, c))

    return transform


@functools.cache
def roll(d: int) -> Transform:
    """Shift the image circularly by a random offset in ``-d..d`` pixels on each axis (the
    jitter of the original DeepDream; the size is unchanged)."""
    d = _nonneg(d, "roll")

    def transform(key, images):
        _check_nhwc(images, "roll")
        oy, ox = jax.random.randint(key, (2,), -d, d + 1)
        return jnp.roll(images, (oy, ox), axis=(1, 2))

    return transform


def _affine(images: jax.Array, matrix: jax.Array) -> jax.Array:
    """Resample about the image centre: output pixel ``p`` reads input ``matrix @ (p - c) + c``
    (bilinear; outside the image, the nearest edge pixel).

    Four gathers of the corner pixels from the flattened image, weighted: written out rather
    than with ``jax.scipy.ndimage.map_coordinates`` (the same numbers, checked in the tests),
    which took about 4x longer to compile inside a vmapped optimisation loop (measured).
    """
    n, h, w, c = images.shape
    if h < 2 or w < 2:
        raise ValueError(f"resampling needs images of at least 2x2 pixels, got {h}x{w}")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32) - cy, jnp.arange(w, dtype=jnp.float32) - cx, indexing="ij"
    )
    sy = jnp.clip(matrix[0, 0] * yy + matrix[0, 1] * xx + cy, 0.0, h - 1.0)
    sx = jnp.clip(matrix[1, 0] * yy + matrix[1, 1] * xx + cx, 0.0, w - 1.0)
    y0, x0 = jnp.minimum(jnp.floor(sy), h - 2.0), jnp.minimum(jnp.floor(sx), w - 2.0)
    wy, wx = (sy - y0).reshape(1, -1, 1), (sx - x0).reshape(1, -1, 1)
    corner = (y0.astype(jnp.int32) * w + x0.astype(jnp.int32)).reshape(-1)  # top-left, flattened
    flat = images.reshape(n, h * w, c)

    def at(offset):
        return jnp.take(flat, corner + offset, axis=1, mode="clip")

    top = at(0) * (1.0 - wx) + at(1) * wx
    bottom = at(w) * (1.0 - wx) + at(w + 1) * wx
    return (top * (1.0 - wy) + bottom * wy).reshape(n, h, w, c)


def _choice(values, what) -> jnp.ndarray:
    values = tuple(float(v) for v in values)
    if not values:
        raise ValueError(f"{what} needs at least one value")
    return jnp.asarray(values, jnp.float32)


@functools.cache
def random_scale(scales: Sequence[float] = tuple(1 + (i - 5) / 50 for i in range(11))) -> Transform:
    """Zoom about the centre by a factor drawn uniformly from ``scales`` (the size is kept:
    zooming in crops, zooming out repeats the edge pixels). The default, 0.9 to 1.1 in steps
    of 0.02, is Lucid's."""
    table = _choice(scales, "random_scale")
    if bool(jnp.any(table <= 0)):
        raise ValueError(f"scales must be > 0, got {tuple(scales)}")

    def transform(key, images):
        _check_nhwc(images, "random_scale")
        s = table[jax.random.randint(key, (), 0, table.shape[0])]
        return _affine(images, jnp.eye(2) / s)

    return transform


@functools.cache
def random_rotate(angles: Sequence[float] = tuple(range(-10, 11))) -> Transform:
    """Rotate about the centre by an angle in degrees drawn uniformly from ``angles``
    (positive angles turn the picture clockwise as displayed, rows running downwards)."""
    table = _choice(angles, "random_rotate") * (math.pi / 180.0)

    def transform(key, images):
        _check_nhwc(images, "random_rotate")
        a = table[jax.random.randint(key, (), 0, table.shape[0])]
        cos, sin = jnp.cos(a), jnp.sin(a)
        return _affine(images, jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])]))

    return transform


def gaussian_kernel(sigma: float, radius: int | None = None) -> np.ndarray:
    """A normalised 1-D Gaussian of standard deviation ``sigma`` (radius ``ceil(3 sigma)``)."""
    sigma = check_float(sigma, "sigma", lo=0.0, lo_open=True)
    radius = max(1, math.ceil(3 * sigma)) if radius is None else radius
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def blur(images: jax.Array, sigma: float, *, radius: int | None = None, mode: str = "reflect") -> jax.Array:
    """Separable Gaussian blur of NHWC images.

    Args:
      images: ``[n, h, w, c]``.
      sigma: the Gaussian's standard deviation in pixels.
      radius: the kernel's half-width (default ``ceil(3 sigma)``).
      mode: how the borders are extended (a ``jnp.pad`` mode: ``"reflect"``, ``"edge"``...).

    Returns:
      The blurred images, same shape.
    """
    _check_nhwc(images, "gaussian_blur")
    k = jnp.asarray(gaussian_kernel(sigma, radius))
    r = (k.shape[0] - 1) // 2
    c = images.shape[-1]
    if mode == "reflect" and r >= min(images.shape[1:3]):
        raise ValueError(f"blur sigma {sigma} is too large for {images.shape[1]}x{images.shape[2]} images")
    x = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode=mode)
    vertical = jnp.broadcast_to(k.reshape(-1, 1, 1, 1), (k.shape[0], 1, 1, c))
    horizontal = jnp.broadcast_to(k.reshape(1, -1, 1, 1), (1, k.shape[0], 1, c))
    x = depthwise_conv(x, vertical, 1, "VALID")
    return depthwise_conv(x, horizontal, 1, "VALID")


@functools.cache
def gaussian_blur(sigma: float) -> Transform:
    """Blur with a Gaussian of standard deviation ``sigma`` pixels (deterministic)."""
    gaussian_kernel(sigma)  # validates sigma

    def transform(key, images):
        return blur(images, sigma)

    return transform


@functools.cache
def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` in order, each with its own key split from the one given."""
    for t in transforms:
        if not callable(t):
            raise ValueError(f"compose takes transforms (key, images) -> images, got {t!r}")

    def transform(key, images):
        for k, t in zip(jax.random.split(key, max(len(transforms), 1)), transforms):
            images = t(k, images)
        return images

    return transform


@functools.cache
def random_flip() -> Transform:
    """Flip left-right with probability 1/2 (one coin per call; see :func:`per_image`)."""

    def transform(key, images):
        _check_nhwc(images, "random_flip")
        return jnp.where(jax.random.bernoulli(key), images[:, :, ::-1, :], images)

    return transform


@functools.cache
def random_crop(width: int, mode: str = "constant", value: float = 0.0) -> Transform:
    """Pad every side by ``width`` pixels, then crop back to the original size at a random
    offset: random translations of up to ``width`` pixels, the standard CIFAR augmentation.
    The padding is black by default (``mode`` and ``value`` as for :func:`pad`)."""
    width = _nonneg(width, "random_crop width")
    if width == 0:
        return compose()
    return compose(pad(width, mode, value), jitter(2 * width))


@functools.cache
def per_image(transform: Transform) -> Transform:
    """``transform`` applied to each image of a batch with its own key (split from the one
    given), instead of one random setting for the whole batch."""
    if not callable(transform):
        raise ValueError(f"per_image takes a transform (key, images) -> images, got {transform!r}")

    def each(key, images):
        _check_nhwc(images, "per_image")
        keys = jax.random.split(key, images.shape[0])
        return jax.vmap(lambda k, image: transform(k, image[None])[0])(keys, images)

    return each


@functools.cache
def augmentation(flip: bool = True, crop_pad: int = 4) -> Transform:
    """Training augmentation: a random crop after ``crop_pad`` pixels of black padding, then a
    random left-right flip, each image with its own draw (:func:`per_image`). Pass it to
    ``fit(..., augment=...)``.

    Example:
      >>> aug = augmentation(flip=True, crop_pad=2)
      >>> jax.jit(aug)(jax.random.key(0), np.zeros((4, 28, 28, 1), np.float32)).shape
      (4, 28, 28, 1)
    """
    steps = ([random_crop(_nonneg(crop_pad, "crop_pad"))] if crop_pad else []) + (
        [random_flip()] if flip else []
    )
    return per_image(compose(*steps))
