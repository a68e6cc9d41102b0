"""The labelled image set every loader returns: float32 NHWC images in [0, 1], int32 labels,
class names."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Dataset", "make_dataset"]

_MAX_DEFAULT_CLASSES = 1 << 16  # above this, make_dataset asks for class_names


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled images: float32 NHWC in [0, 1], int32 labels and the class names.

    Build one with :func:`make_dataset`, which converts and checks every value; constructing
    ``Dataset`` directly checks only the types and shapes (it is what the loaders and splits
    use on data that is already checked).

    Attributes:
      images: float32 NumPy array ``[n, h, w, c]`` with values in [0, 1].
      labels: int32 NumPy array ``[n]`` with values in ``[0, len(class_names))``.
      class_names: one name per class, in label order.

    Example:
      >>> ds = make_dataset(np.zeros((4, 8, 8, 1), np.float32), [0, 1, 0, 1], ("no", "yes"))
      >>> len(ds), ds.num_classes, ds.images.shape
      (4, 2, (4, 8, 8, 1))
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self):
        hint = "; use make_dataset(images, labels, class_names) to convert and check arrays"
        images, labels = self.images, self.labels
        if not (isinstance(images, np.ndarray) and images.dtype == np.float32 and images.ndim == 4):
            raise ValueError(
                f"Dataset.images must be a float32 NumPy array [n, h, w, c], got "
                f"{type(images).__name__} {getattr(images, 'dtype', '')} "
                f"{getattr(images, 'shape', '')}{hint}"
            )
        if not (isinstance(labels, np.ndarray) and labels.dtype == np.int32 and labels.ndim == 1):
            raise ValueError(
                f"Dataset.labels must be an int32 NumPy array [n], got {type(labels).__name__} "
                f"{getattr(labels, 'dtype', '')} {getattr(labels, 'shape', '')}{hint}"
            )
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"Dataset has {images.shape[0]} images but {labels.shape[0]} labels{hint}")
        names = self.class_names
        if not (isinstance(names, tuple) and names and all(isinstance(s, str) for s in names)):
            raise ValueError(f"Dataset.class_names must be a non-empty tuple of str, got {names!r}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(class_names)``."""
        return len(self.class_names)

    def take(self, indices: Any) -> Dataset:
        """The examples at ``indices`` (an int array or a boolean mask), in that order.

        Args:
          indices: integer indices or a boolean mask of length ``len(self)``.

        Returns:
          A new ``Dataset`` with the same class names.

        Example:
          >>> ds = make_dataset(np.zeros((4, 2, 2, 1), np.float32), [0, 1, 0, 1])
          >>> ds.take([3, 0]).labels
          array([1, 0], dtype=int32)
        """
        indices = np.asarray(indices)
        return Dataset(self.images[indices], self.labels[indices], self.class_names)

    def __repr__(self) -> str:
        return (
            f"Dataset(images={self.images.dtype}{list(self.images.shape)}, "
            f"labels={self.labels.dtype}{list(self.labels.shape)}, "
            f"class_names={self.class_names!r})"
        )


def make_dataset(images: Any, labels: Any, class_names: Sequence[str] | None = None) -> Dataset:
    """Check and convert arrays into a :class:`Dataset` (also the loader for NumPy arrays).

    uint8 images are taken to be in [0, 255] and are divided by 255 automatically; floating
    point images (any precision) must already be in [0, 1] and become float32 (float32 input
    is used as is, without a copy). Nothing else is rescaled, clipped or guessed.

    Args:
      images: a NumPy or JAX array ``[n, h, w, c]`` (NHWC), float in [0, 1] or uint8.
      labels: integer class indices ``[n]``, each in ``[0, num_classes)``.
      class_names: one name per class. Default: ``"0"``, ``"1"``, ... up to the largest label.

    Returns:
      A ``Dataset`` with float32 images and int32 labels.

    Raises:
      ValueError: images not of rank 4, of another dtype than float or uint8, with NaN or
        values outside [0, 1]; labels not a 1-D integer array or out of range; a different
        number of images and labels; an empty dataset; empty or repeated class names.

    Example:
      >>> pixels = np.full((2, 28, 28, 1), 255, np.uint8)
      >>> ds = make_dataset(pixels, [3, 1], class_names=[str(i) for i in range(10)])
      >>> float(ds.images.max()), ds.labels.dtype
      (1.0, dtype('int32'))
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
        hint = " (for greyscale [n, h, w] use images[..., None])" if images.ndim == 3 else ""
        raise ValueError(f"images must be NHWC [n, h, w, c], got shape {images.shape}{hint}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array [n] of class indices, got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images and labels differ in length: {images.shape[0]} images, {labels.shape[0]} labels"
        )
    if images.shape[0] == 0 or 0 in images.shape:
        raise ValueError(f"the dataset is empty: images of shape {images.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be integers, got dtype {labels.dtype} "
            "(convert exact class indices with labels.astype(int))"
        )

    if images.dtype == np.uint8:
        pixels = images.astype(np.float32, order="C")
        np.divide(pixels, np.float32(255.0), out=pixels)
    elif images.dtype.kind == "f" or images.dtype.name == "bfloat16":
        pixels = images.astype(np.float32, copy=False)
        if np.isnan(pixels).any():
            raise ValueError(
                f"images contain {int(np.isnan(pixels).sum())} NaN values; expected floats in [0, 1]"
            )
        low, high = float(pixels.min()), float(pixels.max())
        if low < 0.0 or high > 1.0:
            scale = " (uint8-range floats: divide by 255)" if high <= 255.0 and high > 1.0 else ""
            raise ValueError(f"images must be in [0, 1], found values in [{low:.6g}, {high:.6g}]{scale}")
    else:
        raise ValueError(
            f"images must be floating point in [0, 1] or uint8 in [0, 255], got dtype {images.dtype}"
        )

    low, high = int(labels.min()), int(labels.max())
    if class_names is None:
        if low < 0:
            raise ValueError(f"labels must be class indices >= 0, found {low}")
        if high >= _MAX_DEFAULT_CLASSES:
            raise ValueError(
                f"labels go up to {high}; pass class_names to use more than {_MAX_DEFAULT_CLASSES} classes"
            )
        names = tuple(str(i) for i in range(high + 1))
    else:
        if isinstance(class_names, str):
            raise ValueError(f"class_names must be a sequence of names, got the string {class_names!r}")
        names = tuple(class_names)
        if not names or not all(isinstance(s, str) and s for s in names):
            raise ValueError(f"class_names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            repeated = sorted({s for s in names if names.count(s) > 1})
            raise ValueError(f"class_names must be distinct, these repeat: {repeated}")
    if low < 0 or high >= len(names):
        bad = np.unique(labels[(labels < 0) | (labels >= len(names))])
        raise ValueError(
            f"labels must be in [0, {len(names)}) for {len(names)} classes, found "
            f"{bad[:10].tolist()}{' ...' if bad.size > 10 else ''}"
        )
    return Dataset(pixels, labels.astype(np.int32), names)
