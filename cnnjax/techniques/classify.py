"""Classification: the top-k classes of a batch of images, in one compiled call."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from cnnjax._src.contract import Model

__all__ = ["classify"]


@functools.partial(jax.jit, static_argnames=("apply", "k"))
def _top_k(apply, params, images, k):
    probs = jax.nn.softmax(apply(params, images)["logits"], axis=-1)
    return jax.lax.top_k(probs, k)


def classify(model: Model, images, k: int = 5) -> tuple[jax.Array, jax.Array]:
    """The ``k`` most probable classes of each image.

    ``p = softmax(logits)``; returns the ``k`` largest ``p`` per image, in decreasing order.

    Args:
      model: a :class:`~cnnjax.Model`.
      images: float32 ``[n, h, w, c]`` in [0, 1] (checked before any work).
      k: how many classes, ``1 <= k <= num_classes``.

    Returns:
      ``(probs, indices)``, each ``[n, k]``: float32 probabilities and int32 class indices
      (``model.spec.class_name(i)`` names them).

    Example::

      probs, idx = cnnjax.classify(model, cnnjax.load_image("cat.jpg", 224, resize=256))
    """
    images = model.spec.check_images(images)
    if not isinstance(k, int) or not 1 <= k <= model.spec.num_classes:
        raise ValueError(f"k must be an int in 1..{model.spec.num_classes}, got {k!r}")
    probs, idx = _top_k(model.apply, model.params, images, k)
    return probs, idx.astype(jnp.int32)
