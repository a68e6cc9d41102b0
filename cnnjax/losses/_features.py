"""Feature-space losses (minimised): Gram matrices, style, content, inversion distance.

All take activations as the model returns them (NHWC for spatial layers, ``[n, d]`` for
vectors) and return one value per example, so they drop into any optax loop with ``.sum()``
and into ``jax.vmap`` unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cnnjax._src.checks import check_float, is_concrete

__all__ = ["gram", "style", "content", "inversion", "softmax_smoothing"]


def _flat(features: jax.Array, what: str) -> jax.Array:
    """``[n, h, w, c] -> [n, h*w, c]``; vectors ``[n, d] -> [n, 1, d]``."""
    f = jnp.asarray(features, jnp.float32)
    if f.ndim == 4:
        return f.reshape(f.shape[0], -1, f.shape[-1])
    if f.ndim == 2:
        return f[:, None, :]
    raise ValueError(f"{what} needs features [n, h, w, c] or [n, d], got shape {f.shape}")


def _with_target(features, target, what: str) -> tuple[jax.Array, jax.Array]:
    """Features and a target of the same shape (the target may lack the batch axis)."""
    f = jnp.asarray(features, jnp.float32)
    t = jnp.asarray(target, jnp.float32)
    if t.ndim == f.ndim - 1:
        t = t[None]
    if t.shape[1:] != f.shape[1:]:
        raise ValueError(f"{what} target has shape {t.shape}, features have {f.shape}")
    return f, t


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
    f, t = _with_target(features, target, "content")
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
    f, t = _with_target(features, target, "inversion")
    axes = tuple(range(1, f.ndim))
    return jnp.sum((f - t) ** 2, axis=axes) / jnp.maximum(jnp.sum(t * t, axis=axes), 1e-12)


def softmax_smoothing(features: jax.Array, temperature: float = 1.0) -> jax.Array:
    r"""Raise the entropy of peaky activations with a softmax (after Wang, Li & Vasconcelos,
    "Rethinking and Improving the Robustness of Image Style Transfer", CVPR 2021).

    .. math:: \sigma(F)_{p,k} = C \cdot \frac{\exp(F_{p,k} / (\tau s))}{\sum_{j} \exp(F_{p,j} / (\tau s))}

    a softmax over the ``C`` channels at each position ``p``, with the temperature scaled by
    the standard deviation ``s`` of the example's whole feature map (so the transformation
    does not depend on the layer's scale), times ``C`` so that a flat feature vector maps to
    ones. Residual networks produce feature maps dominated by a few large peaks (low entropy);
    Gram matrices of such maps latch onto the peaks and style transfer comes out weak. Wang et
    al. smooth the activations with a softmax; this is the variant that transferred the style
    images' palettes and textures on the bundled EfficientNet-Lite0 (a softmax over positions
    instead amplified the peaks and gave noise in a trial on the same model while the default was
    chosen).

    Args:
      features: ``[n, h, w, c]``.
      temperature: ``tau > 0`` (a number or a traced scalar); larger is smoother.

    Returns:
      ``[n, h, w, c]``, positive, each position's vector summing to ``C``.
    """
    f = jnp.asarray(features, jnp.float32)
    if f.ndim != 4:
        raise ValueError(f"softmax_smoothing needs features [n, h, w, c], got shape {f.shape}")
    if is_concrete(temperature):
        temperature = check_float(temperature, "temperature", lo=0.0, lo_open=True)
    s = jnp.std(f, axis=(1, 2, 3), keepdims=True) + 1e-6
    return jax.nn.softmax(f / (s * temperature), axis=-1) * f.shape[-1]
