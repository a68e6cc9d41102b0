"""Network Dissection (Bau et al., CVPR 2017): label every unit with the concept whose masks
its thresholded activation maps overlap most.

For each unit ``u`` of a layer: its threshold ``T_u`` is the top ``quantile`` (0.5%) of its
activations over all images and positions; its map on each image is upsampled to the mask size
(activations at their receptive fields' centres, linear in between) and thresholded,
``M_u = A_u > T_u``; and for each concept ``c``

    IoU(u, c) = sum_x |M_u(x) & L_c(x)| / sum_x |M_u(x) | L_c(x)|

over the images ``x`` annotated with ``c``'s category (NetDissect-Lite's convention: an image
without, say, any part annotation says nothing about parts). Image-level labels (scenes,
textures) are masks covering the whole image. The unit's label is its best concept; it is a
detector of it when the IoU exceeds ``iou_threshold`` (0.04).

Two streamed passes over the data, one compiled program each for the layer set: the thresholds
(a running top-m per unit, exact; or, when m is large, a per-unit histogram between the
activations' extremes, whose threshold is within one bin width, ``(max - min) / bins``, of the
exact one), then the intersections and areas, accumulated on the device.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from cnnjax._src.checks import check_float, check_int, check_positive_int
from cnnjax._src.chunks import pad_rows
from cnnjax._src.contract import Model
from cnnjax._src.sharding import chunk_for_mesh, on_mesh, shard_rows
from cnnjax._src.targets import check_spatial_layer, interp_matrix
from cnnjax.data import BrodenData, load_broden
from cnnjax.receptive_field import theoretical

__all__ = [
    "CATEGORY_TYPES",
    "SEMANTIC_TYPES",
    "SURFACE_CONCEPTS",
    "DissectResult",
    "dissect",
    "semantic_type",
    "semantic_types",
]

#: Zhou et al.'s (2015) six semantic types, simplest first.
SEMANTIC_TYPES = (
    "simple elements and colours",
    "texture or material",
    "region or surface",
    "object part",
    "object",
    "scene",
)

#: Broden category -> semantic type. Objects named in :data:`SURFACE_CONCEPTS` are regions or
#: surfaces instead.
CATEGORY_TYPES = {
    "color": "simple elements and colours",
    "texture": "texture or material",
    "material": "texture or material",
    "part": "object part",
    "object": "object",
    "scene": "scene",
}

#: Broden object concepts that are stuff rather than things: Zhou et al.'s "region or surface".
SURFACE_CONCEPTS = frozenset({
    "wall", "floor", "ceiling", "sky", "ground", "grass", "road", "sidewalk", "field", "sand", "snow",
    "water", "sea", "river", "lake", "earth", "mountain", "hill", "rock", "floor-other", "path", "runway",
    "dirt track", "land", "pavement", "carpet", "plant", "tree", "vegetation", "stairs", "stairway",
})  # fmt: skip

EXACT_LIMIT = 16384  # top-m values kept per unit at most; above, the histogram estimate
BINS = 4096


class DissectResult(NamedTuple):
    """Result of :func:`dissect`, per layer a row per unit.

    Attributes:
      layers: the layers dissected.
      thresholds: ``{layer: float32 [units]}``: each unit's activation threshold ``T_u``.
      iou: ``{layer: float32 [units, concepts]}``: IoU of each unit with each concept (0 for
        concept 0 and for concepts that never occur).
      concepts: ``{layer: int32 [units]}``: each unit's best concept (an id into
        ``concept_names``).
      best_iou: ``{layer: float32 [units]}``: its IoU.
      detectors: ``{layer: bool [units]}``: ``best_iou > iou_threshold``.
      concept_names: the concept names (id 0 is ``"-"``).
      concept_categories: each concept's Broden category (``""`` for none).
      threshold_error: ``{layer: float32 [units]}``: a bound on ``|T_u - exact|`` (0 when exact).
      count: images dissected.
      iou_threshold: the IoU a detector exceeds.
    """

    layers: tuple[str, ...]
    thresholds: dict[str, np.ndarray]
    iou: dict[str, np.ndarray]
    concepts: dict[str, np.ndarray]
    best_iou: dict[str, np.ndarray]
    detectors: dict[str, np.ndarray]
    concept_names: tuple[str, ...]
    concept_categories: tuple[str, ...]
    threshold_error: dict[str, np.ndarray]
    count: int
    iou_threshold: float


# -- pass 1: thresholds --------------------------------------------------------------------------


def _values(acts, valid):
    """Activations ``[b, h, w, u]`` as ``[u, b*h*w]``, padding images at -inf."""
    b, h, w, u = acts.shape
    a = jnp.where(valid[:, None, None, None], acts.astype(jnp.float32), -jnp.inf)
    return a.reshape(b * h * w, u).T


@functools.partial(jax.jit, static_argnames=("apply", "layers"), donate_argnames=("state",))
def _top_values(apply, params, images, valid, state, *, layers):
    acts = apply(params, images)
    out = {}
    for name in layers:
        values = jnp.concatenate([state[name], _values(acts[name], valid)], axis=1)
        out[name] = jax.lax.top_k(values, state[name].shape[1])[0]
    return out


@functools.partial(jax.jit, static_argnames=("apply", "layers"), donate_argnames=("state",))
def _extremes(apply, params, images, valid, state, *, layers):
    acts = apply(params, images)
    out = {}
    for name in layers:
        v = _values(acts[name], valid)
        lo = jnp.min(jnp.where(jnp.isfinite(v), v, jnp.inf), axis=1)
        out[name] = (jnp.minimum(state[name][0], lo), jnp.maximum(state[name][1], jnp.max(v, axis=1)))
    return out


@functools.partial(jax.jit, static_argnames=("apply", "layers", "bins"), donate_argnames=("state",))
def _histogram(apply, params, images, valid, lo, hi, state, *, layers, bins):
    acts = apply(params, images)
    out = {}
    for name in layers:
        v = _values(acts[name], valid)  # [u, m]
        width = jnp.maximum(hi[name] - lo[name], 1e-12)[:, None]
        b = jnp.clip(jnp.floor((v - lo[name][:, None]) / width * bins), 0, bins - 1).astype(jnp.int32)
        ids = b + bins * jnp.arange(v.shape[0], dtype=jnp.int32)[:, None]
        counts = jax.ops.segment_sum(jnp.isfinite(v).astype(jnp.int32).reshape(-1), ids.reshape(-1),
                                     num_segments=v.shape[0] * bins)  # fmt: skip
        out[name] = state[name] + counts.reshape(v.shape[0], bins)
    return out


# -- pass 2: intersections and areas -------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("apply", "layers", "concepts"), donate_argnames=("state",))
def _overlaps(apply, params, images, valid, maps, annotated, thresholds, interp, state, *, layers, concepts):
    acts = apply(params, images)
    b, n_maps, sh, sw = maps.shape
    out = {}
    for name in layers:
        ry, rx = interp[name]
        a = jnp.transpose(acts[name].astype(jnp.float32), (0, 3, 1, 2))  # [b, u, h, w]
        up = jnp.einsum("Yy,buyx,Xx->buYX", ry, a, rx)
        masks = (up > thresholds[name][None, :, None, None]) & valid[:, None, None, None]  # [b, u, sh, sw]
        units = masks.shape[1]
        flat = jnp.transpose(masks, (0, 2, 3, 1)).reshape(b * sh * sw, units).astype(jnp.float32)
        inter = sum(
            jax.ops.segment_sum(flat, maps[:, k].reshape(-1), num_segments=concepts) for k in range(n_maps)
        )
        area = jnp.einsum("bu,bk->uk", masks.sum(axis=(2, 3)).astype(jnp.float32),
                          (annotated & valid[:, None]).astype(jnp.float32))  # fmt: skip
        i0, a0 = state[name]
        out[name] = (i0 + inter.T, a0 + area)
    return out


@on_mesh
def dissect(
    model: Model,
    concepts: Any,
    layers: str | Sequence[str],
    *,
    quantile: float = 0.005,
    iou_threshold: float = 0.04,
    chunk_size: int = 16,
    exact_limit: int = EXACT_LIMIT,
    progress: bool = True,
    mesh=None,
) -> DissectResult:
    """Network Dissection of ``layers`` over concept data in the Broden layout.

    Args:
      model: a :class:`~cnnjax.Model`.
      concepts: a :class:`~cnnjax.data.BrodenData` or its folder (:func:`~cnnjax.data.load_broden`).
      layers: one spatial layer or several, dissected together.
      quantile: the share of each unit's activations above its threshold (0.005: the top 0.5%).
      iou_threshold: the IoU above which a unit detects its best concept (0.04).
      chunk_size: images per compiled call (memory: ``chunk_size x units x mask pixels``).
      exact_limit: the most activations per unit kept for the exact threshold; above, the
        histogram estimate (see the module's notes), with its error bound in the result.
      progress: progress bars on stderr.
      mesh: a ``jax.sharding.Mesh``: each chunk's images (and masks) are split over its first
        axis (``chunk_size`` rounded up to a multiple of its size); the same result as on one
        device.

    Returns:
      A :class:`DissectResult`.

    Raises:
      ValueError: an unknown or non-spatial layer, masks of another aspect than the model's
        input, bad numbers, or a data set problem (named by :func:`~cnnjax.data.load_broden`).

    Example:
      >>> import tempfile
      >>> from cnnjax.testing import tiny_cnn, write_broden
      >>> data = write_broden(tempfile.mkdtemp(), n=6)
      >>> result = dissect(tiny_cnn(), data, "conv3", progress=False)
      >>> result.iou["conv3"].shape, result.concepts["conv3"].shape
      ((16, 10), (16,))
    """
    spec = model.spec
    data = concepts if isinstance(concepts, BrodenData) else load_broden(concepts)
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if not layers:
        raise ValueError("give at least one layer")
    layers = tuple(check_spatial_layer(spec, layer) for layer in layers)
    quantile = check_float(quantile, "quantile", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    iou_threshold = check_float(iou_threshold, "iou_threshold", lo=0.0, hi=1.0)
    chunk_size = min(check_positive_int(chunk_size, "chunk_size"), len(data))
    chunk_size = chunk_for_mesh(mesh, chunk_size)
    exact_limit = check_int(exact_limit, "exact_limit", lo=1)
    (H, W), (sh, sw) = spec.input_size, data.mask_size
    if abs(sh / sw - H / W) > 1e-6:
        raise ValueError(f"the masks are {sh}x{sw} but the model takes {H}x{W} images: not the same aspect")
    collection = data.images()
    n = len(data)

    def chunks(desc):
        for start in tqdm(
            range(0, n, chunk_size), desc=desc, disable=not progress, file=sys.stderr, leave=False
        ):
            stop = min(start + chunk_size, n)
            images = collection.read(range(start, stop), spec, whole=True)
            _, (images, valid) = shard_rows(
                mesh, pad_rows(images, chunk_size), np.arange(chunk_size) < stop - start
            )
            yield start, stop, images, valid

    units = {name: spec.layer(name).shape[-1] for name in layers}
    positions = {name: math.prod(spec.layer(name).shape[:2]) for name in layers}
    m = {name: max(1, math.ceil(quantile * n * positions[name])) for name in layers}
    thresholds, errors = {}, {}
    exact = [name for name in layers if m[name] <= exact_limit]
    if exact:
        state = {name: jnp.full((units[name], m[name]), -jnp.inf, jnp.float32) for name in exact}
        for _, _, images, valid in chunks("thresholds"):
            state = _top_values(model.apply, model.params, images, valid, state, layers=tuple(exact))
        for name in exact:
            thresholds[name] = np.asarray(state[name][:, -1])
            errors[name] = np.zeros(units[name], np.float32)
    estimated = tuple(name for name in layers if name not in exact)
    if estimated:
        state = {
            name: (jnp.full(units[name], jnp.inf), jnp.full(units[name], -jnp.inf)) for name in estimated
        }
        for _, _, images, valid in chunks("activation range"):
            state = _extremes(model.apply, model.params, images, valid, state, layers=estimated)
        lo, hi = {name: state[name][0] for name in estimated}, {name: state[name][1] for name in estimated}
        hist = {name: jnp.zeros((units[name], BINS), jnp.int32) for name in estimated}
        for _, _, images, valid in chunks("thresholds"):
            hist = _histogram(
                model.apply, model.params, images, valid, lo, hi, hist, layers=estimated, bins=BINS
            )
        for name in estimated:
            above = np.cumsum(np.asarray(hist[name])[:, ::-1], axis=1)[:, ::-1]  # counts at or above each bin
            k = np.array(
                [np.nonzero(row >= m[name])[0].max() for row in above]
            )  # the bin holding the m-th value
            width = (np.asarray(hi[name]) - np.asarray(lo[name])) / BINS
            thresholds[name] = (np.asarray(lo[name]) + k * width).astype(np.float32)
            errors[name] = width.astype(np.float32)

    interp = {}
    for name in layers:
        # A centre c in input pixels is at (c + 0.5) * sh / H - 0.5 in mask pixels.
        ys, xs = (np.asarray(c, np.float64) for c in theoretical(model)[name].centres)
        ry = interp_matrix((ys + 0.5) * sh / H - 0.5, sh)
        rx = interp_matrix((xs + 0.5) * sw / W - 0.5, sw)
        interp[name] = (jnp.asarray(ry), jnp.asarray(rx))
    n_concepts = len(data.names)
    state = {
        name: (jnp.zeros((units[name], n_concepts)), jnp.zeros((units[name], len(data.categories))))
        for name in layers
    }
    t = {name: jnp.asarray(thresholds[name]) for name in layers}
    concept_area = np.zeros(n_concepts)  # each concept's pixels (only images of its category have it)
    for start, stop, images, valid in chunks("overlaps"):
        maps, annotated = data.concept_maps(range(start, stop))
        concept_area += np.bincount(maps.reshape(-1), minlength=n_concepts)[:n_concepts]
        _, (maps, annotated) = shard_rows(mesh, pad_rows(maps, chunk_size), pad_rows(annotated, chunk_size))
        state = _overlaps(model.apply, model.params, images, valid, maps, annotated, t, interp, state,
                          layers=layers, concepts=n_concepts)  # fmt: skip

    category = np.asarray(data.concept_category)
    iou, best, best_iou, detectors = {}, {}, {}, {}
    for name in layers:
        inter, area = (np.asarray(x, np.float64) for x in state[name])
        unit_area = np.where(category[None, :] >= 0, area[:, np.maximum(category, 0)], 0.0)  # [u, C]
        union = unit_area + concept_area[None, :] - inter
        scores = np.where((union > 0) & (category[None, :] >= 0), inter / np.maximum(union, 1e-12), 0.0)
        iou[name] = scores.astype(np.float32)
        best[name] = scores.argmax(axis=1).astype(np.int32)
        best_iou[name] = scores.max(axis=1).astype(np.float32)
        detectors[name] = best_iou[name] > iou_threshold
    categories = tuple(data.categories[c] if c >= 0 else "" for c in category)
    return DissectResult(layers, thresholds, iou, best, best_iou, detectors, tuple(data.names), categories,
                         errors, n, iou_threshold)  # fmt: skip


def semantic_type(name: str, category: str) -> str | None:
    """The semantic type (:data:`SEMANTIC_TYPES`) of a Broden concept: its category's
    (:data:`CATEGORY_TYPES`), "region or surface" for the objects in :data:`SURFACE_CONCEPTS`;
    None for no category.

    Example:
      >>> semantic_type("red", "color"), semantic_type("sky", "object"), semantic_type("car", "object")
      ('simple elements and colours', 'region or surface', 'object')
    """
    if category == "object" and name in SURFACE_CONCEPTS:
        return "region or surface"
    return CATEGORY_TYPES.get(category)


def semantic_types(result: DissectResult) -> dict[str, dict[str, int]]:
    """Per layer, how many of its detector units are of each semantic type (Zhou et al. 2015,
    Fig. 5; Bau et al. 2017, Fig. 5): the input of :func:`cnnjax.report.type_chart`.

    Example:
      >>> import tempfile
      >>> from cnnjax.testing import tiny_cnn, write_broden
      >>> result = dissect(tiny_cnn(), write_broden(tempfile.mkdtemp(), n=6), "conv1", progress=False)
      >>> types = semantic_types(result)
      >>> list(types), set(types["conv1"]) <= set(SEMANTIC_TYPES)
      (['conv1'], True)
    """
    out = {}
    for layer in result.layers:
        counts = dict.fromkeys(SEMANTIC_TYPES, 0)
        for unit in np.nonzero(result.detectors[layer])[0]:
            c = int(result.concepts[layer][unit])
            kind = semantic_type(result.concept_names[c], result.concept_categories[c])
            if kind is not None:
                counts[kind] += 1
        out[layer] = {k: v for k, v in counts.items() if v}
    return out
