"""Theoretical receptive fields, derived by probing the model itself, and maps placed at their centres.

:func:`theoretical` derives, for every spatial layer, the size, effective stride and padding of
the receptive field and the input pixels each feature position sees: it adds non-finite
markers to rows or columns of a layer (through the contract's ``perturb``) and reads which
positions of the next layer become non-finite. NaN survives ``0 * NaN``, ReLU, ``clip`` and
ReLU6, and +inf survives max-pooling (XLA's vectorised CPU max can drop a NaN), so with both
(in alternate channels) the pattern is the structural dependency, independent of the weights'
values. Layer-to-layer windows are composed into input pixels with the usual recurrence
(``size += (k - 1) * jump``, ``jump *= s``) and the result is checked end to end by probing
input pixels directly. :func:`gradient_support` (the pixels with a non-zero gradient)
cross-checks it; :func:`centre_matrices` and :func:`upsample_to_input` put a layer's maps at
the centres of its positions' fields.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.chunks import chunked_map
from cnnjax._src.contract import Model
from cnnjax._src.targets import (
    ModelCache,
    apply_interp,
    check_positions,
    check_spatial_layer,
    interp_matrix,
)

__all__ = ["ReceptiveField", "centre_matrices", "gradient_support", "theoretical", "upsample_to_input"]


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

_CACHE = ModelCache()

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

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> rf = theoretical(tiny_cnn())["conv3"]
      >>> rf.size, rf.stride, rf.padding
      ((9, 9), (2, 2), (3, 3))
      >>> rf.box(0, 0)  # position (0, 0) sees input rows 0..5 and columns 0..5
      (0, 0, 5, 5)

      EfficientNet-Lite0's ``block_3`` gives ``((35, 35), (8, 8), (10, 10))``.
    """
    return _CACHE.get(model, None, lambda: _derive_all(model))


def _derive_all(model: Model) -> dict[str, ReceptiveField]:
    try:
        return _derive(model, _SPACING, combined=True)
    except _Crowded:  # one line per probe: exact, and every footprint stands alone
        widest = max(max(lay.shape[:2]) for lay in _spatial_layers(model))
        return _derive(model, widest, combined=False)


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
    pos = check_positions(positions, info.shape[:2], layer)
    if images is None:  # drawn by NumPy: an eager jax.random call would compile a program of its own
        images = np.random.default_rng(0).random((2, *spec.input_size, spec.channels), np.float32)
    images = spec.check_images(images, exact_size=True)
    mag = _unit_input_grads(model.apply, model.params, images, jnp.asarray(pos), layer=layer)
    return np.asarray(mag) > 0


# --------------------------------------------------------------------------------------------
# Maps at the centres of the fields


def centre_matrices(model: Model, layer: str) -> tuple[jax.Array, jax.Array]:
    """Interpolation matrices ``(R_y [H, h], R_x [W, w])`` that upsample a map of ``layer`` to
    the input size with each activation at the centre of its theoretical receptive field
    (``R_y @ m @ R_x.T``; the fields are derived by :func:`theoretical`)."""
    layer = check_spatial_layer(model.spec, layer)
    ys, xs = theoretical(model)[layer].centres
    H, W = model.spec.input_size
    return jnp.asarray(interp_matrix(ys, H)), jnp.asarray(interp_matrix(xs, W))


def upsample_to_input(model: Model, layer: str, maps) -> jax.Array:
    """Maps ``[..., h, w]`` of ``layer`` upsampled to the model's input size, each activation
    at the centre of its theoretical receptive field (linear in between, constant beyond the
    outermost centres). With TensorFlow SAME padding the centres lie lower and further right
    than a plain resize puts them: 15 pixels at EfficientNet-Lite0's 7x7 head.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> upsample_to_input(tiny_cnn(), "conv3", np.ones((1, 16, 16))).shape
      (1, 32, 32)
    """
    ry, rx = centre_matrices(model, layer)
    return apply_interp(jnp.asarray(maps, jnp.float32), ry, rx)
