"""Classification losses on logits, one value per example: what attacks and training minimise.

* :func:`softmax_cross_entropy` -- ``-log softmax(z)_y`` (training's mean cross-entropy is its mean).
* :func:`complement_cross_entropy` -- ``-log(1 - softmax(z)_y)``: small once ``y`` is unlikely.
* :func:`margin` -- ``z_y - max_{i != y} z_i``, positive iff ``y`` is the top-1 class.
* :func:`carlini_wagner_loss` -- the margin loss f6 of Carlini & Wagner (2017), targeted or not.

Each takes ``logits [..., K]`` and integer ``labels [...]`` and returns ``[...]``; none needs any
other part of cnnjax, so they drop into a user's own optax loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from cnnjax._src.checks import check_labels

__all__ = [
    "carlini_wagner_loss",
    "complement_cross_entropy",
    "margin",
    "softmax_cross_entropy",
]


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Softmax cross-entropy of integer labels, one value per example.

    .. math:: \ell(z, y) = -\log \operatorname{softmax}(z)_y = \log \sum_k e^{z_k} - z_y

    Args:
      logits: ``[..., K]`` unnormalised scores z.
      labels: ``[...]`` integer classes y in [0, K).

    Returns:
      ``[...]`` float losses, >= 0.

    Example:
      >>> loss = softmax_cross_entropy(jnp.array([[2.0, 0.0]]), jnp.array([0]))
      >>> loss.shape, round(float(loss[0]), 4)  # log(1 + e^-2)
      ((1,), 0.1269)

    Reference: Goodfellow, Bengio & Courville (2016), "Deep Learning", section 6.2.2.3.
    """
    check_labels(logits, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def complement_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Cross-entropy of the event "not class y", one value per example.

    .. math:: \ell(z, y) = -\log\big(1 - \operatorname{softmax}(z)_y\big)
              = \log \sum_k e^{z_k} - \log \sum_{k \ne y} e^{z_k}

    Minimising it pushes the probability of ``y`` to 0 and, unlike ``-cross_entropy``, it is
    bounded below (by 0), so an untargeted attack that minimises it has a minimiser.

    Args:
      logits: ``[..., K]`` scores, K >= 2.
      labels: ``[...]`` integer classes.

    Returns:
      ``[...]`` float losses, >= 0.

    Example:
      >>> loss = complement_cross_entropy(jnp.array([[2.0, 0.0]]), jnp.array([1]))
      >>> round(float(loss[0]), 4)  # log(1 + e^-2)
      0.1269
    """
    check_labels(logits, labels)
    others = ~jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
    return jax.nn.logsumexp(logits, axis=-1) - jax.nn.logsumexp(logits, axis=-1, where=others)


def margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""How far class ``y`` leads the best other class: positive iff ``y`` is the unique top-1.

    .. math:: m(z, y) = z_y - \max_{i \ne y} z_i

    Args:
      logits: ``[..., K]`` scores, K >= 2.
      labels: ``[...]`` integer classes.

    Returns:
      ``[...]`` float margins.

    Example:
      >>> margin(jnp.array([[3.0, 1.0, 2.5]]), jnp.array([0])).tolist()
      [0.5]
    """
    check_labels(logits, labels)
    own = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    others = ~jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
    return own - jnp.max(jnp.where(others, logits, -jnp.inf), axis=-1)


def carlini_wagner_loss(
    logits: jax.Array, labels: jax.Array, *, targeted: bool = True, kappa: float = 0.0
) -> jax.Array:
    r"""The margin loss f6 of Carlini & Wagner (2017), one value per example.

    .. math::

        f_{\text{targeted}}(z, t) = \max(\max_{i \ne t} z_i - z_t, -\kappa) = \max(-m(z, t), -\kappa)

        f_{\text{untargeted}}(z, y) = \max(z_y - \max_{i \ne y} z_i, -\kappa) = \max(m(z, y), -\kappa)

    with :func:`margin` m. It reaches its minimum, ``-kappa``, once the target leads every
    other class by ``kappa`` (targeted) or some class leads ``y`` by ``kappa`` (untargeted),
    and then stops pulling, so the distance term of the attack takes over.

    Args:
      logits: ``[..., K]`` pre-softmax scores Z (CW use logits, not probabilities).
      labels: ``[...]`` the target classes t (targeted) or the true classes y (untargeted).
      targeted: which of the two forms.
      kappa: the confidence margin, >= 0.

    Returns:
      ``[...]`` float losses, >= ``-kappa``.

    Example:
      >>> carlini_wagner_loss(jnp.array([[3.0, 1.0]]), jnp.array([1])).tolist()  # class 1 trails by 2
      [2.0]

    Reference: Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural
    Networks", IEEE S&P, objective function f6.
    """
    m = margin(logits, labels)
    return jnp.maximum(m if not targeted else -m, -kappa)
