"""Unit segmentation (Zhou et al., ICLR 2015, Sec. 3.1): a unit's activation, placed at its
receptive fields' centres and upsampled to the image, thresholded into a segment."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cnnjax._src.checks import check_float
from cnnjax._src.contract import Model
from cnnjax._src.targets import apply_interp, check_spatial_layer, check_units
from cnnjax.receptive_field import centre_matrices

__all__ = ["UnitSegmentationResult", "unit_segmentation"]


class UnitSegmentationResult(NamedTuple):
    """Result of :func:`unit_segmentation`.

    Attributes:
      masks: bool ``[n, units, H, W]``: the segments.
      maps: float32 ``[n, units, H, W]``: the upsampled activations.
      thresholds: float32 ``[units]``: the activation level each unit was cut at.
    """

    masks: jax.Array
    maps: jax.Array
    thresholds: jax.Array


@functools.partial(jax.jit, static_argnames=("apply", "layer"))
def _segment(apply, params, images, units, fraction, ry, rx, *, layer):
    a = jnp.take(apply(params, images)[layer], units, axis=3)  # [n, h, w, u]
    maps = apply_interp(jnp.transpose(a, (0, 3, 1, 2)), ry, rx)
    thresholds = fraction * jnp.max(maps, axis=(0, 2, 3))
    masks = (maps >= thresholds[None, :, None, None]) & (maps > 0)
    return masks, maps, thresholds


def unit_segmentation(
    model: Model, images, layer: str, units, *, threshold: float = 0.5
) -> UnitSegmentationResult:
    """Segment images by the activations of several units of one layer at once.

    Each unit's activation map is upsampled to the input by linear interpolation between the
    centres of the positions' theoretical receptive fields
    (:func:`cnnjax.receptive_field.theoretical`), and thresholded at ``threshold`` times the
    unit's largest activation over the given images:

        mask_u(p) = A_u(p) >= threshold * max_{images, p'} A_u(p')   (and A_u(p) > 0)

    Units are an array argument: new units of the same count never recompile.

    Args:
      model: a :class:`~cnnjax.Model`.
      images: float32 ``[n, H, W, c]`` in [0, 1].
      layer: a spatial layer.
      units: channel indices ``[u]`` (or one int).
      threshold: in (0, 1].

    Returns:
      A :class:`UnitSegmentationResult`.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> images = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
      >>> seg = unit_segmentation(tiny_cnn(), images, "conv3", [3, 7, 11])
      >>> seg.masks.shape, seg.masks.dtype, seg.thresholds.shape
      ((2, 3, 32, 32), dtype('bool'), (3,))
    """
    spec = model.spec
    images = spec.check_images(images)
    layer = check_spatial_layer(spec, layer)
    u = check_units(spec, layer, units)
    threshold = check_float(threshold, "threshold", lo=0.0, hi=1.0, lo_open=True)
    ry, rx = centre_matrices(model, layer)
    masks, maps, thresholds = _segment(model.apply, model.params, images, jnp.asarray(u, jnp.int32),
                                       jnp.float32(threshold), ry, rx, layer=layer)  # fmt: skip
    return UnitSegmentationResult(masks, maps, thresholds)
