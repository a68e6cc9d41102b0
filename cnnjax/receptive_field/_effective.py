"""Effective receptive fields (Luo et al., NIPS 2016): a unit's input gradient; and the size of a
measured field."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.contract import Model
from cnnjax._src.sharding import on_mesh, shard_rows
from cnnjax._src.targets import check_positions, check_spatial_layer, check_units

__all__ = ["EffectiveResult", "effective", "field_size", "layers_and_units"]


def field_size(field_map, fraction: float = 0.5) -> float:
    """The side of the square with the area where ``field_map >= fraction * max``, in pixels.

    ``sqrt(#{p : m(p) >= fraction * max m})``; 0 for an all-zero map. Empirical and effective
    fields are measured this way, so they compare with theoretical sizes as lengths, as in
    Zhou et al.'s Table 1 (which also reports sides of squares).

    Example:
      >>> field_size(np.pad(np.ones((3, 3)), 2))
      3.0
    """
    m = np.asarray(field_map, np.float64)
    top = float(m.max()) if m.size else 0.0
    if not top > 0:
        return 0.0
    return math.sqrt(float(np.count_nonzero(m >= fraction * top)))


def layers_and_units(spec, layers, units) -> tuple[tuple[str, ...], list[int | None]]:
    """``layers`` (one name or a sequence) and ``units`` (None, one channel for every layer, or
    one per layer; None picks later) checked: spatial layers, channels in range."""
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if not layers:
        raise ValueError("give at least one layer")
    layers = tuple(check_spatial_layer(spec, name) for name in layers)
    if units is None or isinstance(units, (int, np.integer)):
        units = [units] * len(layers)
    units = list(units)
    if len(units) != len(layers):
        raise ValueError(f"give one unit per layer: {len(layers)} layers, {len(units)} units")
    checked = [None if u is None else int(check_units(spec, name, u)[0]) for name, u in zip(layers, units)]
    return layers, checked


class EffectiveResult(NamedTuple):
    """What :func:`effective` returns: one row per layer.

    Attributes:
      maps: float32 ``[L, H, W]``: ``mean over images of sum over colours |d a / d x|``.
      sizes: float ``[L]``: :func:`field_size` of each map.
      positions: int ``[L, 2]``: the ``(y, x)`` position of the unit in its layer.
      layers: the layers, in order.
    """

    maps: np.ndarray
    sizes: np.ndarray
    positions: np.ndarray
    layers: tuple[str, ...]


@functools.partial(jax.jit, static_argnames=("apply", "layers", "all_channels"))
def _centre_grads(apply, params, images, weights, positions, units, *, layers, all_channels):
    """``[L, H, W]``: per layer, the mean over images of sum_colours |d unit / d image|
    (``weights [n]``: 1 / the number of images, 0 for padding).

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
    return jnp.einsum("lnhw,n->lhw", jnp.sum(jnp.abs(g), axis=-1), weights)


@on_mesh
def effective(
    model: Model,
    layers: str | Sequence[str],
    images,
    *,
    units: int | Sequence[int] | None = None,
    position: tuple[int, int] | None = None,
    mesh=None,
) -> EffectiveResult:
    """The effective receptive field (Luo et al., NIPS 2016): a unit's input gradient.

    ``ERF(p) = mean_images sum_colours |d a_{y, x}(image) / d image(p)|`` with ``a_{y, x}`` the
    sum over channels (or one channel of ``units``) of the layer at ``position`` (default: the
    centre position ``(h // 2, w // 2)``), i.e. a gradient signal of one at the centre of the
    output plane. All images and all layers share one backward pass.

    Args:
      model: a :class:`~cnnjax.Model`.
      layers: a spatial layer, or several.
      images: ``[N, H, W, C]`` at the model's input size, in [0, 1].
      units: None (all channels summed), one channel for every layer, or one per layer.
      position: ``(y, x)`` in the layer (default: its centre); one layer only.
      mesh: a ``jax.sharding.Mesh`` (or the one in context): the images are split over its
        first axis (padded to a multiple of it; the padding has weight 0 in the mean).

    Returns:
      An :class:`EffectiveResult`, one row per layer.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> erf = effective(tiny_cnn(), "conv3", np.full((1, 32, 32, 3), 0.5, np.float32))
      >>> erf.maps.shape, float(erf.sizes[0]) <= 9
      ((1, 32, 32), True)
    """
    spec = model.spec
    layers, units = layers_and_units(spec, layers, units)
    if position is not None and len(layers) > 1:
        raise ValueError("position applies to one layer; several layers use their centres")
    all_channels = all(u is None for u in units)
    if not all_channels and any(u is None for u in units):
        raise ValueError("give a unit for every layer or for none")
    images = spec.check_images(images, exact_size=True)
    positions = []
    for name in layers:
        h, w, _ = spec.layer(name).shape
        pos = (h // 2, w // 2) if position is None else tuple(check_positions(position, (h, w), name)[0])
        positions.append(pos)
    n = images.shape[0]
    _, (images, weights) = shard_rows(mesh, images, np.full(n, 1.0 / n, np.float32))
    if mesh is not None:
        weights = weights.at[n:].set(0.0)
    m = _centre_grads(model.apply, model.params, images, weights, jnp.asarray(positions, jnp.int32),
                      jnp.asarray([u or 0 for u in units], jnp.int32), layers=layers,
                      all_channels=all_channels)  # fmt: skip
    m = np.asarray(m)
    return EffectiveResult(
        maps=m,
        sizes=np.asarray([field_size(x) for x in m]),
        positions=np.asarray(positions, np.int64),
        layers=layers,
    )
