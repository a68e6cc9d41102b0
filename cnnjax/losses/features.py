"""Feature-space losses (minimised): Gram matrices, style, content, inversion distance.

All take activations as the model returns them (NHWC for spatial layers, ``[n, d]`` for
vectors) and return one value per example, so they drop into any optax loop with ``.sum()``
and into ``jax.vmap`` unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["gram", "style", "content", "inversion", "softmax_smoothing"]


def _flat(features: jax.Array, what: str) -> jax.Array:
    """``[n, h, w, c] -> [n, h*w, c]``; vectors ``[n, d] -> [n, 1, d]``."""
    f = jnp.asarray(features, jnp.float32)
    if f.ndim == 4:
        return f.reshape(f.shape[0], -1, f.shape[-1])
    if f.ndim == 2:
        return f[:, None, :]
    raise ValueError(f"{what} needs features [n, h, w, c] or [n, d], got shape {f.shape}")


def gram(features: jax.Array) -> jax.Array:
    r"""Gram matrix of each example's features, normalised by the number of positions.

    .. math:: G = \frac{1}{HW} V^\top V, \qquad V \in \mathbb{R}^{HW \times C}

    (``V`` holds one row per spatial position). Dividing by ``HW`` makes ``G`` the mean outer
    product of the feature vectors, so images of different sizes have comparable Gram
    matrices (Gatys et al. 2015 leave ``G`` unnormalised and divide the loss instead).

    Args:
      features: ``[n, h, w, c]`` (or ``[n, c]``, one position).

    Returns:
      ``[n, c, c]``.
    """
    v = _flat(features, "gram")
    return jnp.einsum("npi,npj->nij", v, v) / v.shape[1]


def style(features: jax.Array, target_gram: jax.Array) -> jax.Array:
    r"""Style loss: mean squared difference between Gram matrices.

    .. math:: E = \frac{1}{C^2} \sum_{i,j} (G_{ij} - A_{ij})^2

    with ``G = gram(features)`` and ``A`` the target. With Gram matrices normalised by the
    number of positions this is 4 times Gatys et al.'s :math:`E_l = \frac{1}{4 N^2 M^2}
    \sum (G - A)^2` (their ``N`` channels, ``M`` positions, unnormalised ``G``).

    Args:
      features: ``[n, h, w, c]``.
      target_gram: ``[c, c]`` or ``[n, c, c]`` (e.g. ``gram(style_features)``).

    Returns:
      ``[n]``.
    """
    g = gram(features)
    target = jnp.asarray(target_gram, jnp.float32)
    if target.ndim == 2:
        target = target[None]
    if target.shape[1:] != g.shape[1:]:
        raise ValueError(f"target Gram matrix has shape {target.shape}, features give {g.shape}")
    return jnp.mean((g - target) ** 2, axis=(1, 2))


def content(features: jax.Array, target: jax.Array) -> jax.Array:
    r"""Content loss: mean squared difference between feature maps.

    .. math:: L = \frac{1}{HWC} \sum (F - P)^2

    Args:
      features: ``[n, ...]``.
      target: the same shape, or without the batch axis.

    Returns:
      ``[n]``.
    """
    f = jnp.asarray(features, jnp.float32)
    t = jnp.asarray(target, jnp.float32)
    if t.ndim == f.ndim - 1:
        t = t[None]
    if t.shape[1:] != f.shape[1:]:
        raise ValueError(f"content target has shape {t.shape}, features have {f.shape}")
    return jnp.mean((f - t) ** 2, axis=tuple(range(1, f.ndim)))


def inversion(features: jax.Array, target: jax.Array) -> jax.Array:
    r"""Normalised reconstruction error of a code (Mahendran & Vedaldi 2015, eq. 1).

    .. math:: \ell = \frac{\|\Phi(x) - \Phi_0\|^2}{\|\Phi_0\|^2}

    0 is a perfect reconstruction; 1 is what the all-zero code would score.

    Args:
      features: ``Phi(x)``, ``[n, ...]``.
      target: ``Phi_0``, the same shape or without the batch axis.

    Returns:
      ``[n]``.
    """
    f = jnp.asarray(features, jnp.float32)
    t = jnp.asarray(target, jnp.float32)
    if t.ndim == f.ndim - 1:
        t = t[None]
    if t.shape[1:] != f.shape[1:]:
        raise ValueError(f"inversion target has shape {t.shape}, features have {f.shape}")
    axes = tuple(range(1, f.ndim))
    return jnp.sum((f - t) ** 2, axis=axes) / jnp.maximum(jnp.sum(t * t, axis=axes), 1e-12)


def softmax_smoothing(features: jax.Array, temperature: float = 1.0) -> jax.Array:
    r"""Raise the entropy of peaky activations with a softmax (Wang, Li & Vasconcelos, CVPR 2021).

    .. math:: \sigma(F)_{p,k} = HW \cdot \frac{\exp(F_{p,k} / \tau)}{\sum_{q} \exp(F_{q,k} / \tau)}

    a softmax over the spatial positions of each channel, scaled by the number of positions so
    that a flat channel maps to ones. Residual networks produce feature maps with a few large
    peaks (low entropy), which makes Gram-matrix style losses latch onto those peaks; Wang et
    al. show that smoothing the activations this way restores the stylisation quality of
    non-VGG networks.

    Args:
      features: ``[n, h, w, c]``.
      temperature: ``tau > 0``; larger is smoother.

    Returns:
      ``[n, h, w, c]``.
    """
    f = jnp.asarray(features, jnp.float32)
    if f.ndim != 4:
        raise ValueError(f"softmax_smoothing needs features [n, h, w, c], got shape {f.shape}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n, h, w, c = f.shape
    p = jax.nn.softmax(f.reshape(n, h * w, c) / temperature, axis=1)
    return (p * (h * w)).reshape(n, h, w, c)
