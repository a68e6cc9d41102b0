"""Classification: the top classes of a batch of images, in one compiled call."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cnnjax._src.checks import check_int
from cnnjax._src.contract import Model

__all__ = ["ClassifyResult", "classify", "probabilities"]


class ClassifyResult(NamedTuple):
    """What :func:`classify` returns (unpacks as ``probs, classes = classify(...)``).

    Attributes:
      probs: float32 ``[n, top_k]``: the probabilities, in decreasing order.
      classes: int32 ``[n, top_k]``: the class indices (``model.spec.class_name(i)`` names them).
    """

    probs: jax.Array
    classes: jax.Array


@functools.partial(jax.jit, static_argnames=("apply", "k"))
def _top_k(apply, params, images, k):
    probs = jax.nn.softmax(apply(params, images)["logits"], axis=-1)
    p, idx = jax.lax.top_k(probs, k)
    return p, idx.astype(jnp.int32), jnp.all(jnp.isfinite(probs))


@functools.partial(jax.jit, static_argnames=("apply",))
def _probs(apply, params, images):
    probs = jax.nn.softmax(apply(params, images)["logits"], axis=-1)
    return probs, jnp.all(jnp.isfinite(probs))


def _check_finite(model: Model, finite) -> None:
    if not bool(finite):
        raise ValueError(
            f"{model.spec.name!r} gives non-finite probabilities for these images (NaN or infinite "
            "weights or activations?); no classes are reported"
        )


def probabilities(model: Model, images) -> jax.Array:
    """The class probabilities ``softmax(logits)`` of each image, float32 ``[n, classes]``, in one
    compiled call; non-finite ones are an error, as in :func:`classify`.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> p = probabilities(tiny_cnn(), np.full((2, 32, 32, 3), 0.5, np.float32))
      >>> p.shape, bool(abs(float(p[0].sum()) - 1) < 1e-5)
      ((2, 10), True)
    """
    probs, finite = _probs(model.apply, model.params, model.spec.check_images(images))
    _check_finite(model, finite)
    return probs


def classify(model: Model, images, top_k: int = 5) -> ClassifyResult:
    """The ``top_k`` most probable classes of each image.

    ``p = softmax(logits)``; returns the ``top_k`` largest ``p`` per image, in decreasing order.

    Args:
      model: a :class:`~cnnjax.Model`.
      images: float32 ``[n, h, w, c]`` in [0, 1] (checked before any work).
      top_k: how many classes, ``1 <= top_k <= num_classes``.

    Returns:
      A :class:`ClassifyResult` ``(probs, classes)``, each ``[n, top_k]``.

    Raises:
      ValueError: bad images or ``top_k``; a model whose probabilities are not finite (NaN
        weights, an overflow): never a confident answer made of NaN.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> probs, classes = classify(tiny_cnn(), np.full((2, 32, 32, 3), 0.5, np.float32), top_k=3)
      >>> probs.shape, classes.dtype
      ((2, 3), dtype('int32'))
    """
    images = model.spec.check_images(images)
    top_k = check_int(top_k, "top_k", lo=1, hi=model.spec.num_classes)
    probs, idx, finite = _top_k(model.apply, model.params, images, top_k)
    _check_finite(model, finite)
    return ClassifyResult(probs, idx)
