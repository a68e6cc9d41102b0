"""Stratified splits, shuffled batches and per-channel statistics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from cnnjax._src.checks import as_key, check_float, check_positive_int, numpy_seed
from cnnjax.data._dataset import Dataset

__all__ = ["batches", "channel_stats", "epoch_permutation", "split", "split_indices", "split_train_val"]

_SPLIT_NAMES = ("train", "val", "test")
_STATS_CHUNK = 1 << 22  # values per chunk when computing statistics (bounds float64 temporaries)


# --- splits --------------------------------------------------------------------------------


def split_indices(
    labels: Any, fractions: Sequence[float], *, key: Any = 0, names: Sequence[str] | None = None
) -> tuple[np.ndarray, ...]:
    """Stratified, deterministic split of example indices into parts of the given fractions.

    Each class is shuffled on its own and cut so that, for every class and every part, the
    number of examples differs from ``fractions[i] * class_size`` by less than one; the
    rounding is carried from class to class so the part sizes stay close to
    ``fractions[i] * n`` too. The parts are disjoint, cover every index exactly once, and are
    each shuffled (not sorted by class). The same labels and key give the same split.

    Args:
      labels: integer labels ``[n]``.
      fractions: one positive fraction per part, summing to 1.
      key: an int seed or a JAX key: seeds the NumPy generator that shuffles.
      names: part names for error messages (default ``"part 0"``, ``"part 1"``, ...).

    Returns:
      One int64 index array per part.

    Raises:
      ValueError: bad labels, fractions that are not positive or do not sum to 1, or a part
        that would be empty (named in the message).

    Example:
      >>> train, val = split_indices([0, 0, 0, 0, 1, 1, 1, 1], (0.5, 0.5), key=0)
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
    rng = np.random.default_rng(numpy_seed(key))
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
    dataset: Dataset, fractions: Sequence[float] = (0.6, 0.2, 0.2), *, key: Any = 0
) -> tuple[Dataset, Dataset, Dataset]:
    """Split a dataset into train, validation and test sets, stratified by class.

    See :func:`split_indices` for the guarantees: deterministic for a key, disjoint, covering
    every example once, and within one example of each fraction for every class.

    Args:
      dataset: the examples to split.
      fractions: the ``(train, val, test)`` fractions, positive and summing to 1.
      key: an int seed or a JAX key for the shuffling.

    Returns:
      ``(train, val, test)`` datasets with the class names of ``dataset``.

    Raises:
      ValueError: fractions that are not three positive numbers summing to 1, or an empty
        split (named in the message).

    Example:
      >>> from cnnjax.data import make_dataset
      >>> ds = make_dataset(np.zeros((10, 4, 4, 1), np.float32), [0, 1] * 5)
      >>> [len(part) for part in split(ds, (0.6, 0.2, 0.2))]
      [6, 2, 2]
    """
    if _check_fractions(fractions).size != 3:
        raise ValueError(f"fractions must be three numbers (train, val, test), got {fractions!r}")
    indices = split_indices(dataset.labels, fractions, key=key, names=_SPLIT_NAMES)
    train, val, test = (dataset.take(i) for i in indices)
    return train, val, test


def split_train_val(train: Dataset, val_fraction: float = 0.2, *, key: Any = 0) -> tuple[Dataset, Dataset]:
    """Hold out a stratified validation set from a training set (keep the official test set).

    Args:
      train: the training examples.
      val_fraction: the fraction that becomes the validation set, in (0, 1).
      key: an int seed or a JAX key for the shuffling.

    Returns:
      ``(train, val)``, as :func:`split_indices` describes.

    Raises:
      ValueError: ``val_fraction`` outside (0, 1), or an empty split.

    Example:
      >>> from cnnjax.data import make_dataset
      >>> ds = make_dataset(np.zeros((10, 4, 4, 1), np.float32), [0, 1] * 5)
      >>> [len(part) for part in split_train_val(ds, 0.2)]
      [8, 2]
    """
    val_fraction = check_float(val_fraction, "val_fraction", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    fractions = (1.0 - float(val_fraction), float(val_fraction))
    indices = split_indices(train.labels, fractions, key=key, names=_SPLIT_NAMES[:2])
    kept, val = (train.take(i) for i in indices)
    return kept, val


# --- shuffling and batches -----------------------------------------------------------------


def epoch_permutation(key: Any, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` from an explicit JAX key, for one epoch.

    Derive one key per epoch (``jax.random.fold_in(key, epoch)``) to reshuffle every epoch
    reproducibly.

    Args:
      key: an int seed or a JAX key.
      n: the number of examples.

    Returns:
      A NumPy integer array ``[n]`` holding each of ``0 .. n-1`` once.

    Raises:
      ValueError: ``n`` is not a positive int, or ``key`` is not a key.

    Example:
      >>> sorted(epoch_permutation(jax.random.key(0), 5).tolist())
      [0, 1, 2, 3, 4]
    """
    n = check_positive_int(n, "n")
    key = as_key(key)
    return np.asarray(jax.random.permutation(key, n))


def batches(
    dataset: Dataset, batch_size: int, key: Any = None, drop_remainder: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over one epoch of ``(images, labels)`` batches, shuffled by ``key``.

    The arguments are checked when ``batches`` is called, before the first batch.

    Args:
      dataset: the examples.
      batch_size: examples per batch, at most ``len(dataset)``.
      key: an int seed or a JAX key that permutes the examples (see :func:`epoch_permutation`);
        pass a new key each epoch, e.g. ``jax.random.fold_in(key, epoch)``. ``None`` keeps the
        order.
      drop_remainder: drop the last, smaller batch; otherwise it is yielded too.

    Returns:
      An iterator of NumPy ``(images [b, h, w, c] float32, labels [b] int32)`` pairs.

    Raises:
      ValueError: ``batch_size`` is not a positive int or is larger than the dataset.

    Example:
      >>> from cnnjax.data import make_dataset
      >>> ds = make_dataset(np.zeros((10, 4, 4, 1), np.float32), [0, 1] * 5)
      >>> [x.shape[0] for x, y in batches(ds, 4, jax.random.key(0), drop_remainder=False)]
      [4, 4, 2]
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a Dataset (see make_dataset), got {type(dataset).__name__}")
    batch_size = check_positive_int(batch_size, "batch_size")
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
      >>> from cnnjax.data import make_dataset
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
