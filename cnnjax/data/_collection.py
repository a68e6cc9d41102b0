"""Image collections: images read a batch at a time, for techniques that stream over many
images (the top images of every unit, Network Dissection).

A collection is a folder of image files of any size (only the list of names is held; files are
read when their batch comes), a :class:`Dataset`, or an array of images. Every batch comes out
in the model's input format: its evaluation crop (as :func:`cnnjax.load_image` makes it), and
greyscale or RGB as the model takes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cnnjax._src.contract import ModelSpec
from cnnjax._src.image_io import MAX_PIXELS, load_images
from cnnjax.data._dataset import Dataset

__all__ = ["ImageCollection", "image_collection"]


@dataclasses.dataclass(frozen=True, eq=False)
class ImageCollection:
    """Images read a batch at a time (make one with :func:`image_collection`).

    Attributes:
      names: one name per image: the file's path relative to the folder, or ``#i`` for arrays.
      labels: int32 ``[n]`` class labels when known (a ``Dataset``), else None.
      class_names: the labels' names, when known.
      root: the folder of a file collection, else None.
    """

    names: tuple[str, ...]
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    root: Path | None = None
    _array: np.ndarray | None = dataclasses.field(default=None, repr=False)
    max_pixels: int = MAX_PIXELS

    def __len__(self) -> int:
        return len(self.names)

    @property
    def fingerprint(self) -> str:
        """A digest of the names (and an array's bytes): what a resumed run must match."""
        h = hashlib.sha256("\n".join(self.names).encode())
        if self._array is not None:
            h.update(np.ascontiguousarray(self._array).tobytes())
        return h.hexdigest()[:16]

    def read(self, indices: Sequence[int], spec: ModelSpec, *, whole: bool = False) -> np.ndarray:
        """The images ``indices`` as a float32 batch for ``spec``'s model (its evaluation crop
        and channel count; with ``whole``, the whole image scaled to the input, as masks drawn
        on it need: images of the input's aspect are then not cropped).

        Raises:
          ValueError: an index out of range, or a file that cannot be read (naming it).
        """
        indices = np.asarray(indices, np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise ValueError(f"image indices must be in [0, {len(self)}), got {indices.tolist()}")
        h, w = spec.input_size
        if self._array is not None:
            images = self._array[indices]
            if images.shape[1:3] != (h, w):
                shape = (len(images), h, w, images.shape[-1])
                images = np.asarray(jax.image.resize(images, shape, "linear")).clip(0.0, 1.0)
        else:
            paths = [self.root / self.names[i] for i in indices]
            resize = None if whole else spec.resize_size
            images = load_images(paths, (h, w), resize=resize, min_side=spec.min_input_size,
                                 max_pixels=self.max_pixels)  # fmt: skip
        return _channels(images.astype(np.float32, copy=False), spec.channels)


def _channels(images: np.ndarray, channels: int) -> np.ndarray:
    if images.shape[-1] == channels:
        return images
    if channels == 1:
        return images.mean(axis=-1, keepdims=True)
    return np.repeat(images[..., :1], channels, axis=-1)


def image_collection(source: Any, labels: Any = None, *, max_pixels: int = MAX_PIXELS) -> ImageCollection:
    """A collection of images to stream over.

    Args:
      source: a folder (every image file below it, sorted by path; hidden files and folders
        skipped; only the names are held), a :class:`Dataset` (its labels and class names
        kept), an array of images ``[n, h, w, c]`` in [0, 1], or an :class:`ImageCollection`.
      labels: int ``[n]`` labels for an array source.
      max_pixels: files with more pixels are refused (as by :func:`cnnjax.load_image`).

    Returns:
      An :class:`ImageCollection`.

    Raises:
      FileNotFoundError: the folder does not exist.
      ValueError: no images, or an array that is not images in [0, 1].

    Example:
      >>> images = np.random.default_rng(0).random((5, 28, 28, 1), np.float32)
      >>> c = image_collection(images)
      >>> len(c), c.names[:2]
      (5, ('#0', '#1'))
    """
    if isinstance(source, ImageCollection):
        return source
    if isinstance(source, Dataset):
        collection = image_collection(source.images, source.labels, max_pixels=max_pixels)
        return dataclasses.replace(collection, class_names=tuple(source.class_names))
    if isinstance(source, (str, os.PathLike)):
        return _folder(Path(source), max_pixels)
    array = np.asarray(source)
    if array.ndim != 4 or array.shape[-1] not in (1, 3) or len(array) == 0:
        raise ValueError(f"a collection's array must be images [n, h, w, 1 or 3], n >= 1, got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
        raise ValueError("an image collection array must hold finite floats in [0, 1]")
    if array.min() < 0 or array.max() > 1:
        raise ValueError(f"images must hold values in [0, 1], got [{array.min():.3g}, {array.max():.3g}]")
    if labels is not None:
        labels = np.asarray(labels).astype(np.int32).reshape(-1)
        if len(labels) != len(array):
            raise ValueError(f"{len(labels)} labels for {len(array)} images")
    names = tuple(f"#{i}" for i in range(len(array)))
    return ImageCollection(names, labels, None, None, array, max_pixels)


def _folder(root: Path, max_pixels: int) -> ImageCollection:
    from PIL import Image

    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"{root} is a file; expected a folder of images")
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(root)
        names += [str(rel / f) for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in extensions]  # fmt: skip
    if not names:
        raise ValueError(f"{root} holds no image files (files ending in e.g. .png, .jpg, .jpeg)")
    names = sorted(names)
    for name in names:  # headers only: an unreadable file is named before any work
        try:
            with Image.open(root / name) as image:
                image.size  # noqa: B018
        except (OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"{root / name} cannot be read as an image ({e})") from None
    return ImageCollection(tuple(names), root=root, max_pixels=max_pixels)
