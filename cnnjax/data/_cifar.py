"""CIFAR-10's "python version" batches, read by an unpickler that only rebuilds NumPy arrays and
never runs code from the file."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cnnjax.data._dataset import Dataset, make_dataset

__all__ = ["CIFAR10_CLASSES", "load_cifar10"]

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
