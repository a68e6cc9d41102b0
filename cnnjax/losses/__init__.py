"""Losses (minimised): pure functions of arrays that work inside any optax loop."""

from cnnjax.losses.classification import carlini_wagner_loss as carlini_wagner_loss
from cnnjax.losses.classification import complement_cross_entropy as complement_cross_entropy
from cnnjax.losses.classification import margin as margin
from cnnjax.losses.classification import softmax_cross_entropy as softmax_cross_entropy

__all__ = ["carlini_wagner_loss", "complement_cross_entropy", "margin", "softmax_cross_entropy"]
