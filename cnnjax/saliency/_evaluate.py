"""How good is a saliency map: deletion and insertion AUC (Petsiuk et al. 2018) and the pointing
game (Zhang et al. 2016)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import check_float, check_int, check_positive_int
from cnnjax._src.chunks import chunked_map
from cnnjax._src.contract import Model
from cnnjax._src.sharding import on_mesh, shard_rows, unpad_rows
from cnnjax._src.targets import baseline_image, class_table
from cnnjax.transforms import blur

__all__ = ["CurveResult", "deletion", "insertion", "pointing_game"]


class CurveResult(NamedTuple):
    """Result of :func:`deletion` / :func:`insertion`.

    Attributes:
      auc: float32 ``[n, targets]``: area under the curve, ``fractions`` from 0 to 1.
      curves: float32 ``[n, targets, steps + 1]``: the class probability at each step.
      fractions: float32 ``[steps + 1]``: the fraction of pixels deleted / inserted.
    """

    auc: jax.Array
    curves: jax.Array
    fractions: jax.Array


@functools.partial(jax.jit, static_argnames=("apply", "steps", "insert", "batch"))
def _curves(apply, params, images, maps, classes, start, *, steps, insert, batch):
    n, t = classes.shape
    hw = maps.shape[2] * maps.shape[3]
    # rank[p] = position of pixel p in decreasing saliency (ties: row-major order).
    order = jnp.argsort(-maps.reshape(n, t, hw), axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1).reshape(n, t, *maps.shape[2:])
    counts = jnp.round(jnp.linspace(0.0, 1.0, steps + 1) * hw).astype(jnp.int32)

    def probs_at(count):  # every image x target with ``count`` pixels changed
        changed = (rank < count)[..., None]  # [n, t, h, w, 1]
        src, dst = (start, images) if insert else (images, start)
        x = jnp.where(changed, dst[:, None], src[:, None]).reshape(n * t, *images.shape[1:])
        p = jax.nn.softmax(apply(params, x)["logits"], axis=-1).reshape(n, t, -1)
        return jnp.take_along_axis(p, classes[..., None], axis=2)[..., 0]

    curves = jnp.transpose(chunked_map(probs_at, counts, batch), (1, 2, 0))
    fractions = counts.astype(jnp.float32) / hw
    auc = jnp.sum((curves[..., 1:] + curves[..., :-1]) * 0.5 * jnp.diff(fractions)[None, None], axis=-1)
    return auc, curves, fractions


@on_mesh
def _evaluate(model, images, maps, classes, steps, insert, chunk_size, mesh) -> CurveResult:
    spec = model.spec
    images = spec.check_images(images)
    maps = jnp.asarray(maps, jnp.float32)
    n, H, W, _ = images.shape
    if maps.ndim != 4 or maps.shape[0] != n or maps.shape[2:] != (H, W):
        raise ValueError(
            f"maps must be [images, targets, {H}, {W}] (the images' size: upsample them with "
            f"upsample=True or cnnjax.saliency.upsample_maps), got shape {tuple(maps.shape)}"
        )
    if classes is None:
        raise ValueError("classes is required: the class each map explains, e.g. the ones it was made for")
    idx = class_table(spec, classes, n)
    if idx.shape[1] != maps.shape[1]:
        raise ValueError(f"{idx.shape[1]} classes for {maps.shape[1]} maps per image")
    steps = check_int(steps, "steps", lo=1, hi=H * W)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if insert:
        start = blur(images, 5.0, radius=5, mode="edge")  # the paper's 11-pixel kernel, sigma 5
    else:
        start = jnp.broadcast_to(jnp.asarray(baseline_image(spec)), images.shape)
    batch = max(1, min(steps + 1, chunk_size // max(1, n * idx.shape[1])))
    n, (images, maps, idx, start) = shard_rows(mesh, images, maps, idx, start)
    auc, curves, fractions = _curves(model.apply, model.params, images, maps, jnp.asarray(idx), start,
                                     steps=steps, insert=insert, batch=batch)  # fmt: skip
    auc, curves = unpad_rows((auc, curves), n)
    return CurveResult(auc, curves, fractions)


def deletion(model: Model, images, maps, classes, *, steps: int = 224, chunk_size: int = 32,
             mesh=None) -> CurveResult:  # fmt: skip
    """Deletion metric (Petsiuk et al., BMVC 2018, RISE): lower is better.

    Pixels are replaced, most salient first, by the model's mean colour (the image it maps
    to zero input); the curve is the class probability after each of ``steps`` equal
    increments, and the score its area (trapezoidal rule over the deleted fraction). The
    paper uses 224 pixels per step at 224x224, i.e. ``steps=224``. All steps of all images
    and targets run in one compiled call (``lax.map`` over steps, vmapped in chunks).

    Args:
      model: a :class:`~cnnjax.Model`.
      images: float32 ``[n, H, W, c]`` in [0, 1].
      maps: ``[n, targets, H, W]`` saliency at the images' size.
      classes: the class each map explains (as for :func:`cnnjax.saliency.cam`; e.g. ``idx[:, :1]``).
      steps: how many increments.
      chunk_size: forward passes per compiled chunk (memory only; the result does not depend on it).
      mesh: a ``jax.sharding.Mesh`` (or the one in context): the images, their maps and classes
        are split over its first axis (padded to a multiple of it, the padding dropped).

    Returns:
      A :class:`CurveResult`.

    Example:
      >>> from cnnjax.saliency import grad_cam
      >>> from cnnjax.testing import tiny_cnn
      >>> model, image = tiny_cnn(), np.random.default_rng(0).random((1, 32, 32, 3), np.float32)
      >>> maps = grad_cam(model, image, 3, upsample=True)
      >>> curve = deletion(model, image, maps, 3, steps=8)
      >>> curve.auc.shape, curve.curves.shape, curve.fractions[:3].tolist()
      ((1, 1), (1, 1, 9), [0.0, 0.125, 0.25])
    """
    return _evaluate(model, images, maps, classes, steps, False, chunk_size, mesh)


def insertion(model: Model, images, maps, classes, *, steps: int = 224, chunk_size: int = 32,
              mesh=None) -> CurveResult:  # fmt: skip
    """Insertion metric (Petsiuk et al. 2018): higher is better.

    Starting from the image blurred by a Gaussian (11 pixels wide, sigma 5, as in the paper),
    the original pixels are put back, most salient first; area under the probability curve.
    Arguments as :func:`deletion`.
    """
    return _evaluate(model, images, maps, classes, steps, True, chunk_size, mesh)


def pointing_game(maps, boxes=None, masks=None, *, tolerance: float = 15.0) -> np.ndarray:
    """Pointing game (Zhang et al., ECCV 2016): does each map's maximum fall on the object?

    A hit when the map's maximum (first in row-major order on ties) lies within ``tolerance``
    pixels (Euclidean) of the object: of its box, or of a pixel of its mask. The usual
    tolerance is 15 pixels; accuracy is ``hits.mean()``.

    Args:
      maps: ``[n, targets, H, W]`` (or ``[n, H, W]``) at the images' size.
      boxes: ``[n, 4]`` (or ``[n, targets, 4]``) ``(top, left, bottom, right)`` in pixels,
        bottom/right exclusive.
      masks: bool ``[n, H, W]`` (or ``[n, targets, H, W]``), instead of boxes.
      tolerance: pixels.

    Returns:
      bool ``[n, targets]`` (``[n]`` for 3-D maps).

    Example:
      >>> maps = np.zeros((2, 32, 32), np.float32)
      >>> maps[0, 10, 20] = maps[1, 30, 2] = 1.0
      >>> pointing_game(maps, boxes=[[5, 15, 15, 25], [5, 15, 15, 25]])
      array([ True, False])
    """
    tolerance = check_float(tolerance, "tolerance", lo=0.0)
    m = np.asarray(maps, np.float32)
    squeeze = m.ndim == 3
    if squeeze:
        m = m[:, None]
    if m.ndim != 4:
        raise ValueError(f"maps must be [n, targets, H, W] or [n, H, W], got shape {np.shape(maps)}")
    if (boxes is None) == (masks is None):
        raise ValueError("give exactly one of boxes and masks")
    n, t, H, W = m.shape
    flat = m.reshape(n, t, -1).argmax(-1)
    py, px = (flat // W).astype(np.float64), (flat % W).astype(np.float64)
    if boxes is not None:
        b = np.asarray(boxes, np.float64)
        if b.shape == (n, 4):
            b = np.broadcast_to(b[:, None], (n, t, 4))
        if b.shape != (n, t, 4):
            raise ValueError(
                f"boxes must be [n, 4] or [n, targets, 4] for maps {m.shape}, got {np.shape(boxes)}"
            )
        dy = np.maximum(np.maximum(b[..., 0] - py, py - (b[..., 2] - 1)), 0.0)
        dx = np.maximum(np.maximum(b[..., 1] - px, px - (b[..., 3] - 1)), 0.0)
        hits = np.hypot(dy, dx) <= tolerance
    else:
        k = np.asarray(masks, bool)
        if k.shape == (n, H, W):
            k = np.broadcast_to(k[:, None], (n, t, H, W))
        if k.shape != (n, t, H, W):
            raise ValueError(
                f"masks must be [n, H, W] or [n, targets, H, W] for maps {m.shape}, got {np.shape(masks)}"
            )
        yy, xx = np.mgrid[:H, :W]
        hits = np.zeros((n, t), bool)
        for i in range(n):
            for j in range(t):
                d2 = (yy - py[i, j]) ** 2 + (xx - px[i, j]) ** 2
                hits[i, j] = bool(np.any(k[i, j] & (d2 <= tolerance**2)))
    return hits[:, 0] if squeeze else hits
