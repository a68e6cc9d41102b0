"""Losses (minimised): pure functions of images, activations or logits, one value per example.

Each works inside your own optax loop without any other part of cnnjax::

    loss = losses.content(acts["block_5"], target).sum() + 1e-2 * losses.total_variation(x).sum()
"""

from cnnjax.losses._classification import carlini_wagner_loss as carlini_wagner_loss
from cnnjax.losses._classification import complement_cross_entropy as complement_cross_entropy
from cnnjax.losses._classification import margin as margin
from cnnjax.losses._classification import softmax_cross_entropy as softmax_cross_entropy
from cnnjax.losses._features import content as content
from cnnjax.losses._features import gram as gram
from cnnjax.losses._features import inversion as inversion
from cnnjax.losses._features import softmax_smoothing as softmax_smoothing
from cnnjax.losses._features import style as style
from cnnjax.losses._image import alpha_norm as alpha_norm
from cnnjax.losses._image import total_variation as total_variation

__all__ = [
    "alpha_norm",
    "carlini_wagner_loss",
    "complement_cross_entropy",
    "content",
    "gram",
    "inversion",
    "margin",
    "softmax_cross_entropy",
    "softmax_smoothing",
    "style",
    "total_variation",
]
