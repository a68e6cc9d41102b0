"""Receptive fields: theoretical (probed from the model), empirical (occlusion) and effective (gradient).

* :func:`theoretical` derives, for every spatial layer, the size, effective stride and padding
  of the receptive field and the input pixels each feature position sees, from the model
  itself: it adds non-finite markers to rows or columns of a layer (through the contract's
  ``perturb``) and reads which positions of the next layer become non-finite. NaN survives
  ``0 * NaN``, ReLU, ``clip`` and ReLU6, and +inf survives max-pooling (XLA's vectorised CPU
  max can drop a NaN), so with both (in alternate channels) the pattern is the structural
  dependency, independent of the weights' values. Layer-to-layer windows are composed into
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

from cnnjax._src.chunks import chunked_map
from cnnjax._src.contract import Model
from cnnjax.techniques.cam import check_spatial_layer

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
# Theoretical receptive fields by probing with non-finite markers

_CACHE: dict[object, dict[str, ReceptiveField]] = {}

# Lines marked per probe, this many apart: footprints that far apart do not touch for the
# usual windows (checked; on any ambiguity every probe marks one line).
_SPACING = 8
# Input pixels probed directly, on the diagonal, for the end-to-end check.
_DIRECT = 8


def theoretical(model: Model) -> dict[str, ReceptiveField]:
    """The theoretical receptive field of every spatial layer, derived by probing the model.

    For each pair of consecutive spatial layers ``(L, M)`` (``"input"`` first), non-finite
    markers are added through ``perturb`` on whole rows and whole columns of ``L`` and the
    non-finite positions of ``M`` are read. The marker is NaN in even channels
    and +inf in odd ones: NaN survives ``0 * NaN``, ReLU, ``clip`` and ReLU6, +inf survives
    max-pooling (where XLA's vectorised CPU max can drop a NaN), channel-wise operations
    (pooling, depthwise convolutions) keep the two apart and mixing channels makes NaN, so a
    position depends on a line if either reaches it (a one-channel layer gets NaN only).
    Each probe marks every 8th row and every 8th column; the footprints are a band of rows
    and a band of columns, each told apart by their order (on any ambiguity, such as a
    dilated window's gaps, the probes are redone with one line each, rows and columns apart).
    Every position of ``M`` must depend on an interval of rows
    and of columns of ``L`` (or, dilated, a set within one) that slides with one window
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
    is fixed). Cost: one forward per probe, 151 for EfficientNet-Lite0 (about 1.5 s on 2 CPU
    cores) plus one compilation.

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
        try:
            fields = _derive(model, _SPACING, combined=True)
        except _Crowded:  # one line per probe: exact, and every footprint stands alone
            widest = max(max(lay.shape[:2]) for lay in _spatial_layers(model))
            fields = _derive(model, widest, combined=False)
        _CACHE[key] = fields
        if isinstance(key, int):
            weakref.finalize(model, _CACHE.pop, key, None)
    return _CACHE[key]


def _cache_key(model: Model):
    """Bundled models (a weights sha256 in the spec) share one structure however often they
    are loaded; any other model is cached by identity."""
    spec = model.spec
    sha = spec.weights.get("sha256") if spec.weights else None
    if sha:
        return (
            spec.name,
            sha,
            spec.input_size,
            spec.channels,
            tuple((lay.name, lay.shape) for lay in spec.layers),
        )
    return id(model)


class _Crowded(Exception):
    """Markers of one probe were too close to tell their footprints apart."""


def _spatial_layers(model: Model) -> list:
    return [layer for layer in model.spec.layers if layer.spatial and layer.name != "logits"]


def _probe_image(model: Model) -> jax.Array:
    h, w = model.spec.input_size
    return jnp.full((1, h, w, model.spec.channels), 0.5, jnp.float32)


@functools.partial(jax.jit, static_argnames=("apply", "names", "channels", "batch"))
def _probe_all(apply, params, image, grids, *, names, channels, batch):
    """For each probe ``p``: markers at the positions ``grids[name][p]`` (bool ``[h, w]``) of
    every layer, NaN in even channels and +inf in odd ones; return, per layer, which positions
    become non-finite. One forward program serves every probe of every layer (vmapped in
    chunks)."""
    markers = {
        n: jnp.where(jnp.arange(c) % 2 == 0, jnp.float32(jnp.nan), jnp.float32(jnp.inf)).reshape(1, 1, 1, c)
        for n, c in zip(names, channels)
    }

    def one(g):
        perturb = {n: jnp.where(g[n][None, :, :, None], markers[n], jnp.float32(0.0)) for n in names}
        acts = apply(params, image, perturb=perturb)
        return {n: jnp.any(~jnp.isfinite(acts[n][0]), axis=-1) for n in names}

    return chunked_map(one, grids, batch)


def _diagonal(h: int, w: int, indices: Iterable[int]) -> np.ndarray:
    return np.asarray([(min(i, h - 1), min(i, w - 1)) for i in indices], np.int32)


def _axis_window(hit: np.ndarray, n_src: int, where: str) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """From ``hit[i, y]`` (position y of the next layer depends on index i of this one) find the
    sliding window: a stride ``s`` and offsets ``T`` with ``deps(y) = (s*y + T) & [0, n_src)``
    for every y (``T`` has gaps for a dilated window). Returns the bounds ``lo, hi`` of each
    ``deps(y)``, the window's span ``k = max T - min T + 1``, ``s`` and ``p = -min T``."""
    n_dst = hit.shape[1]
    deps = [np.flatnonzero(hit[:, y]) for y in range(n_dst)]
    for y, d in enumerate(deps):
        if d.size == 0:
            raise ValueError(f"{where}: position {y} depends on no position of the previous layer")
    # Positions whose dependencies are not cut by the border have the most of them.
    full = np.flatnonzero([d.size == max(e.size for e in deps) for d in deps])
    if n_dst == 1:
        s = 1  # one position: no neighbour to step to
    elif len(full) >= 2:
        s = (deps[full[-1]][0] - deps[full[0]][0]) // (full[-1] - full[0])
    else:  # a small layer: any two positions whose dependencies are translates give the stride
        pairs = [(y1, y2) for y1 in range(n_dst) for y2 in range(y1 + 1, n_dst)
                 if np.array_equal(np.diff(deps[y1]), np.diff(deps[y2]))]  # fmt: skip
        if not pairs:
            raise ValueError(f"{where}: too few positions away from the border to find the stride")
        y1, y2 = pairs[0]
        s = (deps[y2][0] - deps[y1][0]) // (y2 - y1)
    if s < 1:
        raise ValueError(
            f"{where}: the positions' dependencies do not move forward (stride {s}): not one sliding window"
        )
    offsets = deps[full[0]] - s * full[0]
    lo, hi = np.array([d[0] for d in deps]), np.array([d[-1] for d in deps])
    for y, d in enumerate(deps):
        want = offsets + s * y
        if not np.array_equal(d, want[(want >= 0) & (want < n_src)]):
            raise ValueError(
                f"{where}: the positions' dependencies are not one sliding window (position {y} "
                f"depends on {d.tolist()}; stride {s} and offsets {offsets.tolist()} predict "
                f"{want[(want >= 0) & (want < n_src)].tolist()})"
            )
    return lo, hi, int(offsets[-1] - offsets[0] + 1), int(s), int(-offsets[0])


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    """The maximal runs of True in a 1-D mask, as index arrays, in order."""
    idx = np.flatnonzero(mask)
    return np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if idx.size else []


def _footprints(pattern: np.ndarray, rows: np.ndarray, cols: np.ndarray, where: str):
    """The footprints (along the next layer's rows and columns) of a probe's marked rows and
    columns: ``pattern`` must be a band of rows across the used columns united with a band of
    columns across the used rows. ``None`` for an axis the probe marks nothing on."""
    rows_any, cols_any = pattern.any(axis=1), pattern.any(axis=0)
    if len(rows) and len(cols):
        full_r = rows_any & pattern[:, cols_any].all(axis=1)
        full_c = cols_any & pattern[rows_any].all(axis=0)
        if np.array_equal(full_r, rows_any) or np.array_equal(full_c, cols_any):
            raise _Crowded  # one band spans the other's whole extent: probe the axes apart
        bands = np.outer(full_r, cols_any) | np.outer(rows_any, full_c)
        if not np.array_equal(bands, pattern):
            raise _Crowded
        return full_r, full_c
    if not np.array_equal(np.outer(rows_any, cols_any), pattern):
        raise ValueError(f"{where}: the positions depending on a line are not a band")
    return (rows_any if len(rows) else None), (cols_any if len(cols) else None)


def _attribute(footprints: list[np.ndarray], lines: list[np.ndarray], n_src: int, n_dst: int) -> np.ndarray:
    """``hit[i, y]``: position ``y`` of the next layer (along one axis) depends on line ``i``.

    ``footprints[p]`` is the union of the footprints of the lines ``lines[p]``, which follow
    their lines in order. Lines with no footprint (a border that a VALID window never
    reaches) are taken to be the last ones; any mistake in that shows up in the
    sliding-window check and the probes are redone with one line each.
    """
    hit = np.zeros((n_src, n_dst), bool)
    for fp, marked in zip(footprints, lines):
        if len(marked) == 1:  # exact, gaps included (a dilated window)
            hit[marked[0]] = fp
            continue
        runs = _runs(fp)
        if len(runs) > len(marked):  # footprints with gaps: tell them apart one line at a time
            raise _Crowded
        for i, r in zip(marked, runs):
            hit[i, r] = True
    return hit


def _derive(model: Model, spacing: int, combined: bool) -> dict[str, ReceptiveField]:
    """Probe every ``spacing``-th row and column of each layer, rows and columns in the same
    probe (``combined``) or in separate ones."""
    layers = _spatial_layers(model)
    if len(layers) < 2:
        raise ValueError(f"model {model.spec.name!r} has no spatial layers besides the input")
    H, W = model.spec.input_size
    names = tuple(layer.name for layer in layers)
    none = np.zeros(0, np.int64)
    # One probe: markers on some rows and / or columns of one layer.
    probes: list[tuple[str, np.ndarray, np.ndarray]] = []
    for src in layers[:-1]:
        h, w = src.shape[:2]
        if combined:
            probes += [(src.name, np.arange(r, h, spacing), np.arange(r, w, spacing))
                       for r in range(max(min(spacing, h), min(spacing, w)))]  # fmt: skip
        else:
            probes += [(src.name, np.arange(r, h, spacing), none) for r in range(min(spacing, h))]
            probes += [(src.name, none, np.arange(r, w, spacing)) for r in range(min(spacing, w))]
    n = max(H, W)
    picks = sorted({round(t * (n - 1) / (_DIRECT - 1)) for t in range(_DIRECT)})
    direct = len(probes)
    pixels = _diagonal(H, W, picks)
    grids = {layer.name: np.zeros((direct + len(pixels), *layer.shape[:2]), bool) for layer in layers}
    for p, (name, rows, cols) in enumerate(probes):
        grids[name][p, rows, :] = True
        grids[name][p, :, cols] = True
    for p, (i, j) in enumerate(pixels):
        grids["input"][direct + p, i, j] = True
    grids = {k: jnp.asarray(v) for k, v in grids.items()}

    channels = tuple(layer.shape[2] for layer in layers)
    out = _probe_all(model.apply, model.params, _probe_image(model), grids, names=names, channels=channels,
                     batch=8)  # fmt: skip
    seen = {k: np.asarray(v) for k, v in out.items()}

    try:
        fields = _compose(layers, probes, seen, H, W)
    except ValueError:
        if combined:  # perhaps an ambiguity of multi-line probes: one line each, axes apart
            raise _Crowded from None
        raise
    _check_direct(fields, layers, {k: v[direct:] for k, v in seen.items()}, pixels)
    return fields


def _compose(layers, probes, seen, H: int, W: int) -> dict[str, ReceptiveField]:
    # Per axis: (start of position 0's field, jump, size, clipped [first, last] per position).
    state = {0: (0, 1, 1, np.stack([np.arange(H)] * 2, 1)), 1: (0, 1, 1, np.stack([np.arange(W)] * 2, 1))}
    fields = {"input": ReceptiveField("input", (1, 1), (1, 1), (0, 0), state[0][3], state[1][3])}
    for src, dst in zip(layers, layers[1:]):
        where = f"receptive field of {dst.name!r} from {src.name!r}"
        per_axis = ([], []), ([], [])  # (footprints, lines) for rows and for columns
        for p, (name, rows, cols) in enumerate(probes):
            if name != src.name:
                continue
            footprints = _footprints(seen[dst.name][p], rows, cols, where)
            for axis, fp, marked in zip((0, 1), footprints, (rows, cols)):
                if fp is not None:
                    per_axis[axis][0].append(fp)
                    per_axis[axis][1].append(marked)
        new = {}
        for axis in (0, 1):
            hit = _attribute(*per_axis[axis], src.shape[axis], dst.shape[axis])
            lo, hi, k, s, p = _axis_window(hit, src.shape[axis], f"{where} ({('rows', 'columns')[axis]})")
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
    return fields


def _check_direct(fields, layers, seen, direct) -> None:
    """Input pixels probed directly: no layer may depend on them outside its field.

    Only containment is checked: along a path such as conv -> max-pool a marker can be
    absorbed (the convolution turns +inf into NaN, which the max may drop), so a direct probe
    can see less than the structure; it never sees more.
    """
    for layer in layers[1:]:
        rf = fields[layer.name]
        for (i, j), observed in zip(direct, seen[layer.name]):
            i, j = int(i), int(j)
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


def gradient_support(
    model: Model, layer: str, positions: Sequence[tuple[int, int]], images=None
) -> np.ndarray:
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
    info = spec.layer(check_spatial_layer(spec, layer))
    pos = _check_positions(positions, info.shape[:2], layer)
    if images is None:
        images = jax.random.uniform(jax.random.key(0), (2, *spec.input_size, spec.channels))
    images = spec.check_images(images, exact_size=True)
    mag = _unit_input_grads(model.apply, model.params, images, jnp.asarray(pos), layer=layer)
    return np.asarray(mag) > 0


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
      unit: the channel measured (the most active one when none was given).
    """

    map: np.ndarray
    coverage: np.ndarray
    size: float
    discrepancy: np.ndarray
    images: np.ndarray
    peaks: np.ndarray
    activations: np.ndarray
    copies: int
    unit: int


@functools.partial(jax.jit, static_argnames=("apply", "layers"))
def _unit_peaks(apply, params, images, *, layers):
    """Per layer, every channel's maximum over positions and where it is: ``[n, C]``, ``[n, C, 2]``."""
    acts = apply(params, images)
    out = []
    for layer in layers:
        a = acts[layer]
        flat = a.reshape(a.shape[0], -1, a.shape[-1])
        idx = jnp.argmax(flat, axis=1)
        out.append((jnp.max(flat, axis=1), jnp.stack([idx // a.shape[2], idx % a.shape[2]], axis=-1)))
    return tuple(out)


@functools.partial(jax.jit, static_argnames=("apply", "layers", "batch"))
def _occlude(apply, params, image, units, peaks, tops, lefts, patches, *, layers, batch):
    """Each target's activation at its peak for copies of ``image [1, H, W, C]`` with
    ``patches[j]`` pasted at ``(tops[j], lefts[j])``: ``[J, U]``. (Copy 0 pastes the image's
    own pixels back: the unoccluded reference, computed in the same batch, so an occluder the
    unit cannot see changes nothing, to the last bit.)"""

    def one(args):
        top, left, patch = args
        acts = apply(params, jax.lax.dynamic_update_slice(image[0], patch, (top, left, 0))[None])
        return jnp.stack([
            jax.lax.dynamic_slice(acts[layer][0], (peaks[u, 0], peaks[u, 1], units[u]), (1, 1, 1))[0, 0, 0]
            for u, layer in enumerate(layers)
        ])  # fmt: skip

    return chunked_map(one, (tops, lefts, patches), batch)


def _seed(key) -> list[int]:
    """Integers seeding NumPy from an int or a JAX key."""
    if isinstance(key, (int, np.integer)):
        return [int(key)]
    return [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()]


def _grid(n: int, patch: int, stride: int) -> np.ndarray:
    return np.arange(0, n - patch + 1, stride)


def _targets(spec, layer, unit) -> tuple[list[str], list[int | None], bool]:
    """``(layers, units, single)`` from one ``(layer, unit)`` or matching sequences (a unit of
    None: the layer's most active channel)."""
    single = isinstance(layer, str)
    layers = [layer] if single else list(layer)
    units = [unit] * len(layers) if unit is None else ([unit] if single else list(unit))
    if single and not (unit is None or isinstance(unit, (int, np.integer))):
        raise ValueError(f"with one layer, unit must be one channel index, got {unit!r}")
    if len(layers) != len(units) or not layers:
        raise ValueError(f"give one unit per layer: {len(layers)} layers, {len(units)} units")
    for lay, u in zip(layers, units):
        channels = spec.layer(check_spatial_layer(spec, lay)).channels
        if u is None:
            continue
        if isinstance(u, bool) or not isinstance(u, (int, np.integer)) or not 0 <= u < channels:
            raise ValueError(f"unit {u!r} is out of range for layer {lay!r}: valid 0..{channels - 1}")
    return layers, [None if u is None else int(u) for u in units], single


def empirical(
    model: Model,
    layer: str | Sequence[str],
    unit: int | Sequence[int] | None,
    images,
    *,
    top_k: int = 5,
    patch: int = 11,
    stride: int = 3,
    key: int | jax.Array = 0,
    restrict: bool = True,
    batch_size: int = 64,
    progress: bool = False,
) -> EmpiricalRF | list[EmpiricalRF]:
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
    ``batch_size`` by ``lax.map``), and several units (of any layers: pass sequences) read
    the same copies. With ``restrict`` (default) only patches overlapping the units'
    theoretical fields are run: the others cannot change the units, so their discrepancy is
    exactly zero and the result is the same (every patch's noise is drawn by NumPy from the
    key, the image and the grid position, so both ways draw the same pixels).

    Cost: about ``(H / stride)^2`` copies per image for units whose field covers the image
    (5184 at 224x224, patch 11, stride 3, the published setting), each a forward pass.

    Args:
      model: a :class:`~cnnjax.Model`.
      layer: a spatial layer, or a sequence of them; unit: a channel of it (one per layer), or
        None: each layer's channel with the largest activation over the images.
      images: candidate images ``[N, H, W, C]`` at the model's input size, in [0, 1].
      top_k: how many of each unit's top images to average (at most N).
      patch: occluder side in pixels (11 in the paper); stride: grid step (3 in the paper).
      key: seeds the random patches (an int or a JAX key; the same key, the same result).
      restrict: run only the patches that overlap the units' theoretical fields.
      batch_size: occluded copies per vmapped chunk.
      progress: show a progress bar over the images.

    Returns:
      An :class:`EmpiricalRF` (a list of them, one per unit, for sequences).

    Raises:
      ValueError: an unknown or non-spatial layer, a unit out of range, a patch larger than
        the images, ``top_k`` larger than the number of images, a bad stride.

    Example::

      rf = cnnjax.receptive_field.empirical(model, "block_5", 7, photos, top_k=2)
      rf.size   # in pixels; compare theoretical(model)["block_5"].size
    """
    from tqdm.auto import tqdm

    spec = model.spec
    layers, units, single = _targets(spec, layer, unit)
    images = spec.check_images(images, exact_size=True)
    n, H, W, _ = images.shape
    for name, value in (("patch", patch), ("stride", stride), ("top_k", top_k), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if patch > min(H, W):
        raise ValueError(f"occlusion patch {patch}x{patch} is larger than the images ({H}x{W})")
    if top_k > n:
        raise ValueError(f"top_k={top_k} but only {n} images were given")
    seed = _seed(key)
    images_np, c = np.asarray(images), images.shape[-1]
    fields = theoretical(model)
    rfs = [fields[lay] for lay in layers]
    static_layers = tuple(layers)
    chunks = [
        _unit_peaks(model.apply, model.params, images[s : s + 16], layers=static_layers)
        for s in range(0, n, 16)
    ]
    per_layer = [
        tuple(np.concatenate([np.asarray(c[u][j]) for c in chunks]) for j in (0, 1))
        for u in range(len(layers))
    ]
    units = [
        int(np.argmax(v.max(axis=0))) if unit is None else unit for (v, _), unit in zip(per_layer, units)
    ]
    values = np.stack([v[:, unit] for (v, _), unit in zip(per_layer, units)], axis=1)  # [n, U]
    positions = np.stack([p[:, unit] for (_, p), unit in zip(per_layer, units)], axis=1)  # [n, U, 2]
    unit_arr = jnp.asarray(units, jnp.int32)
    order = [np.argsort(-values[:, u], kind="stable")[:top_k] for u in range(len(units))]

    tops_all, lefts_all = _grid(H, patch, stride), _grid(W, patch, stride)
    # Which grid patches cover each pixel; their count is the denominator of D (full grid).
    row_cover = (tops_all[:, None] <= np.arange(H)[None]) & (np.arange(H)[None] < tops_all[:, None] + patch)
    col_cover = (lefts_all[:, None] <= np.arange(W)[None]) & (np.arange(W)[None] < lefts_all[:, None] + patch)
    count = np.outer(row_cover.sum(0), col_cover.sum(0))
    # A fixed number of patches per image (padded), so every image reuses one compiled program.
    if restrict:
        n_r = min(
            len(tops_all), sum(int(np.max(np.diff(f.rows, axis=1))) + patch for f in rfs) // stride + len(rfs)
        )
        n_c = min(
            len(lefts_all),
            sum(int(np.max(np.diff(f.cols, axis=1))) + patch for f in rfs) // stride + len(rfs),
        )
    else:
        n_r, n_c = len(tops_all), len(lefts_all)

    canvas = np.zeros((len(units), 2 * H - 1, 2 * W - 1))
    coverage = np.zeros(canvas.shape, np.int64)
    maps = [dict() for _ in units]
    copies = [0] * len(units)
    needed = sorted({int(i) for o in order for i in o})
    for i in tqdm(needed, desc="occlusion", unit="image", disable=not progress):
        mine = [u for u in range(len(units)) if i in order[u]]
        peaks = positions[i]  # [U, 2]
        if restrict:
            r_idx = np.unique(
                np.concatenate([_overlapping(tops_all, patch, rfs[u].rows[peaks[u, 0]]) for u in mine])
            )
            c_idx = np.unique(
                np.concatenate([_overlapping(lefts_all, patch, rfs[u].cols[peaks[u, 1]]) for u in mine])
            )
        else:
            r_idx, c_idx = np.arange(len(tops_all)), np.arange(len(lefts_all))
        rr, cc = np.meshgrid(_pad_to(r_idx, n_r), _pad_to(c_idx, n_c), indexing="ij")
        valid = np.outer(np.arange(n_r) < len(r_idx), np.arange(n_c) < len(c_idx)).ravel()
        rr, cc = rr.ravel(), cc.ravel()
        # Every patch's noise comes from (key, image, grid position): restricting changes nothing.
        patches = np.stack(
            [images_np[i, :patch, :patch]]
            + [np.random.default_rng(seed + [i, int(g)]).random((patch, patch, c), np.float32)
               for g in rr * len(lefts_all) + cc]
        )  # fmt: skip
        acts = _occlude(model.apply, model.params, images[i : i + 1], unit_arr, jnp.asarray(peaks, jnp.int32),
                        jnp.asarray(np.concatenate([[0], tops_all[rr]])),
                        jnp.asarray(np.concatenate([[0], lefts_all[cc]])), jnp.asarray(patches),
                        layers=static_layers, batch=min(batch_size, len(rr) + 1))  # fmt: skip
        base, acts = np.asarray(acts[0], np.float64), np.asarray(acts[1:], np.float64)
        d = np.abs(acts - base[None]) * valid[:, None]
        for u in mine:
            total = np.einsum("j,jh,jw->hw", d[:, u], row_cover[rr], col_cover[cc])
            dmap = np.where(count > 0, total / np.maximum(count, 1), 0.0)
            maps[u][i] = dmap
            copies[u] += int(valid.sum())
            cy, cx = (c[p] for c, p in zip(rfs[u].centres, peaks[u]))
            oy = H - 1 - int(np.floor(np.clip(cy, 0, H - 1)))
            ox = W - 1 - int(np.floor(np.clip(cx, 0, W - 1)))
            canvas[u, oy : oy + H, ox : ox + W] += dmap
            coverage[u, oy : oy + H, ox : ox + W] += 1
    results = []
    for u in range(len(units)):
        mean = np.where(coverage[u] > 0, canvas[u] / np.maximum(coverage[u], 1), 0.0)
        results.append(EmpiricalRF(
            map=mean.astype(np.float32),
            coverage=coverage[u],
            size=field_size(mean),
            discrepancy=np.stack([maps[u][i] for i in order[u]]).astype(np.float32),
            images=order[u].astype(np.int64),
            peaks=positions[order[u], u].astype(np.int64),
            activations=values[order[u], u],
            copies=copies[u],
            unit=units[u],
        ))  # fmt: skip
    return results[0] if single else results


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


@functools.partial(jax.jit, static_argnames=("apply", "layers", "all_channels"))
def _centre_grads(apply, params, images, positions, units, *, layers, all_channels):
    """``[L, H, W]``: per layer, the mean over images of sum_colours |d unit / d image|.

    One backward pass for all layers: the batch holds one copy of the images per layer and
    copy ``i`` is seeded at layer ``i`` only (examples in a batch are independent)."""
    n_layers, n = len(layers), images.shape[0]
    copies = jnp.broadcast_to(images[None], (n_layers, *images.shape))

    def total(xs):
        acts = apply(params, xs.reshape(n_layers * n, *images.shape[1:]))
        s = jnp.float32(0.0)
        for i, layer in enumerate(layers):
            a = acts[layer].reshape(n_layers, n, *acts[layer].shape[1:])[i]
            v = jax.lax.dynamic_slice(a, (0, positions[i, 0], positions[i, 1], 0), (n, 1, 1, a.shape[-1]))
            s = s + (jnp.sum(v) if all_channels else jnp.sum(jnp.take(v, units[i], axis=3)))
        return s

    g = jax.grad(total)(copies)
    return jnp.mean(jnp.sum(jnp.abs(g), axis=-1), axis=1)


def effective(
    model: Model,
    layer: str | Sequence[str],
    images,
    *,
    unit: int | Sequence[int] | None = None,
    position: tuple[int, int] | None = None,
) -> EffectiveRF | list[EffectiveRF]:
    """The effective receptive field (Luo et al., NIPS 2016): a unit's input gradient.

    ``ERF(p) = mean_images sum_colours |d a_{y, x}(image) / d image(p)|`` with ``a_{y, x}`` the
    sum over channels (or one channel ``unit``) of the layer at ``position`` (default: the
    centre position ``(h // 2, w // 2)``), i.e. a gradient signal of one at the centre of the
    output plane. All images, and all layers when several are given, share one backward pass.

    Args:
      model: a :class:`~cnnjax.Model`.
      layer: a spatial layer, or a sequence of them.
      images: ``[N, H, W, C]`` at the model's input size, in [0, 1].
      unit: one channel (or one per layer; default: all channels summed).
      position: ``(y, x)`` in the layer (default: its centre); one layer only.

    Returns:
      An :class:`EffectiveRF` (a list, one per layer, for a sequence).

    Example::

      erf = cnnjax.receptive_field.effective(model, "block_10", photos)
      erf.size, cnnjax.receptive_field.theoretical(model)["block_10"].size
    """
    spec = model.spec
    single = isinstance(layer, str)
    layers = [layer] if single else list(layer)
    if not layers:
        raise ValueError("give at least one layer")
    if position is not None and len(layers) > 1:
        raise ValueError("position applies to one layer; several layers use their centres")
    units = [unit] * len(layers) if unit is None or isinstance(unit, (int, np.integer)) else list(unit)
    if len(units) != len(layers):
        raise ValueError(f"give one unit per layer: {len(layers)} layers, {len(units)} units")
    images = spec.check_images(images, exact_size=True)
    positions = []
    for lay, u in zip(layers, units):
        h, w, channels = spec.layer(check_spatial_layer(spec, lay)).shape
        pos = (
            (h // 2, w // 2)
            if position is None
            else tuple(int(v) for v in _check_positions(position, (h, w), lay)[0])
        )
        if u is not None and (
            isinstance(u, bool) or not isinstance(u, (int, np.integer)) or not 0 <= u < channels
        ):
            raise ValueError(f"unit {u!r} is out of range for layer {lay!r}: valid 0..{channels - 1}")
        positions.append(pos)
    all_channels = all(u is None for u in units)
    if not all_channels and any(u is None for u in units):
        raise ValueError("give a unit for every layer or for none")
    m = _centre_grads(model.apply, model.params, images, jnp.asarray(positions, jnp.int32),
                      jnp.asarray([u or 0 for u in units], jnp.int32), layers=tuple(layers),
                      all_channels=all_channels)  # fmt: skip
    m = np.asarray(m)
    results = [
        EffectiveRF(map=m[i], size=field_size(m[i]), position=positions[i]) for i in range(len(layers))
    ]
    return results[0] if single else results
