"""Data for training: datasets, loaders, stratified splits, shuffled batches, statistics, augmentation.

A :class:`Dataset` holds images in the library's one image format (float32, NHWC, values in
[0, 1]) with int32 labels and the class names. Everything here is NumPy on the host, except
where a random key is involved: shuffling takes an explicit JAX key, and the augmentations are
pure JAX functions of ``(key, images)`` that work under ``jax.jit`` and ``jax.vmap``.

Loaders:

- :func:`make_dataset` turns NumPy (or JAX) arrays into a checked :class:`Dataset`.
- :func:`load_fashion_mnist`, :func:`load_mnist`: the IDX files (``.gz`` or raw), found on disk
  (an explicit folder, ``$CNNJAX_DATA``, Debian's ``dataset-fashion-mnist`` package, the user
  cache) or, only when asked, downloaded from the official address and checked against known
  checksums.
- :func:`load_cifar10`: the CIFAR-10 "python version" batches, read by an unpickler that only
  rebuilds NumPy arrays and never runs code from the file.
- :func:`load_image_folder`: one sub-folder of images per class.

Nothing here touches the network unless ``download=True`` is passed.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.client
import math
import numbers
import os
import pickle
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.atomic import atomic_write
from cnnjax._src.image_io import load_images

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CHECKSUMS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_URL",
    "MNIST_CHECKSUMS",
    "MNIST_CLASSES",
    "MNIST_URL",
    "Dataset",
    "augment",
    "batches",
    "channel_stats",
    "epoch_permutation",
    "load_cifar10",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "make_dataset",
    "random_crop",
    "random_flip",
    "read_idx",
    "split",
    "split_indices",
    "split_train_val",
    "write_idx",
]

# --- constants -----------------------------------------------------------------------------

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(digit) for digit in range(10))
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: The official Fashion-MNIST address (Zalando's S3 website; it serves plain HTTP only, so the
#: files are checked against the SHA-256 digests below).
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: SHA-256 of the official ``.gz`` files. Their MD5s are the ones the Fashion-MNIST README
#: publishes (train-images 8d4fb7e6c68d591d4c3dfef9ec88bf0d, train-labels
#: 25c81989df183df01b3e8a0aad5dffbe, t10k-images bef4ecab320f06d8554ea6380940ec79, t10k-labels
#: bb300cfdad3c16e7a12a480ee83cd310). Both were checked on files rebuilt byte for byte from
#: Debian's copies, whose gzip headers differ (Debian drops the stored file name and the
#: time stamp), so Debian's ``.gz`` files have other digests but the same contents.
FASHION_MNIST_CHECKSUMS: Mapping[str, str] = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
#: The MNIST mirror that torchvision uses (Yann LeCun's original site no longer serves it).
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: MD5 of the original MNIST ``.gz`` files, as published by torchvision and others.
MNIST_CHECKSUMS: Mapping[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

# The four IDX files of an MNIST-like dataset, without the optional ".gz".
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Where operating-system packages install the files (`dpkg -c` on Debian's
# dataset-fashion-mnist 0.0~git20200523.55506a9-1 shows /usr/share/datasets/fashion-mnist/).
_SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (),
}
_ENV_VAR = "CNNJAX_DATA"

# IDX type code -> dtype (big-endian, as the format stores it).
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_TYPE_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
_GZIP_MAGIC = b"\x1f\x8b"

_SPLIT_NAMES = ("train", "val", "test")
_STATS_CHUNK = 1 << 22  # values per chunk when computing statistics (bounds float64 temporaries)
_MAX_DEFAULT_CLASSES = 1 << 16  # above this, make_dataset asks for class_names


# --- the dataset ---------------------------------------------------------------------------


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


# --- IDX files -----------------------------------------------------------------------------


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a NumPy array.

    The format: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int,
    0x0D float, 0x0E double), the number of dimensions, each dimension as a big-endian
    uint32, then the values in row-major order, big-endian. Gzip compression is recognised by
    the gzip magic number, whatever the file is called.

    Args:
      path: the file.

    Returns:
      The array, in native byte order, with the stored dtype and shape.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: corrupt gzip data, a bad magic number or type code, or a file shorter or
        longer than its header says; the message names the file and what was expected.

    Example:
      >>> labels = read_idx("train-labels-idx1-ubyte.gz")  # doctest: +SKIP
      >>> labels.shape, labels.dtype  # doctest: +SKIP
      ((60000,), dtype('uint8'))
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an IDX file (4-byte header expected)")
    if raw[:2] != b"\x00\x00":
        raise ValueError(
            f"{path}: not an IDX file: it starts with bytes {raw[:2].hex()}, expected 0000 "
            "(the IDX magic number) or 1f8b (gzip)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X} ({n})" for c, n in _IDX_TYPE_NAMES.items())
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X}; expected one of {valid}")
    if ndim == 0:
        raise ValueError(f"{path}: the IDX header declares 0 dimensions; expected at least 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} header bytes, "
            f"the file has {len(raw)}"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "corrupt"
        raise ValueError(
            f"{path}: {what} IDX file: the header declares shape {shape} of "
            f"{_IDX_TYPE_NAMES[code]}, i.e. {expected} bytes of data, but {got} bytes follow it"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: Any, *, compress: bool | None = None) -> Path:
    """Write an array as an IDX file, atomically (the inverse of :func:`read_idx`).

    Args:
      path: the file to write; parent folders are created.
      array: a NumPy array of dtype uint8, int8, int16, int32, float32 or float64 with 1 to
        255 dimensions.
      compress: gzip the file; default: when ``path`` ends in ``.gz``.

    Returns:
      The ``Path`` written.

    Raises:
      ValueError: an unsupported dtype, no dimensions, or a dimension too large for IDX.

    Example:
      >>> write_idx("labels-idx1-ubyte.gz", np.array([3, 1, 4], np.uint8))  # doctest: +SKIP
      PosixPath('labels-idx1-ubyte.gz')
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        valid = ", ".join(str(d.newbyteorder("=")) for d in _IDX_DTYPES.values())
        raise ValueError(f"IDX files hold {valid}; got dtype {array.dtype}")
    if not 1 <= array.ndim <= 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(f"IDX files hold 1 to 255 dimensions below 2**32 each, got shape {array.shape}")
    data = struct.pack(f">2xBB{array.ndim}I", code, array.ndim, *array.shape)
    data += np.ascontiguousarray(array, _IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, mtime=0)
    return atomic_write(path, lambda f: f.write(data))


# --- MNIST-like datasets -------------------------------------------------------------------


def load_fashion_mnist(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    base_url: str = FASHION_MNIST_URL,
    checksums: Mapping[str, str] = FASHION_MNIST_CHECKSUMS,
    progress: bool = True,
) -> tuple[Dataset, Dataset]:
    """Load Fashion-MNIST (Xiao, Rasul and Vollgraf 2017) as its official train and test sets.

    The four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each ``.gz`` or not) are looked for,
    in this order, in:

    1. ``path`` and ``path/fashion-mnist``, when ``path`` is given (and only there: an explicit
       folder is never silently replaced by another copy);
    2. ``$CNNJAX_DATA/fashion-mnist`` and ``$CNNJAX_DATA`` (several folders may be joined with
       ``os.pathsep``);
    3. ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist`` package
       installs them;
    4. the user cache, ``~/.cache/cnnjax/fashion-mnist`` (``$XDG_CACHE_HOME`` if set).

    If they are not found and ``download=True``, the missing files are downloaded from
    ``base_url`` into ``path`` (if given) or the cache, with a progress bar, each one checked
    against ``checksums`` before it is atomically moved into place. Without ``download=True``
    nothing is ever fetched.

    Args:
      path: a folder holding the four files.
      download: fetch the files if they are not found.
      base_url: the address the four ``.gz`` files are fetched from.
      checksums: file name (``*.gz``) -> hex digest of the downloaded file: 32 hex digits for
        MD5, 64 for SHA-256. The default holds the official files' SHA-256.
      progress: show a progress bar while downloading.

    Returns:
      ``(train, test)``: 60,000 and 10,000 examples of ``[28, 28, 1]`` images, class names
      ``FASHION_MNIST_CLASSES``.

    Raises:
      FileNotFoundError: the files are not found and ``download`` is false; the message lists
        every folder searched and the ways to fix it.
      ValueError: a corrupt file, a download whose checksum does not match (it is discarded),
        or files whose shapes or labels do not fit together.
      OSError: a download failed.

    Example:
      >>> train, test = load_fashion_mnist()  # doctest: +SKIP
      >>> train.images.shape, test.class_names[0]  # doctest: +SKIP
      ((60000, 28, 28, 1), 'T-shirt/top')
    """
    return _load_mnist_like(
        "fashion-mnist", "Fashion-MNIST", FASHION_MNIST_CLASSES, path, download, base_url,
        checksums, progress, "load_fashion_mnist",
    )  # fmt: skip


def load_mnist(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    base_url: str = MNIST_URL,
    checksums: Mapping[str, str] = MNIST_CHECKSUMS,
    progress: bool = True,
) -> tuple[Dataset, Dataset]:
    """Load MNIST handwritten digits (LeCun et al. 1998) as the official train and test sets.

    The files and the search order are those of :func:`load_fashion_mnist`, with ``mnist``
    in place of ``fashion-mnist`` (no operating-system package is searched).

    Args:
      path: a folder holding the four files.
      download: fetch the files if they are not found.
      base_url: the address the four ``.gz`` files are fetched from (default: the mirror
        torchvision uses).
      checksums: file name (``*.gz``) -> hex digest (MD5 or SHA-256) of the downloaded file.
      progress: show a progress bar while downloading.

    Returns:
      ``(train, test)``: 60,000 and 10,000 examples of ``[28, 28, 1]`` images, class names
      ``"0"`` to ``"9"``.

    Raises:
      FileNotFoundError: the files are not found and ``download`` is false.
      ValueError: a corrupt file or a download whose checksum does not match.
      OSError: a download failed.

    Example:
      >>> train, test = load_mnist(download=True)  # doctest: +SKIP
      >>> len(train), len(test)  # doctest: +SKIP
      (60000, 10000)
    """
    return _load_mnist_like(
        "mnist", "MNIST", MNIST_CLASSES, path, download, base_url, checksums, progress, "load_mnist"
    )


def _load_mnist_like(
    name: str,
    display: str,
    class_names: tuple[str, ...],
    path: str | os.PathLike[str] | None,
    download: bool,
    base_url: str,
    checksums: Mapping[str, str],
    progress: bool,
    function: str,
) -> tuple[Dataset, Dataset]:
    if path is not None:
        candidates = [Path(path), Path(path) / name]
    else:
        candidates = []
        for root in os.environ.get(_ENV_VAR, "").split(os.pathsep):
            if root:
                candidates += [Path(root) / name, Path(root)]
        candidates += [*_SYSTEM_DIRS.get(name, ()), _cache_dir(name)]

    searched = [] if path is not None or os.environ.get(_ENV_VAR) else [f"  ${_ENV_VAR} (not set)"]
    files = None
    for folder in candidates:
        files, reason = _find_idx_files(folder)
        if files is not None:
            break
        searched.append(f"  {folder} ({reason})")
    if files is None and download:
        target = Path(path) if path is not None else _cache_dir(name)
        _download_idx_files(target, base_url, checksums, progress)
        files, reason = _find_idx_files(target)
        if files is None:  # Not expected: every file was just written.
            raise FileNotFoundError(f"{display}: downloaded into {target} but {reason}")
    if files is None:
        wanted = ", ".join(f"{f}(.gz)" for f in _IDX_FILES)
        fixes = [
            f"pass {function}(path=...) the folder that holds them",
            f"set {_ENV_VAR} to a folder holding them (or a {name}/ sub-folder of it)",
        ]
        if name == "fashion-mnist":
            fixes.append(
                "on Debian and its derivatives: apt-get install dataset-fashion-mnist "
                "(installs them into /usr/share/datasets/fashion-mnist)"
            )
        fixes.append(
            f"or call {function}(download=True) to fetch them from {base_url} into "
            f"{Path(path) if path is not None else _cache_dir(name)}"
        )
        raise FileNotFoundError(
            f"{display} not found. Looked for {wanted} in:\n"
            + "\n".join(searched)
            + "\nTo fix it:\n"
            + "\n".join(f"  - {fix}" for fix in fixes)
        )

    arrays = {stem: read_idx(file) for stem, file in files.items()}
    train = _idx_dataset(arrays, "train", files, class_names)
    test = _idx_dataset(arrays, "t10k", files, class_names)
    return train, test


def _cache_dir(name: str) -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "cnnjax" / name


def _find_idx_files(folder: Path) -> tuple[dict[str, Path] | None, str]:
    """The four IDX files in ``folder`` (``.gz`` preferred), or ``None`` and why not."""
    if not folder.is_dir():
        return None, "no such folder" if not folder.exists() else "not a folder"
    found, missing = {}, []
    for stem in _IDX_FILES:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            missing.append(stem)
    if missing:
        return None, "missing " + ", ".join(missing)
    return found, ""


def _idx_dataset(
    arrays: dict[str, np.ndarray], prefix: str, files: dict[str, Path], class_names: tuple[str, ...]
) -> Dataset:
    images_key, labels_key = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images, labels = arrays[images_key], arrays[labels_key]
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{files[images_key]}: expected uint8 images [n, h, w], got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{files[labels_key]}: expected {images.shape[0]} uint8 labels to match "
            f"{files[images_key].name}, got {labels.dtype} {labels.shape}"
        )
    try:
        return make_dataset(images[..., None], labels, class_names)
    except ValueError as e:
        raise ValueError(f"{files[labels_key]}: {e}") from None


def _download_idx_files(target: Path, base_url: str, checksums: Mapping[str, str], progress: bool) -> None:
    """Download the missing ``.gz`` files into ``target``, each checked before it lands."""
    names = [f"{stem}.gz" for stem in _IDX_FILES]
    for filename in names:  # Check the whole table before fetching anything.
        _digest_algorithm(checksums.get(filename), filename)
    for stem, filename in zip(_IDX_FILES, names):
        if (target / filename).is_file() or (target / stem).is_file():
            continue  # Kept from an earlier, interrupted download or put there by the user.
        url = base_url.rstrip("/") + "/" + filename
        _download(url, target / filename, checksums[filename], progress)


def _digest_algorithm(digest: Any, filename: str) -> str:
    if isinstance(digest, str):
        try:
            bytes.fromhex(digest)
        except ValueError:
            pass
        else:
            if len(digest) == 32:
                return "md5"
            if len(digest) == 64:
                return "sha256"
    raise ValueError(
        f"checksums must map {filename!r} to a hex MD5 (32 digits) or SHA-256 (64 digits) "
        f"digest, got {digest!r}"
    )


def _download(url: str, dest: Path, expected: str, progress: bool) -> None:
    """Fetch ``url`` into ``dest`` atomically; a checksum mismatch leaves nothing behind."""
    from tqdm import tqdm

    algorithm = _digest_algorithm(expected, dest.name)

    def write(f: BinaryIO) -> None:
        digest = hashlib.new(algorithm)
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                disable=not progress, leave=False,
            ) as bar:  # fmt: skip
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != expected.lower():
            raise ValueError(
                f"{url}: {algorithm} checksum mismatch: got {digest.hexdigest()}, expected "
                f"{expected.lower()}; the download was discarded and {dest} was not written"
            )

    try:
        atomic_write(dest, write)
    except urllib.error.HTTPError as e:
        e.close()  # It holds the error response open.
        raise OSError(f"could not download {url}: {e}") from None
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise OSError(f"could not download {url}: {e}") from e


# --- CIFAR-10 ------------------------------------------------------------------------------

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = (*_CIFAR_TRAIN, "test_batch", "batches.meta")
# The functions NumPy's own pickles call to rebuild arrays, taken from NumPy itself rather
# than imported by name (``numpy.core`` is deprecated in NumPy 2; ``numpy._core`` is new).
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3's protocol-2 pickles use it for bytes, and nothing more."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"refusing _codecs.encode({type(obj).__name__}, {encoding!r}) in a pickle")
    return obj.encode("latin1", errors)


_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RefusedGlobal(ValueError):
    """A pickle named a global this reader does not allow."""


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds builtin containers and NumPy arrays; refuses every other global."""

    def __init__(self, file: BinaryIO, source: Path):
        # latin1 decodes Python 2 strings byte for byte, as NumPy's array states need.
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(
                f"{self._source}: refusing to load the global {module}.{name}: CIFAR batches hold "
                "only dicts, lists, strings and NumPy arrays, and this reader never runs code "
                "from a file"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _RefusedGlobal(f"{self._source}: unexpected persistent id in a CIFAR batch")


def _unpickle_batch(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, path).load()
    except (_RefusedGlobal, OSError):
        raise
    except Exception as e:  # A malformed stream raises many kinds of error.
        raise ValueError(f"{path}: corrupt or not a pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle_batch(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise ValueError(
            f"{path}: 'data' must be a uint8 array [n, 3072], got {type(data).__name__} "
            f"{getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}"
        )
    if data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must have 3072 columns (3 x 32 x 32), got {data.shape}")
    try:
        labels = np.asarray(labels)
    except Exception:
        labels = np.asarray(None)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.shape[0] != data.shape[0]:
        raise ValueError(
            f"{path}: 'labels' must be {data.shape[0]} integers, got {type(batch.get('labels')).__name__} "
            f"of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{path}: labels must be in [0, {num_classes}), found {labels.min()}..{labels.max()}"
        )
    # Each row is the red, then green, then blue plane, each row-major 32 x 32.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def load_cifar10(path: str | os.PathLike[str]) -> tuple[Dataset, Dataset]:
    """Load CIFAR-10 (Krizhevsky 2009) from its "python version" batches, without running code.

    ``path`` is the extracted ``cifar-10-batches-py`` folder (or the folder that contains
    it) from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, holding
    ``data_batch_1`` to ``data_batch_5``, ``test_batch`` and ``batches.meta``. These are
    pickles; they are read by an unpickler that allows only builtin containers and NumPy's own
    array-rebuilding functions, so a hostile file is refused before anything in it runs.

    Args:
      path: the folder.

    Returns:
      ``(train, test)``: 50,000 and 10,000 examples of ``[32, 32, 3]`` RGB images in [0, 1]
      (rebuilt from the row-major channel-first layout), class names from ``batches.meta``.

    Raises:
      FileNotFoundError: the folder or one of the seven files is missing.
      ValueError: a file is not a CIFAR-10 batch, names a global other than the allowed
        NumPy ones, or has bad data, labels or class names.

    Example:
      >>> train, test = load_cifar10("data/cifar-10-batches-py")  # doctest: +SKIP
      >>> train.images.shape, train.class_names[:2]  # doctest: +SKIP
      ((50000, 32, 32, 3), ('airplane', 'automobile'))
    """
    root = Path(path)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 folder {root} not found; extract cifar-10-python.tar.gz from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and pass the cifar-10-batches-py folder"
        )
    missing = [name for name in _CIFAR_FILES if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{root} is not a CIFAR-10 python folder: missing {', '.join(missing)} (expected "
            f"{', '.join(_CIFAR_FILES)})"
        )
    meta = _unpickle_batch(root / "batches.meta")
    names = meta.get("label_names")
    if isinstance(names, (list, tuple)):
        names = tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)
    if not (isinstance(names, tuple) and names and all(isinstance(n, str) and n for n in names)):
        raise ValueError(f"{root / 'batches.meta'}: 'label_names' must be a list of names, got {names!r:.80}")

    def load(files: Sequence[str]) -> Dataset:
        parts = [_cifar_batch(root / name, len(names)) for name in files]
        images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        return make_dataset(images, labels, names)

    return load(_CIFAR_TRAIN), load(["test_batch"])


# --- image folders -------------------------------------------------------------------------


def load_image_folder(
    root: str | os.PathLike[str], size: int | tuple[int, int], *, resize: int | None = None
) -> Dataset:
    """Load a folder with one sub-folder of images per class, as RGB images of one size.

    The sorted sub-folder names are the class names (label 0 is the first). In each class
    folder every file Pillow recognises by its suffix is loaded (sorted by name) with
    :func:`cnnjax._src.image_io.load_images`, resized and centre-cropped to ``size``. Hidden
    files and folders (names starting with ``.``), other files, files directly in ``root`` and
    deeper sub-folders are skipped.

    Args:
      root: the folder, laid out as ``root/<class>/<image>``.
      size: the image size, an int ``s`` (``s x s``) or ``(h, w)``.
      resize: the shorter side after resizing, before the crop (see ``load_image``).

    Returns:
      A ``Dataset`` of ``[n, h, w, 3]`` images, in class order then file-name order.

    Raises:
      FileNotFoundError: ``root`` does not exist.
      NotADirectoryError: ``root`` is a file.
      ValueError: ``root`` has no class sub-folders, a class folder has no images, or an image
        cannot be read.

    Example:
      >>> ds = load_image_folder("photos", 64)  # photos/cat/*.jpg, photos/dog/*.jpg  # doctest: +SKIP
      >>> ds.class_names  # doctest: +SKIP
      ('cat', 'dog')
    """
    from PIL import Image

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; expected a folder with one sub-folder per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(
            f"{root} has no class sub-folders; expected one folder of images per class, "
            "e.g. root/cat/1.jpg and root/dog/1.jpg"
        )
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(class_dirs):
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
        )
        if not files:
            raise ValueError(
                f"class folder {folder} has no images (files ending in e.g. .png, .jpg, .jpeg, .bmp)"
            )
        paths += files
        labels += [label] * len(files)
    images = load_images(paths, size, resize=resize)
    return make_dataset(images, np.asarray(labels, np.int32), [p.name for p in class_dirs])


# --- splits --------------------------------------------------------------------------------


def split_indices(
    labels: Any, fractions: Sequence[float], *, seed: int = 0, names: Sequence[str] | None = None
) -> tuple[np.ndarray, ...]:
    """Stratified, deterministic split of example indices into parts of the given fractions.

    Each class is shuffled on its own and cut so that, for every class and every part, the
    number of examples differs from ``fractions[i] * class_size`` by less than one; the
    rounding is carried from class to class so the part sizes stay close to
    ``fractions[i] * n`` too. The parts are disjoint, cover every index exactly once, and are
    each shuffled (not sorted by class). The same labels and seed give the same split.

    Args:
      labels: integer labels ``[n]``.
      fractions: one positive fraction per part, summing to 1.
      seed: the seed of the NumPy generator that shuffles.
      names: part names for error messages (default ``"part 0"``, ``"part 1"``, ...).

    Returns:
      One int64 index array per part.

    Raises:
      ValueError: bad labels, fractions that are not positive or do not sum to 1, or a part
        that would be empty (named in the message).

    Example:
      >>> train, val = split_indices([0, 0, 0, 0, 1, 1, 1, 1], (0.5, 0.5), seed=0)
      >>> sorted(np.concatenate([train, val]).tolist())
      [0, 1, 2, 3, 4, 5, 6, 7]
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    fractions = _check_fractions(fractions)
    names = tuple(names) if names is not None else tuple(f"part {i}" for i in range(len(fractions)))
    if len(names) != len(fractions):
        raise ValueError(f"got {len(fractions)} fractions for {len(names)} parts {names}")
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    deficit = np.zeros(len(fractions))  # Carried rounding: target minus given so far, per part.
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        target = members.size * fractions
        counts = np.floor(target + 1e-9).astype(np.int64)
        remainder = members.size - int(counts.sum())
        if remainder:
            frac = np.clip(target - counts, 0.0, None)
            # Only parts with a fractional share may round up (keeps every cell within one);
            # among them, the ones owed most so far go first.
            priority = np.where(frac > 1e-9, frac + deficit, -np.inf)
            counts[np.argsort(-priority, kind="stable")[:remainder]] += 1
        deficit += target - counts
        for part, chunk in zip(parts, np.split(members, np.cumsum(counts)[:-1])):
            part.append(chunk)
    result = tuple(rng.permutation(np.concatenate(p)) for p in parts)
    for name, fraction, part in zip(names, fractions, result):
        if part.size == 0:
            sizes = ", ".join(f"{nm}={p.size}" for nm, p in zip(names, result))
            raise ValueError(
                f"the {name} split would be empty: {n} examples with fractions "
                f"{tuple(float(f) for f in fractions)} give {sizes}; use more data or a larger "
                f"{name} fraction (now {float(fraction):g})"
            )
    return result


def _check_fractions(fractions: Any) -> np.ndarray:
    try:
        values = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be a sequence of numbers, got {fractions!r}") from None
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"fractions must be a sequence of at least two numbers, got {fractions!r}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"fractions must all be positive, got {fractions!r}")
    if abs(values.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {values.sum():.6g})")
    return values


def split(
    dataset: Dataset, fractions: Sequence[float] = (0.6, 0.2, 0.2), *, seed: int = 0
) -> tuple[Dataset, Dataset, Dataset]:
    """Split a dataset into train, validation and test sets, stratified by class.

    See :func:`split_indices` for the guarantees: deterministic for a seed, disjoint, covering
    every example once, and within one example of each fraction for every class.

    Args:
      dataset: the examples to split.
      fractions: the ``(train, val, test)`` fractions, positive and summing to 1.
      seed: the shuffling seed.

    Returns:
      ``(train, val, test)`` datasets with the class names of ``dataset``.

    Raises:
      ValueError: fractions that are not three positive numbers summing to 1, or an empty
        split (named in the message).

    Example:
      >>> ds = make_dataset(np.zeros((10, 4, 4, 1), np.float32), [0, 1] * 5)
      >>> [len(part) for part in split(ds, (0.6, 0.2, 0.2))]
      [6, 2, 2]
    """
    if _check_fractions(fractions).size != 3:
        raise ValueError(f"fractions must be three numbers (train, val, test), got {fractions!r}")
    indices = split_indices(dataset.labels, fractions, seed=seed, names=_SPLIT_NAMES)
    train, val, test = (dataset.take(i) for i in indices)
    return train, val, test


def split_train_val(train: Dataset, val_fraction: float = 0.2, *, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Hold out a stratified validation set from a training set (keep the official test set).

    Args:
      train: the training examples.
      val_fraction: the fraction that becomes the validation set, in (0, 1).
      seed: the shuffling seed.

    Returns:
      ``(train, val)``, as :func:`split_indices` describes.

    Raises:
      ValueError: ``val_fraction`` outside (0, 1), or an empty split.

    Example:
      >>> ds = make_dataset(np.zeros((10, 4, 4, 1), np.float32), [0, 1] * 5)
      >>> [len(part) for part in split_train_val(ds, 0.2)]
      [8, 2]
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real):
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    fractions = (1.0 - float(val_fraction), float(val_fraction))
    indices = split_indices(train.labels, fractions, seed=seed, names=_SPLIT_NAMES[:2])
    kept, val = (train.take(i) for i in indices)
    return kept, val


# --- shuffling and batches -----------------------------------------------------------------


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_key(key: Any) -> None:
    if isinstance(key, (int, np.integer)) or not hasattr(key, "shape"):
        raise ValueError(
            f"key must be a JAX PRNG key such as jax.random.key(0), got {type(key).__name__} {key!r:.40}"
        )


def epoch_permutation(key: jax.Array, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` from an explicit JAX key, for one epoch.

    Derive one key per epoch (``jax.random.fold_in(key, epoch)``) to reshuffle every epoch
    reproducibly.

    Args:
      key: a JAX PRNG key (``jax.random.key`` or ``jax.random.PRNGKey``).
      n: the number of examples.

    Returns:
      A NumPy integer array ``[n]`` holding each of ``0 .. n-1`` once.

    Raises:
      ValueError: ``n`` is not a positive int, or ``key`` is not a key.

    Example:
      >>> sorted(epoch_permutation(jax.random.key(0), 5).tolist())
      [0, 1, 2, 3, 4]
    """
    n = _positive_int(n, "n")
    _check_key(key)
    return np.asarray(jax.random.permutation(key, n))


def batches(
    dataset: Dataset, batch_size: int, key: jax.Array | None = None, drop_remainder: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over one epoch of ``(images, labels)`` batches, shuffled by ``key``.

    The arguments are checked when ``batches`` is called, before the first batch.

    Args:
      dataset: the examples.
      batch_size: examples per batch, at most ``len(dataset)``.
      key: a JAX key that permutes the examples (see :func:`epoch_permutation`); pass a new
        key each epoch, e.g. ``jax.random.fold_in(key, epoch)``. ``None`` keeps the order.
      drop_remainder: drop the last, smaller batch; otherwise it is yielded too.

    Returns:
      An iterator of NumPy ``(images [b, h, w, c] float32, labels [b] int32)`` pairs.

    Raises:
      ValueError: ``batch_size`` is not a positive int or is larger than the dataset.

    Example:
      >>> ds = make_dataset(np.zeros((10, 4, 4, 1), np.float32), [0, 1] * 5)
      >>> [x.shape[0] for x, y in batches(ds, 4, jax.random.key(0), drop_remainder=False)]
      [4, 4, 2]
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a Dataset (see make_dataset), got {type(dataset).__name__}")
    batch_size = _positive_int(batch_size, "batch_size")
    n = len(dataset)
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n} examples)")
    order = epoch_permutation(key, n) if key is not None else None
    stop = n - n % batch_size if drop_remainder else n

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, stop, batch_size):
            if order is None:
                yield dataset.images[start : start + batch_size], dataset.labels[start : start + batch_size]
            else:
                index = order[start : start + batch_size]
                yield dataset.images[index], dataset.labels[index]

    return generate()


# --- statistics ----------------------------------------------------------------------------


def channel_stats(dataset: Dataset | Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the images, for input normalisation.

    Compute them on the training split only (never on validation or test data), in float64
    and in chunks so a large dataset needs no large temporary copies.

    Args:
      dataset: a ``Dataset`` or an image array ``[n, h, w, c]``.

    Returns:
      ``(mean, std)``: float32 arrays ``[c]``; ``std`` is the population standard deviation.

    Raises:
      ValueError: the images are not a non-empty ``[n, h, w, c]`` array.

    Example:
      >>> ds = make_dataset(np.stack([np.zeros((2, 2, 1)), np.ones((2, 2, 1))]), [0, 1])
      >>> channel_stats(ds)
      (array([0.5], dtype=float32), array([0.5], dtype=float32))
    """
    images = dataset.images if isinstance(dataset, Dataset) else np.asarray(dataset)
    if images.ndim != 4 or images.size == 0:
        raise ValueError(f"images must be a non-empty [n, h, w, c] array, got shape {images.shape}")
    count = images.shape[0] * images.shape[1] * images.shape[2]
    step = max(1, _STATS_CHUNK // (images[0].size))
    chunks = range(0, images.shape[0], step)
    total = sum(np.sum(images[i : i + step], axis=(0, 1, 2), dtype=np.float64) for i in chunks)
    mean = total / count
    squares = sum(np.sum(np.square(images[i : i + step] - mean), axis=(0, 1, 2)) for i in chunks)
    return mean.astype(np.float32), np.sqrt(squares / count).astype(np.float32)


# --- augmentation --------------------------------------------------------------------------


def _augment_input(images: Any, name: str) -> jax.Array:
    images = jnp.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(
            f"{name} expects one image [h, w, c] or a batch [n, h, w, c], got shape {images.shape}"
        )
    return images


def _flip_one(key: jax.Array, image: jax.Array) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1, :], image)


# One compiled program per shape when called eagerly; inlined when traced by an outer jit/vmap.
@jax.jit
def _flip(key: jax.Array, images: jax.Array) -> jax.Array:
    if images.ndim == 3:
        return _flip_one(key, images)
    return jax.vmap(_flip_one)(jax.random.split(key, images.shape[0]), images)


def _crop_one(key: jax.Array, image: jax.Array, pad: int, mode: str) -> jax.Array:
    h, w, c = image.shape
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode=mode)
    top, left = jax.random.randint(key, (2,), 0, 2 * pad + 1)
    return jax.lax.dynamic_slice(padded, (top, left, jnp.zeros_like(top)), (h, w, c))


@functools.partial(jax.jit, static_argnames=("pad", "mode"))
def _crop(key: jax.Array, images: jax.Array, pad: int, mode: str) -> jax.Array:
    if images.ndim == 3:
        return _crop_one(key, images, pad, mode)
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(lambda k, image: _crop_one(k, image, pad, mode))(keys, images)


def random_flip(key: jax.Array, images: Any) -> jax.Array:
    """Flip each image left-right with probability 1/2; every image draws its own coin.

    Pure and traceable: works under ``jax.jit`` and ``jax.vmap`` (vmap it over keys and single
    images, or pass a batch and one key). The same key always flips the same images, so
    applying it twice with one key gives back the input.

    Args:
      key: a JAX PRNG key.
      images: one image ``[h, w, c]`` or a batch ``[n, h, w, c]``.

    Returns:
      An array of the same shape and dtype.

    Raises:
      ValueError: ``images`` is not of rank 3 or 4.

    Example:
      >>> x = jnp.arange(6.0).reshape(1, 1, 6, 1) / 6
      >>> y = random_flip(jax.random.key(0), x)
      >>> bool(jnp.all(random_flip(jax.random.key(0), y) == x))
      True
    """
    return _flip(key, _augment_input(images, "random_flip"))


def random_crop(key: jax.Array, images: Any, pad: int = 4, *, mode: str = "constant") -> jax.Array:
    """Pad each image by ``pad`` pixels on every side, then crop it back at a random offset.

    The standard CIFAR augmentation (random translations of up to ``pad`` pixels). Each image
    draws its own offset; the padding is zeros (black) by default. Pure and traceable (``pad``
    and ``mode`` are static).

    Args:
      key: a JAX PRNG key.
      images: one image ``[h, w, c]`` or a batch ``[n, h, w, c]``.
      pad: the padding width, a non-negative int; 0 returns the images unchanged.
      mode: a ``jnp.pad`` mode: ``"constant"`` (zeros), ``"edge"``, ``"reflect"``...

    Returns:
      An array of the same shape and dtype.

    Raises:
      ValueError: ``images`` is not of rank 3 or 4, or ``pad`` is not a non-negative int.

    Example:
      >>> random_crop(jax.random.key(0), jnp.zeros((8, 32, 32, 3)), pad=4).shape
      (8, 32, 32, 3)
    """
    images = _augment_input(images, "random_crop")
    if isinstance(pad, bool) or not isinstance(pad, numbers.Integral) or pad < 0:
        raise ValueError(f"pad must be a non-negative int, got {pad!r}")
    if pad == 0:
        return images
    return _crop(key, images, int(pad), mode)


def augment(key: jax.Array, images: Any, flip: bool = True, crop_pad: int = 4) -> jax.Array:
    """Random crop (``crop_pad`` pixels of zero padding) then random left-right flip.

    Pure and traceable; ``flip`` and ``crop_pad`` are static. Use a new key per step, e.g.
    ``jax.random.fold_in(key, step)``.

    Args:
      key: a JAX PRNG key.
      images: one image ``[h, w, c]`` or a batch ``[n, h, w, c]``.
      flip: apply :func:`random_flip`.
      crop_pad: the padding of :func:`random_crop`; 0 or ``None`` skips the crop.

    Returns:
      An array of the same shape and dtype.

    Raises:
      ValueError: as for :func:`random_crop` and :func:`random_flip`.

    Example:
      >>> augment(jax.random.key(1), jnp.zeros((4, 28, 28, 1))).shape
      (4, 28, 28, 1)
    """
    images = _augment_input(images, "augment")
    crop_key, flip_key = jax.random.split(key)
    if crop_pad:
        images = random_crop(crop_key, images, crop_pad)
    if flip:
        images = random_flip(flip_key, images)
    return images
