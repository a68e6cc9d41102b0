"""Models: the bundled pretrained networks and adapters that bring your own into the contract."""

from cnnjax.models.adapters import Tape as Tape
from cnnjax.models.adapters import build_spec as build_spec
from cnnjax.models.adapters import from_function as from_function
from cnnjax.models.adapters import from_linen as from_linen
from cnnjax.models.adapters import from_nnx as from_nnx
from cnnjax.models.adapters import record as record
from cnnjax.models.zoo import imagenet_classes as imagenet_classes
from cnnjax.models.zoo import list_models as list_models
from cnnjax.models.zoo import load_model as load_model

__all__ = [
    "Tape",
    "build_spec",
    "from_function",
    "from_linen",
    "from_nnx",
    "imagenet_classes",
    "list_models",
    "load_model",
    "record",
]
