"""Receptive fields: theoretical (probed from the model), empirical (occlusion) and effective (gradient).

* :func:`theoretical` derives, for every spatial layer, the size, effective stride and padding
  of the receptive field and the input pixels each feature position sees, from the model
  itself: it adds a non-finite marker to one position of a layer (through the contract's
  ``perturb``) and reads which positions of the next layer become non-finite. NaN survives
  ``0 * NaN``, ReLU, ``clip`` and ReLU6, and +inf survives max-pooling (XLA's vectorised CPU
  max can drop a NaN), so the union of the two patterns is the structural dependency,
  independent of the weights' values. Layer-to-layer windows are composed into
  input pixels with the usual recurrence (``size += (k - 1) * jump``, ``jump *= s``) and the
  result is checked end to end by probing input pixels directly.
* :func:`empirical` is Zhou et al.'s occlusion estimate (ICLR 2015): copies of a unit's top
  images with an 11x11 patch of random pixels on a stride-3 grid; the change of the unit's
  activation, mapped back to the pixels, re-centred on the unit and averaged over the images.
* :func:`effective` is Luo et al.'s effective receptive field (NIPS 2016): the input gradient
  of a centre unit, in absolute value, averaged over images.
* :func:`gradient_support` is the set of input pixels with a non-zero gradient, to cross-check
  the theoretical fields.

Sizes of empirical and effective fields (:func:`field_size`) are sides of the square with the
area where the map is at least half its maximum, so the three kinds compare as lengths, as in
Zhou et al.'s Table 1 (which also reports sides of squares).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.contract import Model

__all__ = [
    "EffectiveRF",
    "EmpiricalRF",
    "ReceptiveField",
    "effective",
    "empirical",
    "field_size",
    "gradient_support",
    "theoretical",
]

@dataclasses.dataclass(frozen=True, eq=False)
class ReceptiveField:
    """The theoretical receptive field of every position of one spatial layer, per axis.

    Attributes:
      layer: the layer's name.
      size: ``(rows, cols)``: how many input pixels one position's field spans, ignoring the
        image border (what the usual recurrence gives; may exceed the image).
      stride: ``(rows, cols)``: input pixels between neighbouring positions.
      padding: ``(top, left)``: how many pixels position (0, 0)'s field starts above / left of
        the image (0: it starts at pixel 0; TensorFlow SAME padding often gives less than
        ``size // 2``).
      rows: int ``[h, 2]``: the first and last input row (inclusive, clipped to the image)
        that each feature row depends on; ``cols`` likewise ``[w, 2]``.
    """

    layer: str
    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` of the layer."""
        return len(self.rows), len(self.cols)

    @property
    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Input-pixel coordinates ``(ys [h], xs [w])`` of the centre of each position's field.

        ``centre = -padding + stride * i + (size - 1) / 2`` (unclipped, so a border position's
        centre is the centre of its whole field, which may lie in the padding).
        """
        return tuple(
            -self.padding[a] + self.stride[a] * np.arange(self.shape[a]) + (self.size[a] - 1) / 2
            for a in (0, 1)
        )

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)``, inclusive and clipped: the input pixels position
        ``(y, x)`` depends on."""
        return (int(self.rows[y, 0]), int(self.cols[x, 0]), int(self.rows[y, 1]), int(self.cols[x, 1]))


# --------------------------------------------------------------------------------------------
# Theoretical receptive fields by NaN probing

_CACHE: dict[object, dict[str, ReceptiveField]] = {}

# Markers per probe on a layer's diagonal, this many positions apart: the footprints of
# markers that far apart never touch for windows up to ~this size (checked; on failure the
# spacing doubles, up to one marker per probe).
_SPACING = 8
# Input pixels probed directly, on the diagonal, for the end-to-end check.
_DIRECT = 8


def theoretical(model: Model) -> dict[str, ReceptiveField]:
    """The theoretical receptive field of every spatial layer, derived by probing the model.

    For each pair of consecutive spatial layers ``(L, M)`` (``"input"`` first), a non-finite
    marker is added through ``perturb`` at positions on the diagonal of ``L`` and the
    non-finite positions of ``M`` are read; the marker is NaN in one pass and +inf in another
    (NaN survives ``0 * NaN``, ReLU, ``clip`` and ReLU6; +inf survives max-pooling, where
    XLA's vectorised CPU max can drop a NaN) and a position depends on the probed one if
    either reaches it. Each probe carries markers 8 positions apart along the diagonal,
    whose footprints are told apart by their order (checked). Every position of ``M`` must
    depend on an interval of rows and of columns of ``L`` that slides with one window
    ``k``, stride ``s`` and padding ``p`` (checked exactly, at every position); composing the
    steps gives, in input pixels,

        jump_M = jump_L * s,   size_M = size_L + (k - 1) * jump_L,   start_M = start_L - p * jump_L

    and the clipped first and last pixel of every position. A few input pixels are then
    probed directly: no layer may depend on them outside the composed fields (this catches a
    connection that bypasses a named layer and reaches further). A marker absorbed inside
    one step (a NaN through conv then max-pool between two named layers) breaks the sliding
    window and is an error, never a silently smaller field.

    All probes of all layers run through one compiled forward (vmapped in chunks of 8).
    Results are cached per model (per weights file for the bundled models, whose structure
    is fixed). Cost: one full forward per probe, twice (the two markers): 302 forwards for
    EfficientNet-Lite0, about 5 s on 2 CPU cores plus one compilation.

    Args:
      model: any :class:`~cnnjax.Model` whose spatial layers form a chain.

    Returns:
      ``{layer: ReceptiveField}`` for ``"input"`` and every spatial layer, in forward order
      (vectors such as ``"pooled"`` and ``"logits"`` see the whole image and are not listed).

    Raises:
      ValueError: a layer whose positions do not depend on sliding intervals of the previous
        layer, or that depends on input pixels outside its composed field.

    Example::

      rf = cnnjax.receptive_field.theoretical(model)["block_3"]
      rf.size, rf.stride, rf.padding      # ((35, 35), (8, 8), (10, 10)) for EfficientNet-Lite0
    """
    key = _cache_key(model)
    if key not in _CACHE:
        spacing = _SPACING
        while True:
            try:
                _CACHE[key] = _derive(model, spacing)
                break
            except _Crowded:
                spacing *= 2
        if isinstance(key, int):
            weakref.finalize(model, _CACHE.pop, key, None)
    return _CACHE[key]


def _cache_key(model: Model):
    """Bundled models (a weights sha256 in the spec) share one structure however often they
    are loaded; any other model is cached by identity."""
    spec = model.spec
    sha = spec.weights.get("sha256") if spec.weights else None
    if sha:
        return (spec.name, sha, spec.input_size, spec.channels, tuple((lay.name, lay.shape) for lay in spec.layers))
    return id(model)


class _Crowded(Exception):
    """Markers of one probe were too close to tell their footprints apart."""


def _spatial_layers(model: Model) -> list:
    return [layer for layer in model.spec.layers if layer.spatial and layer.name != "logits"]


def _probe_image(model: Model) -> jax.Array:
    h, w = model.spec.input_size
    return jnp.full((1, h, w, model.spec.channels), 0.5, jnp.float32)


@functools.partial(jax.jit, static_argnames=("apply", "names", "batch"))
def _probe_all(apply, params, image, grids, marker, *, names, batch):
    """For each probe ``p``: ``marker`` added at the positions ``grids[name][p]`` (bool
    ``[h, w]``) of every layer (all channels); return, per layer, which positions become
    non-finite. One forward program serves every probe of every layer (vmapped in chunks)."""

    def one(g):
        perturb = {n: jnp.where(g[n][None, :, :, None], marker, jnp.float32(0.0)) for n in names}
        acts = apply(params, image, perturb=perturb)
        return {n: jnp.any(~jnp.isfinite(acts[n][0]), axis=-1) for n in names}

    return jax.lax.map(one, grids, batch_size=batch)


def _diagonal(h: int, w: int, indices: Iterable[int]) -> np.ndarray:
    return np.asarray([(min(i, h - 1), min(i, w - 1)) for i in indices], np.int32)


def _axis_window(hit: np.ndarray, n_src: int, where: str) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """From ``hit[i, y]`` (position y of the next layer depends on index i of this one) find
    each y's interval ``[lo, hi]`` and the window ``k``, stride ``s``, padding ``p`` with
    ``[lo, hi] = clip([s*y - p, s*y - p + k - 1], 0, n_src - 1)`` for every y."""
    n_dst = hit.shape[1]
    lo, hi = np.zeros(n_dst, np.int64), np.zeros(n_dst, np.int64)
    for y in range(n_dst):
        idx = np.flatnonzero(hit[:, y])
        if idx.size == 0:
            raise ValueError(f"{where}: position {y} depends on no position of the previous layer")
        if idx[-1] - idx[0] + 1 != idx.size:
            raise ValueError(f"{where}: position {y} depends on {idx.tolist()}, which is not an interval")
        lo[y], hi[y] = idx[0], idx[-1]
    starts = np.flatnonzero(lo > 0)  # unclipped start known there: s*y - p = lo
    ends = np.flatnonzero(hi < n_src - 1)  # unclipped end known there: s*y - p + k - 1 = hi
    if not len(starts) or not len(ends):
        side = "first" if not len(starts) else "last"
        raise ValueError(f"{where}: every position reaches the {side} index; the window is not determined")
    if n_dst == 1:
        s = 1  # one position: no neighbour to step to
    elif len(starts) >= 2:
        s = (lo[starts[-1]] - lo[starts[0]]) // (starts[-1] - starts[0])
    elif len(ends) >= 2:
        s = (hi[ends[-1]] - hi[ends[0]]) // (ends[-1] - ends[0])
    else:
        raise ValueError(f"{where}: too few positions away from the border to find the stride")
    p = s * starts[0] - lo[starts[0]]
    k = hi[ends[0]] - (s * ends[0] - p) + 1
    y = np.arange(n_dst)
    a = s * y - p
    if not (np.array_equal(np.clip(a, 0, n_src - 1), lo) and np.array_equal(np.clip(a + k - 1, 0, n_src - 1), hi)):
        raise ValueError(
            f"{where}: the positions' intervals are not one sliding window "
            f"(fitted k={k}, s={s}, p={p}; intervals {np.stack([lo, hi], 1).tolist()})"
        )
    return lo, hi, int(k), int(s), int(p)


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    """The maximal runs of True in a 1-D mask, as index arrays, in order."""
    idx = np.flatnonzero(mask)
    return np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if idx.size else []


def _attribute(seen: np.ndarray, probes: list[np.ndarray], h: int, w: int, where: str):
    """Single-position dependencies from multi-marker probes.

    ``seen[p]`` is the union of the footprints (rectangles) of the markers ``probes[p]``. The
    footprints' row runs follow the markers' rows in order (likewise columns); returns
    ``rows_hit [h, h']`` and ``cols_hit [w, w']``: which positions of the next layer depend on
    each row / column.
    """
    rows_hit = np.zeros((h, seen.shape[1]), bool)
    cols_hit = np.zeros((w, seen.shape[2]), bool)
    for pattern, positions in zip(seen, probes):
        marker_rows, marker_cols = np.unique(positions[:, 0]), np.unique(positions[:, 1])
        row_runs, col_runs = _runs(pattern.any(axis=1)), _runs(pattern.any(axis=0))
        if len(row_runs) < len(marker_rows) or len(col_runs) < len(marker_cols):
            if len(positions) > 1:
                raise _Crowded
            raise ValueError(f"{where}: no position depends on position {tuple(int(v) for v in positions[0])}")
        if len(row_runs) != len(marker_rows) or len(col_runs) != len(marker_cols):
            raise ValueError(f"{where}: the positions depending on one position are not a rectangle")
        rect = np.zeros_like(pattern)
        for (i, j) in positions:
            r = row_runs[int(np.searchsorted(marker_rows, i))]
            c = col_runs[int(np.searchsorted(marker_cols, j))]
            rect[r[0] : r[-1] + 1, c[0] : c[-1] + 1] = True
        if not np.array_equal(rect, pattern):
            raise ValueError(f"{where}: the positions depending on one position are not a rectangle")
        for i, r in zip(marker_rows, row_runs):
            rows_hit[i, r] = True
        for j, c in zip(marker_cols, col_runs):
            cols_hit[j, c] = True
    return rows_hit, cols_hit


def _derive(model: Model, spacing: int) -> dict[str, ReceptiveField]:
    layers = _spatial_layers(model)
    if len(layers) < 2:
        raise ValueError(f"model {model.spec.name!r} has no spatial layers besides the input")
    H, W = model.spec.input_size
    names = tuple(layer.name for layer in layers)
    # One probe: markers at some positions of one layer ("input" for the direct probes).
    probes: list[tuple[str, np.ndarray]] = []
    for src in layers[:-1]:
        h, w = src.shape[:2]
        n = max(h, w)
        probes += [(src.name, _diagonal(h, w, range(r, n, spacing))) for r in range(min(spacing, n))]
    n = max(H, W)
    picks = sorted({round(t * (n - 1) / (_DIRECT - 1)) for t in range(_DIRECT)})
    direct = len(probes)
    probes += [("input", _diagonal(H, W, [t])) for t in picks]
    grids = {layer.name: np.zeros((len(probes), *layer.shape[:2]), bool) for layer in layers}
    for p, (name, positions) in enumerate(probes):
        grids[name][p, positions[:, 0], positions[:, 1]] = True
    grids = {k: jnp.asarray(v) for k, v in grids.items()}

    seen = None
    for marker in (jnp.nan, jnp.inf):
        out = _probe_all(model.apply, model.params, _probe_image(model), grids, jnp.float32(marker),
                         names=names, batch=8)  # fmt: skip
        out = {k: np.asarray(v) for k, v in out.items()}
        seen = out if seen is None else {k: seen[k] | out[k] for k in out}

    # Per axis: (start of position 0's field, jump, size, clipped [first, last] per position).
    state = {0: (0, 1, 1, np.stack([np.arange(H)] * 2, 1)), 1: (0, 1, 1, np.stack([np.arange(W)] * 2, 1))}
    fields = {"input": ReceptiveField("input", (1, 1), (1, 1), (0, 0), state[0][3], state[1][3])}
    for src, dst in zip(layers, layers[1:]):
        h, w = src.shape[:2]
        where = f"receptive field of {dst.name!r} from {src.name!r}"
        mine = [p for p, (name, _) in enumerate(probes[:direct]) if name == src.name]
        rows_hit, cols_hit = _attribute(seen[dst.name][mine], [probes[p][1] for p in mine], h, w, where)
        new = {}
        for axis, hit, n_src in ((0, rows_hit, h), (1, cols_hit, w)):
            lo, hi, k, s, p = _axis_window(hit, n_src, f"{where} ({'rows' if axis == 0 else 'columns'})")
            start, jump, size, clipped = state[axis]
            new[axis] = (start - p * jump, jump * s, size + (k - 1) * jump,
                         np.stack([clipped[lo, 0], clipped[hi, 1]], 1))  # fmt: skip
        state = new
        fields[dst.name] = ReceptiveField(
            dst.name,
            size=(state[0][2], state[1][2]),
            stride=(state[0][1], state[1][1]),
            padding=(-state[0][0], -state[1][0]),
            rows=state[0][3],
            cols=state[1][3],
        )
    _check_direct(fields, layers, {k: v[direct:] for k, v in seen.items()}, [q for _, q in probes[direct:]])
    return fields


def _check_direct(fields, layers, seen, direct) -> None:
    """Input pixels probed directly: no layer may depend on them outside its field.

    Only containment is checked: along a path such as conv -> max-pool a marker can be
    absorbed (the convolution turns +inf into NaN, which the max may drop), so a direct probe
    can see less than the structure; it never sees more.
    """
    for layer in layers[1:]:
        rf = fields[layer.name]
        for (pos,), observed in zip(direct, seen[layer.name]):
            i, j = int(pos[0]), int(pos[1])
            rows = (rf.rows[:, 0] <= i) & (i <= rf.rows[:, 1])
            cols = (rf.cols[:, 0] <= j) & (j <= rf.cols[:, 1])
            outside = observed & ~np.outer(rows, cols)
            if outside.any():
                y, x = np.argwhere(outside)[0]
                raise ValueError(
                    f"receptive field of {layer.name!r}: position {(int(y), int(x))} depends on input "
                    f"pixel {(i, j)}, outside the field composed from the layer-to-layer windows "
                    "(a connection that bypasses a named layer?)"
                )


# --------------------------------------------------------------------------------------------
# Gradient support (the cross-check)


@functools.partial(jax.jit, static_argnames=("apply", "layer"))
def _unit_input_grads(apply, params, images, positions, *, layer):
    def unit(x, pos):
        a = apply(params, x[None])[layer][0]
        return jnp.sum(jax.lax.dynamic_slice(a, (pos[0], pos[1], 0), (1, 1, a.shape[-1])))

    grads = jax.vmap(lambda pos: jax.vmap(lambda x: jax.grad(unit)(x, pos))(images))(positions)
    return jnp.sum(jnp.abs(grads), axis=(1, 4))  # [P, H, W]


def gradient_support(model: Model, layer: str, positions: Sequence[tuple[int, int]], images=None) -> np.ndarray:
    """Input pixels with a non-zero gradient of the sum of a layer's channels at given positions.

    ``support[p, i, j] = sum over images and colours of |d sum_c a[y_p, x_p, c] / d x[i, j]| > 0``.
    The support lies inside the theoretical field; for random images it usually fills it,
    which is how :func:`theoretical` is cross-checked.

    Args:
      model: a :class:`~cnnjax.Model`.
      layer: a spatial layer.
      positions: ``(y, x)`` positions in the layer.
      images: images to differentiate at (default: two uniform random images, key 0).

    Returns:
      bool ``[len(positions), H, W]``.
    """
    spec = model.spec
    info = _check_spatial(spec, layer)
    pos = _check_positions(positions, info.shape[:2], layer)
    if images is None:
        images = jax.random.uniform(jax.random.key(0), (2, *spec.input_size, spec.channels))
    images = spec.check_images(images, exact_size=True)
    mag = _unit_input_grads(model.apply, model.params, images, jnp.asarray(pos), layer=layer)
    return np.asarray(mag) > 0


def _check_spatial(spec, layer: str):
    info = spec.layer(layer)
    if not info.spatial or layer == "logits":
        valid = [lay.name for lay in spec.layers if lay.spatial]
        raise ValueError(
            f"layer {layer!r} of {spec.name!r} has no spatial extent (shape {info.shape}); "
            f"spatial layers: {', '.join(valid)}"
        )
    return info


def _check_positions(positions, hw: tuple[int, int], layer: str) -> np.ndarray:
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
# Sizes of measured fields


def field_size(field_map, fraction: float = 0.5) -> float:
    """The side of the square with the area where ``field_map >= fraction * max``, in pixels.

    ``sqrt(#{p : m(p) >= fraction * max m})``; 0 for an all-zero map.
    """
    m = np.asarray(field_map, np.float64)
    top = float(m.max()) if m.size else 0.0
    if not top > 0:
        return 0.0
    return math.sqrt(float(np.count_nonzero(m >= fraction * top)))


# --------------------------------------------------------------------------------------------
# Empirical receptive field by occlusion (Zhou et al. 2015)


class EmpiricalRF(NamedTuple):
    """Result of :func:`empirical`.

    Attributes:
      map: float ``[2H - 1, 2W - 1]``: the mean discrepancy, re-centred so that the centre of
        the unit's theoretical field in each image sits at ``(H - 1, W - 1)``.
      coverage: int ``[2H - 1, 2W - 1]``: how many images contribute to each canvas pixel.
      size: :func:`field_size` of ``map``.
      discrepancy: float ``[K, H, W]``: each image's discrepancy map before re-centring.
      images: int ``[K]``: indices of the unit's top-K images among those given.
      peaks: int ``[K, 2]``: the position ``(y, x)`` of the unit's maximum in each image.
      activations: float ``[K]``: the unit's maximum in each image.
      copies: how many occluded copies were run in all.
    """

    map: np.ndarray
    coverage: np.ndarray
    size: float
    discrepancy: np.ndarray
    images: np.ndarray
    peaks: np.ndarray
    activations: np.ndarray
    copies: int


@functools.partial(jax.jit, static_argnames=("apply", "layer"))
def _unit_peaks(apply, params, images, unit, *, layer):
    a = apply(params, images)[layer][..., unit]  # [n, h, w]
    flat = a.reshape(a.shape[0], -1)
    idx = jnp.argmax(flat, axis=1)
    return jnp.max(flat, axis=1), jnp.stack([idx // a.shape[2], idx % a.shape[2]], axis=1)


@functools.partial(jax.jit, static_argnames=("apply", "layer", "patch", "batch"))
def _occlude(apply, params, image, unit, peak, tops, lefts, keys, *, layer, patch, batch):
    """The unit's activation at ``peak`` for copies of ``image [1, H, W, C]`` with a patch of
    uniform random pixels at each ``(tops[j], lefts[j])``, and for the image itself."""
    c = image.shape[-1]

    def unit_at(x):
        a = apply(params, x)[layer][0]
        return jax.lax.dynamic_slice(a, (peak[0], peak[1], unit), (1, 1, 1))[0, 0, 0]

    def one(args):
        top, left, key = args
        noise = jax.random.uniform(key, (patch, patch, c), jnp.float32)
        return unit_at(jax.lax.dynamic_update_slice(image[0], noise, (top, left, 0))[None])

    return unit_at(image), jax.lax.map(one, (tops, lefts, keys), batch_size=batch)


def _grid(n: int, patch: int, stride: int) -> np.ndarray:
    return np.arange(0, n - patch + 1, stride)


def empirical(
    model: Model,
    layer: str,
    unit: int,
    images,
    *,
    top_k: int = 5,
    patch: int = 11,
    stride: int = 3,
    key: int | jax.Array = 0,
    restrict: bool = True,
    batch_size: int = 64,
    progress: bool = False,
) -> EmpiricalRF:
    """The empirical receptive field of a unit by occlusion (Zhou et al., ICLR 2015, Sec. 3.1).

    For each of the unit's top-K images (ranked by the unit's maximum over positions), copies
    are made with a ``patch x patch`` square of uniform random pixels at every point of a grid
    with step ``stride``; the discrepancy of copy ``j`` is ``d_j = |a_j - a|``, the change of
    the unit's activation at the position ``(y*, x*)`` of its maximum in the original. Mapped
    back to the pixels,

        D(p) = sum_j d_j [p in patch_j] / #{j : p in patch_j}

    Each image's ``D`` is shifted so the centre of the theoretical field of ``(y*, x*)`` lands
    at the canvas centre, and the maps are averaged over the images covering each canvas pixel.

    All occluded copies of an image run in one compiled call (vmapped in chunks of
    ``batch_size`` by ``lax.map``). With ``restrict`` (default) only patches overlapping the
    unit's theoretical field are run: the others cannot change the unit, so their discrepancy
    is exactly zero and the result is the same (every patch's noise comes from its grid
    position, so both ways draw the same pixels).

    Cost: about ``(H / stride)^2`` copies per image for units whose field covers the image
    (5184 at 224x224, patch 11, stride 3, the published setting), each a forward pass up to
    ``layer``.

    Args:
      model: a :class:`~cnnjax.Model`.
      layer: a spatial layer; unit: a channel of it.
      images: candidate images ``[N, H, W, C]`` at the model's input size, in [0, 1].
      top_k: how many of the unit's top images to average (at most N).
      patch: occluder side in pixels (11 in the paper); stride: grid step (3 in the paper).
      key: seeds the random patches (an int or a JAX key).
      restrict: run only the patches that overlap the unit's theoretical field.
      batch_size: occluded copies per vmapped chunk.
      progress: show a progress bar over the images.

    Returns:
      An :class:`EmpiricalRF`.

    Raises:
      ValueError: an unknown or non-spatial layer, a unit out of range, a patch larger than
        the images, ``top_k`` larger than the number of images, a bad stride.

    Example::

      rf = cnnjax.receptive_field.empirical(model, "block_5", 7, photos, top_k=2)
      rf.size   # in pixels; compare theoretical(model)["block_5"].size
    """
    from tqdm.auto import tqdm

    spec = model.spec
    info = _check_spatial(spec, layer)
    channels = info.shape[-1]
    if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < channels:
        raise ValueError(f"unit {unit!r} is out of range for layer {layer!r}: valid 0..{channels - 1}")
    images = spec.check_images(images, exact_size=True)
    n, H, W, _ = images.shape
    for name, value in (("patch", patch), ("stride", stride), ("top_k", top_k), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if patch > min(H, W):
        raise ValueError(f"occlusion patch {patch}x{patch} is larger than the images ({H}x{W})")
    if top_k > n:
        raise ValueError(f"top_k={top_k} but only {n} images were given")
    key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key

    rf = theoretical(model)[layer]
    peaks_val, peaks_pos = [], []
    for start in range(0, n, 16):
        v, p = _unit_peaks(model.apply, model.params, images[start : start + 16], unit, layer=layer)
        peaks_val.append(np.asarray(v))
        peaks_pos.append(np.asarray(p))
    values, positions = np.concatenate(peaks_val), np.concatenate(peaks_pos)
    order = np.argsort(-values, kind="stable")[:top_k]

    tops_all, lefts_all = _grid(H, patch, stride), _grid(W, patch, stride)
    # How many grid patches cover each pixel (the denominator of D), over the full grid.
    row_cover = ((tops_all[:, None] <= np.arange(H)[None]) & (np.arange(H)[None] < tops_all[:, None] + patch))
    col_cover = ((lefts_all[:, None] <= np.arange(W)[None]) & (np.arange(W)[None] < lefts_all[:, None] + patch))
    count = np.outer(row_cover.sum(0), col_cover.sum(0))
    # A fixed number of patches per image (padded), so every image reuses one compiled program.
    if restrict:
        span_r = int(np.max(rf.rows[:, 1] - rf.rows[:, 0])) + patch
        span_c = int(np.max(rf.cols[:, 1] - rf.cols[:, 0])) + patch
        n_r = min(len(tops_all), span_r // stride + 1)
        n_c = min(len(lefts_all), span_c // stride + 1)
    else:
        n_r, n_c = len(tops_all), len(lefts_all)

    canvas = np.zeros((2 * H - 1, 2 * W - 1))
    coverage = np.zeros(canvas.shape, np.int64)
    maps, copies = [], 0
    cy_all, cx_all = rf.centres
    for rank, i in enumerate(tqdm(order, desc=f"occlusion {layer}:{unit}", unit="image", disable=not progress)):
        y, x = positions[i]
        r_idx = _overlapping(tops_all, patch, rf.rows[y]) if restrict else np.arange(len(tops_all))
        c_idx = _overlapping(lefts_all, patch, rf.cols[x]) if restrict else np.arange(len(lefts_all))
        rr, cc = np.meshgrid(_pad_to(r_idx, n_r), _pad_to(c_idx, n_c), indexing="ij")
        valid = np.outer(np.arange(n_r) < len(r_idx), np.arange(n_c) < len(c_idx)).ravel()
        rr, cc = rr.ravel(), cc.ravel()
        image_key = jax.random.fold_in(key, rank)
        keys = jax.vmap(lambda g: jax.random.fold_in(image_key, g))(jnp.asarray(rr * len(lefts_all) + cc))
        base, acts = _occlude(model.apply, model.params, images[i : i + 1], unit, jnp.asarray([y, x]),
                              jnp.asarray(tops_all[rr]), jnp.asarray(lefts_all[cc]), keys,
                              layer=layer, patch=patch, batch=min(batch_size, len(rr)))  # fmt: skip
        d = np.abs(np.asarray(acts, np.float64) - float(base)) * valid
        copies += int(valid.sum())
        total = np.einsum("j,jh,jw->hw", d, row_cover[rr], col_cover[cc])
        dmap = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        maps.append(dmap)
        oy = H - 1 - int(np.floor(np.clip(cy_all[y], 0, H - 1)))
        ox = W - 1 - int(np.floor(np.clip(cx_all[x], 0, W - 1)))
        canvas[oy : oy + H, ox : ox + W] += dmap
        coverage[oy : oy + H, ox : ox + W] += 1
    mean = np.where(coverage > 0, canvas / np.maximum(coverage, 1), 0.0)
    return EmpiricalRF(
        map=mean.astype(np.float32),
        coverage=coverage,
        size=field_size(mean),
        discrepancy=np.stack(maps).astype(np.float32),
        images=order.astype(np.int64),
        peaks=positions[order].astype(np.int64),
        activations=values[order],
        copies=copies,
    )


def _overlapping(starts: np.ndarray, patch: int, interval: np.ndarray) -> np.ndarray:
    """Indices of the patches ``[t, t + patch - 1]`` that overlap ``interval`` (inclusive)."""
    return np.flatnonzero((starts <= interval[1]) & (starts + patch - 1 >= interval[0]))


def _pad_to(idx: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([idx, np.full(n - len(idx), idx[-1] if len(idx) else 0, idx.dtype)])[:n]


# --------------------------------------------------------------------------------------------
# Effective receptive field (Luo et al. 2016)


class EffectiveRF(NamedTuple):
    """Result of :func:`effective`.

    Attributes:
      map: float ``[H, W]``: ``mean over images of sum over colours |d a / d x|``.
      size: :func:`field_size` of ``map``.
      position: the ``(y, x)`` position of the unit in its layer.
    """

    map: np.ndarray
    size: float
    position: tuple[int, int]


@functools.partial(jax.jit, static_argnames=("apply", "layer", "all_channels"))
def _centre_grad(apply, params, images, position, unit, *, layer, all_channels):
    def total(x):
        a = apply(params, x)[layer]
        v = jax.lax.dynamic_slice(a, (0, position[0], position[1], 0), (a.shape[0], 1, 1, a.shape[-1]))
        return jnp.sum(v) if all_channels else jnp.sum(v[..., unit])

    g = jax.grad(total)(images)  # images are independent: one backward for the batch
    return jnp.mean(jnp.sum(jnp.abs(g), axis=-1), axis=0)


def effective(
    model: Model,
    layer: str,
    images,
    *,
    unit: int | None = None,
    position: tuple[int, int] | None = None,
) -> EffectiveRF:
    """The effective receptive field (Luo et al., NIPS 2016): a unit's input gradient.

    ``ERF(p) = mean_images sum_colours |d a_{y, x}(image) / d image(p)|`` with ``a_{y, x}`` the
    sum over channels (or one channel ``unit``) of the layer at ``position`` (default: the
    centre position ``(h // 2, w // 2)``), i.e. a gradient signal of one at the centre of the
    output plane. All images share one backward pass.

    Args:
      model: a :class:`~cnnjax.Model`.
      layer: a spatial layer.
      images: ``[N, H, W, C]`` at the model's input size, in [0, 1].
      unit: one channel (default: all channels summed).
      position: ``(y, x)`` in the layer (default: its centre).

    Returns:
      An :class:`EffectiveRF`.

    Example::

      erf = cnnjax.receptive_field.effective(model, "block_10", photos)
      erf.size, cnnjax.receptive_field.theoretical(model)["block_10"].size
    """
    spec = model.spec
    info = _check_spatial(spec, layer)
    h, w, channels = info.shape
    images = spec.check_images(images, exact_size=True)
    pos = (h // 2, w // 2) if position is None else tuple(int(v) for v in _check_positions(position, (h, w), layer)[0])
    if unit is not None and (isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < channels):
        raise ValueError(f"unit {unit!r} is out of range for layer {layer!r}: valid 0..{channels - 1}")
    m = _centre_grad(model.apply, model.params, images, jnp.asarray(pos), jnp.int32(unit or 0),
                     layer=layer, all_channels=unit is None)  # fmt: skip
    m = np.asarray(m)
    return EffectiveRF(map=m, size=field_size(m), position=pos)
