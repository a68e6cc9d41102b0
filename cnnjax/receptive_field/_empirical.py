"""Empirical receptive fields by occlusion (Zhou et al., ICLR 2015, Sec. 3.1)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import check_positive_int, numpy_seed
from cnnjax._src.contract import Model
from cnnjax._src.sharding import device_blocks_map, on_mesh, shard_rows, unpad_rows
from cnnjax.receptive_field._effective import field_size, layers_and_units
from cnnjax.receptive_field._theoretical import theoretical

__all__ = ["EmpiricalResult", "empirical"]


class EmpiricalResult(NamedTuple):
    """What :func:`empirical` returns: one row per unit (leading axis ``U``).

    Attributes:
      maps: float32 ``[U, 2H - 1, 2W - 1]``: the mean discrepancy, re-centred so that the
        centre of the unit's theoretical field in each image sits at ``(H - 1, W - 1)``.
      coverage: int ``[U, 2H - 1, 2W - 1]``: how many images contribute to each canvas pixel.
      sizes: float ``[U]``: :func:`field_size` of each map.
      discrepancy: float32 ``[U, K, H, W]``: each top image's discrepancy map before re-centring.
      images: int ``[U, K]``: indices of each unit's top-K images among those given.
      peaks: int ``[U, K, 2]``: the position ``(y, x)`` of the unit's maximum in each image.
      activations: float ``[U, K]``: the unit's maximum in each image.
      copies: int ``[U]``: how many occluded copies were run for each unit.
      units: int ``[U]``: the channels measured (the most active one where none was given).
      layers: the layer of each unit.
    """

    maps: np.ndarray
    coverage: np.ndarray
    sizes: np.ndarray
    discrepancy: np.ndarray
    images: np.ndarray
    peaks: np.ndarray
    activations: np.ndarray
    copies: np.ndarray
    units: np.ndarray
    layers: tuple[str, ...]


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


@functools.partial(jax.jit, static_argnames=("apply", "layers", "batch", "devices"))
def _occlude(apply, params, image, units, peaks, tops, lefts, patches, *, layers, batch, devices):
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

    return device_blocks_map(one, (tops, lefts, patches), batch, devices)


def _grid(n: int, patch: int, stride: int) -> np.ndarray:
    return np.arange(0, n - patch + 1, stride)


@on_mesh
def empirical(
    model: Model,
    layers: str | Sequence[str],
    units: int | Sequence[int | None] | None,
    images,
    *,
    top_k: int = 5,
    patch: int = 11,
    stride: int = 3,
    key: int | jax.Array = 0,
    restrict: bool = True,
    chunk_size: int = 64,
    progress: bool = False,
    mesh=None,
) -> EmpiricalResult:
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
    ``chunk_size`` by ``lax.map``), and several units (of any layers: pass sequences) read
    the same copies. With ``restrict`` (default) only patches overlapping the units'
    theoretical fields are run: the others cannot change the units, so their discrepancy is
    exactly zero and the result is the same (every patch's noise is drawn by NumPy from the
    key, the image and the grid position, so both ways draw the same pixels).

    Cost: about ``(H / stride)^2`` copies per image for units whose field covers the image
    (5184 at 224x224, patch 11, stride 3, the published setting), each a forward pass.

    Args:
      model: a :class:`~cnnjax.Model`.
      layers: a spatial layer, or several (one per unit).
      units: a channel of each layer (one for every layer, or one per layer); None picks
        each layer's channel with the largest activation over the images.
      images: candidate images ``[N, H, W, C]`` at the model's input size, in [0, 1].
      top_k: how many of each unit's top images to average (at most N).
      patch: occluder side in pixels (11 in the paper).
      stride: grid step in pixels (3 in the paper).
      key: seeds the random patches (an int or a JAX key; the same key, the same result).
      restrict: run only the patches that overlap the units' theoretical fields.
      chunk_size: occluded copies per compiled chunk (memory only).
      progress: show a progress bar over the images.
      mesh: a ``jax.sharding.Mesh`` (or the one in context): each image's occluded copies are
        split over its first axis (padded to a multiple of it, the padding dropped).

    Returns:
      An :class:`EmpiricalResult`, one row per unit.

    Raises:
      ValueError: an unknown or non-spatial layer, a unit out of range, a patch larger than
        the images, ``top_k`` larger than the number of images, a bad stride.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> images = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
      >>> rf = empirical(tiny_cnn(), "conv2", 3, images, top_k=1, patch=3, stride=2)
      >>> rf.maps.shape, bool(rf.sizes[0] <= 5)
      ((1, 63, 63), True)
    """
    from tqdm.auto import tqdm

    spec = model.spec
    layers, units = layers_and_units(spec, layers, units)
    images = spec.check_images(images, exact_size=True)
    n, H, W, _ = images.shape
    patch, stride, top_k = (check_positive_int(v, name) for v, name in
                            ((patch, "patch"), (stride, "stride"), (top_k, "top_k")))  # fmt: skip
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if patch > min(H, W):
        raise ValueError(f"occlusion patch {patch}x{patch} is larger than the images ({H}x{W})")
    if top_k > n:
        raise ValueError(f"top_k={top_k} but only {n} images were given")
    seed = list(np.atleast_1d(numpy_seed(key)))
    images_np, c = np.asarray(images), images.shape[-1]
    fields = theoretical(model)
    rfs = [fields[lay] for lay in layers]
    static_layers = layers
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
    devices = 1 if mesh is None else mesh.devices.shape[0]
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
        copies_n, (tops, lefts, patches) = shard_rows(
            mesh, np.concatenate([[0], tops_all[rr]]), np.concatenate([[0], lefts_all[cc]]), patches
        )
        acts = _occlude(model.apply, model.params, images[i : i + 1], unit_arr, jnp.asarray(peaks, jnp.int32),
                        jnp.asarray(tops), jnp.asarray(lefts), jnp.asarray(patches), layers=static_layers,
                        batch=min(chunk_size, len(tops)), devices=devices)  # fmt: skip
        acts = unpad_rows(acts, copies_n)
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
    means = np.where(coverage > 0, canvas / np.maximum(coverage, 1), 0.0)
    return EmpiricalResult(
        maps=means.astype(np.float32),
        coverage=coverage,
        sizes=np.asarray([field_size(m) for m in means]),
        discrepancy=np.stack([np.stack([maps[u][i] for i in order[u]]) for u in range(len(units))]).astype(
            np.float32
        ),
        images=np.stack(order).astype(np.int64),
        peaks=np.stack([positions[order[u], u] for u in range(len(units))]).astype(np.int64),
        activations=np.stack([values[order[u], u] for u in range(len(units))]),
        copies=np.asarray(copies, np.int64),
        units=np.asarray(units, np.int64),
        layers=layers,
    )


def _overlapping(starts: np.ndarray, patch: int, interval: np.ndarray) -> np.ndarray:
    """Indices of the patches ``[t, t + patch - 1]`` that overlap ``interval`` (inclusive)."""
    return np.flatnonzero((starts <= interval[1]) & (starts + patch - 1 >= interval[0]))


def _pad_to(idx: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([idx, np.full(n - len(idx), idx[-1] if len(idx) else 0, idx.dtype)])[:n]
