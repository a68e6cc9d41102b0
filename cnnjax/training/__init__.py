"""Training CNNs: optax optimisers in the course notes' form, regularisation, data, ``fit``."""

from cnnjax.training import data as data
from cnnjax.training.data import Dataset as Dataset
from cnnjax.training.data import load_cifar10 as load_cifar10
from cnnjax.training.data import load_fashion_mnist as load_fashion_mnist
from cnnjax.training.data import load_image_folder as load_image_folder
from cnnjax.training.data import load_mnist as load_mnist
from cnnjax.training.data import make_dataset as make_dataset
from cnnjax.training.data import split as split
from cnnjax.training.data import split_train_val as split_train_val
from cnnjax.training.loop import FitResult as FitResult
from cnnjax.training.loop import TrainState as TrainState
from cnnjax.training.loop import evaluate as evaluate
from cnnjax.training.loop import fit as fit
from cnnjax.training.loop import make_train_step as make_train_step
from cnnjax.training.optim import accuracy as accuracy
from cnnjax.training.optim import cross_entropy as cross_entropy
from cnnjax.training.optim import decoupled_weight_decay as decoupled_weight_decay
from cnnjax.training.optim import l2_mask as l2_mask
from cnnjax.training.optim import l2_penalty as l2_penalty
from cnnjax.training.optim import momentum_sgd as momentum_sgd
from cnnjax.training.optim import sgd as sgd

__all__ = [
    "Dataset",
    "FitResult",
    "TrainState",
    "accuracy",
    "cross_entropy",
    "data",
    "decoupled_weight_decay",
    "evaluate",
    "fit",
    "l2_mask",
    "l2_penalty",
    "load_cifar10",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "make_dataset",
    "make_train_step",
    "momentum_sgd",
    "sgd",
    "split",
    "split_train_val",
]
