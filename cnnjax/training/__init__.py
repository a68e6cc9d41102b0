"""Training CNNs: the course notes' recipe as a library.

* :func:`fit`: mini-batch steps on shuffled data, validation every epoch, the best parameters
  kept, early stopping, resumable checkpoints; :func:`evaluate`; :func:`train_step` and
  :func:`make_train_step` for your own loop.
* Optimisers as optax transformations: :func:`momentum_sgd` (the notes' form), :func:`sgd`,
  :func:`decoupled_weight_decay`; :func:`l2_penalty` and :func:`l2_mask`.
* :func:`cross_entropy`, :func:`accuracy`.
* :func:`train_fashionnet` with :class:`FashionConfig`: the bundled FashionNet's recipe.

Data loaders and splits are in :mod:`cnnjax.data`; augmentation in :mod:`cnnjax.transforms`.
"""

from cnnjax.training._fashion import FashionConfig as FashionConfig
from cnnjax.training._fashion import train_fashionnet as train_fashionnet
from cnnjax.training._loop import EvaluateResult as EvaluateResult
from cnnjax.training._loop import FitResult as FitResult
from cnnjax.training._loop import TrainState as TrainState
from cnnjax.training._loop import evaluate as evaluate
from cnnjax.training._loop import fit as fit
from cnnjax.training._loop import make_train_step as make_train_step
from cnnjax.training._loop import train_step as train_step
from cnnjax.training._optim import accuracy as accuracy
from cnnjax.training._optim import cross_entropy as cross_entropy
from cnnjax.training._optim import decoupled_weight_decay as decoupled_weight_decay
from cnnjax.training._optim import l2_mask as l2_mask
from cnnjax.training._optim import l2_penalty as l2_penalty
from cnnjax.training._optim import momentum_sgd as momentum_sgd
from cnnjax.training._optim import sgd as sgd

__all__ = [
    "EvaluateResult",
    "FashionConfig",
    "FitResult",
    "TrainState",
    "accuracy",
    "cross_entropy",
    "decoupled_weight_decay",
    "evaluate",
    "fit",
    "l2_mask",
    "l2_penalty",
    "make_train_step",
    "momentum_sgd",
    "sgd",
    "train_fashionnet",
    "train_step",
]
