"""Shared targeting: which classes, layers and units a technique reads, checked before any work,
and the few things several techniques derive from a model the same way.

* classes: :func:`class_indices` resolves indices and names of any shape; :func:`class_table`
  gives every image the same (or its own) list of classes (the maps of the CAM family);
  :func:`classes_per_image` gives one class per image (attack labels and targets).
* layers: :func:`spatial_layers`, :func:`last_spatial_layer`, :func:`check_spatial_layer`.
* units: :func:`check_units` (channel indices of a layer).
* :func:`baseline_image`: the image a model maps to zero input (deleted or masked pixels).
* upsampling: :func:`upsample_maps`, linear interpolation between given centres.
* :class:`ModelCache`: results that depend only on a model, computed once per model.
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.contract import Model, ModelSpec

__all__ = [
    "ModelCache",
    "apply_interp",
    "baseline_image",
    "check_positions",
    "check_spatial_layer",
    "check_units",
    "class_indices",
    "class_table",
    "classes_per_image",
    "interp_matrix",
    "last_spatial_layer",
    "spatial_layers",
    "upsample_maps",
]


# --------------------------------------------------------------------------------------------
# Classes


def class_indices(spec: ModelSpec, classes: Any, what: str = "classes") -> np.ndarray:
    """Class indices or names (a scalar or an array of any shape) as int32 of the same shape.

    Every name is resolved by :meth:`ModelSpec.class_index` (ambiguity and typos are reported
    there); every index is checked against the number of classes.
    """
    if isinstance(classes, (str, numbers.Integral)) and not isinstance(classes, bool):
        return np.asarray(spec.class_index(classes), np.int32)
    arr = np.asarray(classes, dtype=object if _has_str(classes) else None)
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    if arr.dtype == object or arr.dtype.kind in "US":
        flat = [spec.class_index(v if isinstance(v, str) else _as_index(v, what)) for v in arr.ravel()]
        return np.asarray(flat, np.int32).reshape(arr.shape)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must be class indices (ints) or names (str), got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= spec.num_classes)
    if bad.any():
        spec.class_index(int(arr[bad].flat[0]))  # raises with the valid range
    return arr.astype(np.int32)


def _has_str(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and any(isinstance(v, str) or _has_str(v) for v in values)


def _as_index(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be class indices (ints) or names (str), got {value!r}")
    return int(value)


def class_table(spec: ModelSpec, classes: Any, n: int) -> np.ndarray:
    """The classes explained for each of ``n`` images, int32 ``[n, k]``.

    ``None``: every class; one index or name: that class for every image; a 1-D sequence:
    those classes for every image; a 2-D ``[n, k]`` array: each image its own (``classify``'s
    indices fit).
    """
    if classes is None:
        return np.broadcast_to(np.arange(spec.num_classes, dtype=np.int32)[None], (n, spec.num_classes))
    idx = class_indices(spec, classes)
    if idx.ndim == 0:
        return np.full((n, 1), idx, np.int32)
    if idx.ndim == 1:
        return np.broadcast_to(idx[None], (n, len(idx)))
    if idx.ndim == 2 and idx.shape[0] == n:
        return idx
    raise ValueError(
        "classes must be None (all), a class index or name, a 1-D list of them, or an array "
        f"[images, k] with one row per image ({n} images); got shape {idx.shape}"
    )


def classes_per_image(spec: ModelSpec, classes: Any, n: int, what: str = "classes") -> np.ndarray:
    """One class per image, int32 ``[n]``: a single index or name applies to every image."""
    idx = class_indices(spec, classes, what)
    if idx.ndim == 0:
        return np.full((n,), idx, np.int32)
    if idx.shape != (n,):
        raise ValueError(f"{what} must hold one class per image: got shape {idx.shape} for {n} images")
    return idx


# --------------------------------------------------------------------------------------------
# Layers and units


def spatial_layers(spec: ModelSpec, *, include_input: bool = True) -> list[str]:
    """Names of the layers with spatial extent (``[h, w, c]``), in forward order."""
    skip = {"logits"} if include_input else {"input", "logits"}
    return [layer.name for layer in spec.layers if layer.spatial and layer.name not in skip]


def last_spatial_layer(spec: ModelSpec) -> str:
    """The last layer with spatial extent before the logits (what CAM methods read by default)."""
    spatial = spatial_layers(spec, include_input=False)
    if not spatial:
        raise ValueError(f"model {spec.name!r} has no spatial layer besides the input")
    return spatial[-1]


def check_spatial_layer(spec: ModelSpec, layer: str | None) -> str:
    """``layer`` (default: :func:`last_spatial_layer`) checked to be a spatial layer."""
    if layer is None:
        return last_spatial_layer(spec)
    info = spec.layer(layer)
    if not info.spatial or layer == "logits":
        raise ValueError(
            f"layer {layer!r} of {spec.name!r} has no spatial extent (shape {info.shape}); "
            f"spatial layers: {', '.join(spatial_layers(spec))}"
        )
    return layer


def check_units(spec: ModelSpec, layer: str, units: Any) -> np.ndarray:
    """Channel indices of ``layer`` (one int or a 1-D sequence) as int32 ``[u]``, each checked."""
    channels = spec.layer(layer).channels
    arr = np.atleast_1d(np.asarray(units, dtype=object if isinstance(units, (list, tuple)) else None))
    values = arr.ravel().tolist()
    if arr.ndim != 1 or not values or any(isinstance(u, bool) or not isinstance(u, numbers.Integral)
                                          for u in values):  # fmt: skip
        raise ValueError(f"units must be channel indices of layer {layer!r} (ints), got {units!r:.80}")
    for u in values:
        if not 0 <= u < channels:
            raise ValueError(f"unit {u} is out of range for layer {layer!r}: valid 0..{channels - 1}")
    return np.asarray(values, np.int32)


def check_positions(positions: Any, hw: tuple[int, int], layer: str) -> np.ndarray:
    """``(y, x)`` positions in a layer of ``hw`` (one pair or ``[p, 2]``) as int32 ``[p, 2]``."""
    pos = np.asarray(positions)
    if pos.ndim == 1:
        pos = pos[None]
    if pos.ndim != 2 or pos.shape[1] != 2 or not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(f"positions must be (y, x) integer pairs, got {np.asarray(positions).tolist()!r}")
    bad = (pos < 0) | (pos >= np.asarray(hw)[None])
    if bad.any():
        raise ValueError(
            f"position {tuple(pos[np.flatnonzero(bad.any(1))[0]])} is outside layer {layer!r} "
            f"({hw[0]}x{hw[1]}): valid y 0..{hw[0] - 1}, x 0..{hw[1] - 1}"
        )
    return pos.astype(np.int32)


# --------------------------------------------------------------------------------------------
# Images and maps


def baseline_image(spec: ModelSpec) -> np.ndarray:
    """The [0, 1] image ``[1, 1, 1, c]`` the model maps to zero input (its mean colour): what
    masked and deleted pixels become."""
    mapping = spec.value_mapping
    mean = np.broadcast_to(np.asarray(mapping.mean, np.float32), (spec.channels,))  # model channel order
    return np.clip(mean[::-1] if mapping.bgr else mean, 0.0, 1.0).reshape(1, 1, 1, -1)


def interp_matrix(centres: Sequence[float], n_out: int) -> np.ndarray:
    """``R [n_out, n_in]``: linear interpolation at pixels 0..n_out-1 between values placed at
    ``centres`` (increasing), constant beyond the first and last centre."""
    centres = np.asarray(centres, np.float64)
    n_in = len(centres)
    R = np.zeros((n_out, n_in), np.float32)
    if n_in == 1:
        R[:, 0] = 1.0
        return R
    q = np.arange(n_out, dtype=np.float64)
    i = np.clip(np.searchsorted(centres, q, side="right") - 1, 0, n_in - 2)
    t = np.clip((q - centres[i]) / (centres[i + 1] - centres[i]), 0.0, 1.0)
    R[np.arange(n_out), i] = 1.0 - t
    R[np.arange(n_out), i + 1] += t
    return R


def apply_interp(maps: jax.Array, ry: jax.Array, rx: jax.Array) -> jax.Array:
    """``ry @ maps @ rx.T`` over the last two axes: maps ``[..., h, w]`` to ``[..., H, W]``."""
    return jnp.einsum("Yy,...yx,Xx->...YX", ry, maps, rx)


def upsample_maps(
    maps, size: tuple[int, int], centres: tuple[Sequence[float], Sequence[float]] | None = None
) -> jax.Array:
    """Upsample maps ``[..., h, w]`` to ``[..., H, W]`` by linear interpolation.

    ``out[Y, X] = sum_{y, x} R_y[Y, y] m[y, x] R_x[X, x]`` where ``R`` interpolates linearly
    between values placed at ``centres`` (input-pixel coordinates of each row / column) and
    is constant beyond the outermost centres. The default centres ``(i + 0.5) H / h - 0.5``
    are ordinary bilinear resizing (``jax.image.resize(..., "linear")``); pass
    ``cnnjax.receptive_field.theoretical(model)[layer].centres`` to put each activation at the
    centre of its receptive field (with TensorFlow SAME padding those differ: 15 pixels at
    EfficientNet-Lite0's 7x7 head). Differentiable; two matrix products.

    Args:
      maps: ``[..., h, w]`` array.
      size: ``(H, W)``.
      centres: ``(ys [h], xs [w])``, strictly increasing, or None.

    Returns:
      float32 ``[..., H, W]``.

    Example:
      >>> upsample_maps(np.ones((1, 2, 2)), (4, 4)).shape
      (1, 4, 4)
    """
    maps = jnp.asarray(maps, jnp.float32)
    h, w = maps.shape[-2:]
    H, W = size
    if centres is None:
        centres = ((np.arange(h) + 0.5) * H / h - 0.5, (np.arange(w) + 0.5) * W / w - 0.5)
    ys, xs = (np.asarray(c, np.float64) for c in centres)
    if ys.shape != (h,) or xs.shape != (w,) or np.any(np.diff(ys) <= 0) or np.any(np.diff(xs) <= 0):
        raise ValueError(
            f"centres must be increasing arrays of length {h} and {w}, got {ys.shape} and {xs.shape}"
        )
    return apply_interp(maps, jnp.asarray(interp_matrix(ys, H)), jnp.asarray(interp_matrix(xs, W)))


# --------------------------------------------------------------------------------------------
# Per-model caches


def model_key(model: Model) -> Any:
    """What identifies a model's results: bundled models (a weights sha256 in the spec) are the
    same model however often they are loaded; any other model is itself (by identity)."""
    spec = model.spec
    sha = spec.weights.get("sha256") if spec.weights else None
    if sha:
        layers = tuple((lay.name, lay.shape) for lay in spec.layers)
        return (spec.name, sha, spec.input_size, spec.channels, layers)
    return id(model)


class ModelCache:
    """Results that depend only on a model (and a few static settings), computed once.

    An entry of a model keyed by identity is dropped when the model is garbage-collected, so a
    new model that reuses its ``id`` never sees it.
    """

    def __init__(self):
        self._store: dict[Any, Any] = {}

    def get(self, model: Model, extra: Any, compute: Callable[[], Any]) -> Any:
        key = (model_key(model), extra)
        if key not in self._store:
            self._store[key] = compute()
            if isinstance(key[0], int):
                weakref.finalize(model, self._store.pop, key, None)
        return self._store[key]
