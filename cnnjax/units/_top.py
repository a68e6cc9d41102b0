"""The images that excite each unit most (Zhou et al., ICLR 2015, Sec. 3): a running top-K per
unit of one or more layers, streamed over an image collection of any size.

One compiled program per layer set tallies a chunk of images: the network's activations, each
unit's score per image (its maximum over positions, or its mean) and the position of its peak,
merged into the running top-K on the device. The images are read a chunk at a time, so memory
is bounded by the chunk whatever the collection's size; with ``checkpoint_dir`` the tally is
saved atomically every :data:`SAVE_SECONDS` and a run started again resumes where it stopped,
counting no image twice.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from cnnjax._src.checkpoint import load_checkpoint, save_checkpoint
from cnnjax._src.checks import check_int, check_positive_int
from cnnjax._src.chunks import pad_rows
from cnnjax._src.contract import Model
from cnnjax._src.paths import check_output_dir
from cnnjax._src.sharding import chunk_for_mesh, on_mesh, shard_rows
from cnnjax._src.targets import apply_interp, check_spatial_layer, check_units
from cnnjax.data import ImageCollection, image_collection
from cnnjax.receptive_field import centre_matrices

__all__ = ["SAVE_SECONDS", "TopImagesResult", "TopSegmentsResult", "top_images", "top_segments"]

#: How often (seconds) a run with ``checkpoint_dir`` saves its tally.
SAVE_SECONDS = 30.0

_REDUCTIONS = ("max", "mean")


class TopImagesResult(NamedTuple):
    """Result of :func:`top_images`: per layer, a row per unit, best image first.

    Attributes:
      layers: the layers tallied.
      scores: ``{layer: float32 [units, top_k]}``: the unit's score on each top image (its
        maximum, or mean, activation over positions).
      indices: ``{layer: int32 [units, top_k]}``: the images' indices in the collection.
      positions: ``{layer: int32 [units, top_k, 2]}``: (row, column) of the unit's peak in the
        layer's grid on each top image.
      count: how many images were tallied.
    """

    layers: tuple[str, ...]
    scores: dict[str, np.ndarray]
    indices: dict[str, np.ndarray]
    positions: dict[str, np.ndarray]
    count: int


def _empty(spec, layers: tuple[str, ...], top_k: int) -> dict:
    state = {}
    for layer in layers:
        units = spec.layer(layer).shape[-1]
        state[layer] = (
            jnp.full((units, top_k), -jnp.inf, jnp.float32),
            jnp.full((units, top_k), -1, jnp.int32),
            jnp.zeros((units, top_k, 2), jnp.int32),
        )
    return state


@functools.partial(jax.jit, static_argnames=("apply", "layers", "reduce"), donate_argnames=("state",))
def _tally(apply, params, images, valid, offset, state, *, layers, reduce):
    acts = apply(params, images)
    new = {}
    for layer in layers:
        a = acts[layer].astype(jnp.float32)  # [b, h, w, u]
        b, h, w, u = a.shape
        flat = a.reshape(b, h * w, u)
        peak = jnp.argmax(flat, axis=1)  # [b, u]
        score = jnp.max(flat, axis=1) if reduce == "max" else jnp.mean(flat, axis=1)
        score = jnp.where(valid[:, None], score, -jnp.inf).T  # [u, b]
        index = jnp.broadcast_to(offset + jnp.arange(b, dtype=jnp.int32), (u, b))
        pos = jnp.stack([peak // w, peak % w], axis=-1).astype(jnp.int32).transpose(1, 0, 2)  # [u, b, 2]
        s0, i0, p0 = state[layer]
        scores = jnp.concatenate([s0, score], axis=1)  # the tally first: ties keep earlier images
        top, where = jax.lax.top_k(scores, s0.shape[1])
        indices = jnp.take_along_axis(jnp.concatenate([i0, index], axis=1), where, axis=1)
        positions = jnp.take_along_axis(jnp.concatenate([p0, pos], axis=1), where[..., None], axis=1)
        new[layer] = (top, indices, positions)
    return new


@on_mesh
def top_images(
    model: Model,
    collection: Any,
    layers: str | Sequence[str],
    *,
    top_k: int = 9,
    reduce: str = "max",
    chunk_size: int = 64,
    checkpoint_dir: str | Path | None = None,
    restart: bool = False,
    progress: bool = True,
    mesh=None,
) -> TopImagesResult:
    """The ``top_k`` images of a collection that excite each unit of ``layers`` most.

    Every unit of every layer is tallied at once, over the collection in chunks of
    ``chunk_size`` images (one compiled program for the layer set; the last chunk is padded).
    An image's score for a unit is the unit's largest activation over the layer's positions
    (``reduce="max"``, Zhou et al. 2015) or its mean (``"mean"``); ties go to the earlier image.

    Args:
      model: a :class:`~cnnjax.Model`.
      collection: a folder of images, a ``Dataset``, an array ``[n, h, w, c]`` or an
        :class:`~cnnjax.data.ImageCollection` (:func:`~cnnjax.data.image_collection`); images
        are brought to the model's input (its evaluation crop, its channel count).
      layers: one spatial layer or several.
      top_k: images kept per unit (at most the collection's size).
      reduce: ``"max"`` or ``"mean"`` over positions.
      chunk_size: images per compiled call (memory; never changes the result).
      checkpoint_dir: where the tally is saved (``top_images.ckpt``) every
        :data:`SAVE_SECONDS` and at the end; a run started again with the same settings
        resumes from it.
      restart: start afresh even if ``checkpoint_dir`` holds a tally.
      progress: a progress bar on stderr.
      mesh: a ``jax.sharding.Mesh``: each chunk's images are split over its first axis
        (``chunk_size`` rounded up to a multiple of its size); the same tally as on one device.

    Returns:
      A :class:`TopImagesResult`.

    Raises:
      ValueError: an unknown or non-spatial layer, ``top_k`` larger than the collection, an
        unknown ``reduce``, an unreadable image (named), or a checkpoint of other settings.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> images = np.random.default_rng(0).random((20, 32, 32, 3), np.float32)
      >>> top = top_images(tiny_cnn(), images, ["conv2", "conv3"], top_k=3, progress=False)
      >>> top.indices["conv3"].shape, top.positions["conv3"].shape, top.count
      ((16, 3), (16, 3, 2), 20)
    """
    spec = model.spec
    collection = image_collection(collection)
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if not layers:
        raise ValueError("give at least one layer")
    layers = tuple(check_spatial_layer(spec, layer) for layer in layers)
    top_k = check_int(top_k, "top_k", lo=1, hi=len(collection))
    if reduce not in _REDUCTIONS:
        raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {reduce!r}")
    chunk_size = min(check_positive_int(chunk_size, "chunk_size"), len(collection))
    chunk_size = chunk_for_mesh(mesh, chunk_size)
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = check_output_dir(checkpoint_dir, what="checkpoint folder") / "top_images.ckpt"
    state, start = _empty(spec, layers, top_k), 0
    if ckpt is not None:  # (the collection's fingerprint reads all its names, or an array's bytes)
        settings = {"model": spec.name, "layers": list(layers), "top_k": top_k, "reduce": reduce,
                    "images": len(collection), "collection": collection.fingerprint}  # fmt: skip
    if ckpt is not None and ckpt.exists() and not restart:
        state, record = load_checkpoint(ckpt, state, settings=settings)
        state, start = jax.tree.map(jnp.asarray, state), record["count"]

    def save(count):
        if ckpt is not None:
            save_checkpoint(ckpt, state, {"settings": settings, "count": count})

    n = len(collection)
    bar = tqdm(total=n, initial=start, desc="top images", unit="image", disable=not progress, file=sys.stderr)
    saved_at = time.monotonic()
    images = _padded(collection, spec, start, chunk_size) if start < n else None
    for offset in range(start, n, chunk_size):
        stop = min(offset + chunk_size, n)
        valid = np.arange(chunk_size) < stop - offset
        _, (chunk, valid) = shard_rows(mesh, images, valid)
        state = _tally(model.apply, model.params, chunk, valid, np.int32(offset), state,
                       layers=layers, reduce=reduce)  # fmt: skip
        if stop < n:  # read the next chunk while this one computes
            images = _padded(collection, spec, stop, chunk_size)
        bar.update(stop - offset)
        if ckpt is not None and (stop == n or time.monotonic() - saved_at >= SAVE_SECONDS):
            save(stop)
            saved_at = time.monotonic()
    bar.close()
    out = jax.device_get(state)
    return TopImagesResult(layers, {k: v[0] for k, v in out.items()}, {k: v[1] for k, v in out.items()},
                           {k: v[2] for k, v in out.items()}, n)  # fmt: skip


def _padded(collection: ImageCollection, spec, start: int, chunk_size: int) -> np.ndarray:
    stop = min(start + chunk_size, len(collection))
    return pad_rows(collection.read(range(start, stop), spec), chunk_size)


class TopSegmentsResult(NamedTuple):
    """Result of :func:`top_segments`: a row per unit, its top images in order.

    Attributes:
      units: int32 ``[u]``: the units.
      images: float32 ``[u, top_k, H, W, c]``: the top images, as the model saw them.
      masks: bool ``[u, top_k, H, W]``: each image's segment (the unit's receptive-field
        segmentation, as :func:`unit_segmentation` makes it).
      boxes: int32 ``[u, top_k, 4]``: the segment's bounding box ``(top, left, bottom,
        right)``, bottom and right exclusive (the whole image for an empty segment).
      crops: float32 ``[u, top_k, crop_size, crop_size, c]``: the boxes, resampled.
      scores: float32 ``[u, top_k]``: the unit's scores (as in :class:`TopImagesResult`).
      indices: int32 ``[u, top_k]``: the images' indices in the collection.
    """

    units: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    crops: np.ndarray
    scores: np.ndarray
    indices: np.ndarray


@functools.partial(jax.jit, static_argnames=("apply", "layer"))
def _pair_maps(apply, params, images, units, ry, rx, *, layer):
    a = apply(params, images)[layer]  # [m, h, w, U]: image i's map of its own unit units[i]
    a = jnp.take_along_axis(a, units[:, None, None, None], axis=3)[..., 0]
    return apply_interp(a.astype(jnp.float32), ry, rx)


def top_segments(
    model: Model,
    collection: Any,
    top: TopImagesResult,
    layer: str,
    units: Any = None,
    *,
    threshold: float = 0.5,
    crop_size: int = 64,
    chunk_size: int = 64,
) -> TopSegmentsResult:
    """The top images of units (from :func:`top_images`), each segmented by its unit.

    As in Zhou et al. (2015), each unit's map on each of its top images is upsampled to the
    input with activations at their receptive fields' centres, and thresholded at
    ``threshold`` times the unit's largest value over its top images; the segment's
    bounding box is cut out and resampled to ``crop_size`` (the crops people annotate).
    Memory grows with ``units x top_k`` images.

    Args:
      model: the model the tally was made with.
      collection: the same collection.
      top: the :class:`TopImagesResult`.
      layer: one of ``top.layers``.
      units: channel indices (default: every unit of the layer).
      threshold: in (0, 1].
      crop_size: the side of the crops.
      chunk_size: images per compiled call.

    Returns:
      A :class:`TopSegmentsResult`.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> model, images = tiny_cnn(), np.random.default_rng(0).random((20, 32, 32, 3), np.float32)
      >>> top = top_images(model, images, "conv3", top_k=4, progress=False)
      >>> seg = top_segments(model, images, top, "conv3", [0, 5], crop_size=16)
      >>> seg.masks.shape, seg.crops.shape
      ((2, 4, 32, 32), (2, 4, 16, 16, 3))
    """
    from cnnjax._src.checks import check_float

    spec = model.spec
    collection = image_collection(collection)
    if layer not in top.layers:
        raise ValueError(f"layer {layer!r} was not tallied; the result holds {list(top.layers)}")
    if top.count != len(collection):
        raise ValueError(f"the tally counted {top.count} images but the collection holds {len(collection)}")
    units = np.arange(spec.layer(layer).shape[-1]) if units is None else check_units(spec, layer, units)
    threshold = check_float(threshold, "threshold", lo=0.0, hi=1.0, lo_open=True)
    crop_size = check_positive_int(crop_size, "crop_size")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    indices = top.indices[layer][units]  # [u, k]
    u, k = indices.shape
    pair_images = collection.read(indices.reshape(-1), spec)  # [u*k, H, W, c]
    pair_units = np.repeat(units, k).astype(np.int32)
    ry, rx = centre_matrices(model, layer)
    maps = []
    for start in range(0, len(pair_units), chunk_size):
        x, us = pair_images[start : start + chunk_size], pair_units[start : start + chunk_size]
        m = _pair_maps(model.apply, model.params, pad_rows(x, chunk_size), pad_rows(us, chunk_size), ry, rx,
                       layer=layer)  # fmt: skip
        maps.append(np.asarray(m)[: len(us)])
    H, W = spec.input_size
    maps = np.concatenate(maps).reshape(u, k, H, W)
    cut = threshold * maps.max(axis=(1, 2, 3), keepdims=True)
    masks = (maps >= cut) & (maps > 0)
    images = pair_images.reshape(u, k, H, W, -1)
    boxes = _boxes(masks)
    return TopSegmentsResult(units.astype(np.int32), images, masks, boxes, _crops(images, boxes, crop_size),
                             top.scores[layer][units], indices)  # fmt: skip


def _boxes(masks: np.ndarray) -> np.ndarray:
    """Bounding boxes ``(top, left, bottom, right)`` of masks ``[..., H, W]``."""
    H, W = masks.shape[-2:]
    rows, cols = masks.any(axis=-1), masks.any(axis=-2)
    empty = ~rows.any(axis=-1)
    top = np.where(empty, 0, rows.argmax(axis=-1))
    bottom = np.where(empty, H, H - rows[..., ::-1].argmax(axis=-1))
    left = np.where(empty, 0, cols.argmax(axis=-1))
    right = np.where(empty, W, W - cols[..., ::-1].argmax(axis=-1))
    return np.stack([top, left, bottom, right], axis=-1).astype(np.int32)


def _crops(images: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box of each image resampled (nearest pixel centres) to ``size x size``."""
    t = (np.arange(size) + 0.5) / size
    top, left, bottom, right = np.moveaxis(boxes, -1, 0)
    ys = np.floor(top[..., None] + t * (bottom - top)[..., None]).astype(np.int64)  # [..., size]
    xs = np.floor(left[..., None] + t * (right - left)[..., None]).astype(np.int64)
    lead = np.indices(boxes.shape[:-1])
    lead = tuple(i[..., None, None] for i in lead)
    return images[(*lead, ys[..., :, None], xs[..., None, :])]
