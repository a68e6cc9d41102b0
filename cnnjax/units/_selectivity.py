"""Class selectivity of units: how much of a unit's top images share one class (the emergence
of class detectors, Zhou et al. 2015, in miniature)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from cnnjax._src.checks import check_float

__all__ = ["ClassSelectivityResult", "class_selectivity"]


class ClassSelectivityResult(NamedTuple):
    """Result of :func:`class_selectivity`, per layer a row per unit.

    Attributes:
      classes: ``{layer: int32 [units]}``: the most common class among the unit's top images.
      purity: ``{layer: float32 [units]}``: the share of its top images of that class.
      detectors: ``{layer: int}``: how many units have ``purity >= threshold``.
      threshold: the purity a class detector reaches.
    """

    classes: dict[str, np.ndarray]
    purity: dict[str, np.ndarray]
    detectors: dict[str, int]
    threshold: float


def class_selectivity(top: Any, labels: Any, *, threshold: float = 0.9) -> ClassSelectivityResult:
    """Per unit, the majority class of its top images and its share: a unit whose top images
    are at least ``threshold`` one class is a class detector.

    Args:
      top: a :class:`~cnnjax.units.TopImagesResult`.
      labels: int ``[n]``: the collection's labels (``collection.labels``).
      threshold: in (0, 1].

    Returns:
      A :class:`ClassSelectivityResult`.

    Example:
      >>> from cnnjax.units import TopImagesResult
      >>> idx = np.array([[0, 1, 2], [3, 4, 5]])
      >>> top = TopImagesResult(("l",), {"l": np.ones((2, 3))}, {"l": idx}, {"l": np.zeros((2, 3, 2))}, 6)
      >>> sel = class_selectivity(top, [7, 7, 7, 1, 2, 1])
      >>> sel.classes["l"], sel.purity["l"].round(2), sel.detectors["l"]
      (array([7, 1], dtype=int32), array([1.  , 0.67], dtype=float32), 1)
    """
    threshold = check_float(threshold, "threshold", lo=0.0, hi=1.0, lo_open=True)
    if labels is None:
        raise ValueError("class selectivity needs the collection's labels (a Dataset or labels=)")
    labels = np.asarray(labels).reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer) or len(labels) != top.count:
        raise ValueError(f"labels must be {top.count} integers (one per image tallied), got {labels.shape}")
    classes, purity, detectors = {}, {}, {}
    for layer in top.layers:
        tops = labels[top.indices[layer]]  # [units, k]
        counts = (tops[..., None] == np.arange(labels.max() + 1)).sum(axis=1)  # [units, classes]
        classes[layer] = counts.argmax(axis=1).astype(np.int32)
        purity[layer] = (counts.max(axis=1) / tops.shape[1]).astype(np.float32)
        detectors[layer] = int(np.sum(purity[layer] >= threshold - 1e-9))
    return ClassSelectivityResult(classes, purity, detectors, threshold)
