"""Models: the bundled pretrained networks, adapters that bring your own into the contract, and
the pieces to build and store them.

* :func:`load_model`, :func:`list_models`: the bundled models (weights checked at every load).
* :func:`from_function`, :func:`from_nnx`, :func:`from_linen` (with :class:`Tape` and
  :func:`record`): your network as ``apply(params, images, *, perturb) -> Activations``.
* :func:`classify`: the top classes of images; :func:`probabilities`: all of them.
* :class:`EfficientNetLite0`, :class:`FashionNet` (and :func:`fashionnet_model`): the bundled
  architectures as Flax NNX modules; the pieces they are built from, fast on CPU:
  :func:`depthwise_conv` (a depthwise convolution as shifted multiplies), :func:`patch_conv` (a
  dense convolution as patches times a matrix), :func:`dense_conv` (XLA's dense convolution
  with gradients that stay fast inside loops), :func:`max_pool_2x2` (max-pooling whose gradient
  is an elementwise mask).
* Weights: :func:`module_tensors` / :func:`assign_tensors` (an NNX module's state as named
  arrays and back), :func:`read_manifest`, :func:`read_pth` (PyTorch files, read without
  running code from them), :func:`convert_efficientnet_lite0`.
"""

from cnnjax._src.conv import dense_conv as dense_conv
from cnnjax._src.conv import patch_conv as patch_conv
from cnnjax._src.depthwise import depthwise_conv as depthwise_conv
from cnnjax.models._adapters import Tape as Tape
from cnnjax.models._adapters import build_spec as build_spec
from cnnjax.models._adapters import from_function as from_function
from cnnjax.models._adapters import from_linen as from_linen
from cnnjax.models._adapters import from_nnx as from_nnx
from cnnjax.models._adapters import record as record
from cnnjax.models._classify import ClassifyResult as ClassifyResult
from cnnjax.models._classify import classify as classify
from cnnjax.models._classify import probabilities as probabilities
from cnnjax.models._convert import convert_efficientnet_lite0 as convert_efficientnet_lite0
from cnnjax.models._pth import read_pth as read_pth
from cnnjax.models._weights import read_manifest as read_manifest
from cnnjax.models._zoo import assign_tensors as assign_tensors
from cnnjax.models._zoo import imagenet_classes as imagenet_classes
from cnnjax.models._zoo import list_models as list_models
from cnnjax.models._zoo import load_model as load_model
from cnnjax.models._zoo import module_tensors as module_tensors

# The bundled architectures are Flax NNX modules: they are imported when first asked for, so
# that ``import cnnjax`` does not import Flax (the core never needs it).
_NNX = {
    "EfficientNetLite0": "cnnjax.models._efficientnet",
    "FashionNet": "cnnjax.models._fashionnet",
    "fashionnet_model": "cnnjax.models._fashionnet",
    "max_pool_2x2": "cnnjax.models._fashionnet",
}


def __getattr__(name: str):
    if name in _NNX:
        import importlib

        return getattr(importlib.import_module(_NNX[name]), name)
    raise AttributeError(f"module 'cnnjax.models' has no attribute {name!r}")


__all__ = [
    "ClassifyResult",
    "EfficientNetLite0",
    "FashionNet",
    "Tape",
    "assign_tensors",
    "build_spec",
    "classify",
    "convert_efficientnet_lite0",
    "dense_conv",
    "depthwise_conv",
    "fashionnet_model",
    "from_function",
    "from_linen",
    "from_nnx",
    "imagenet_classes",
    "list_models",
    "load_model",
    "max_pool_2x2",
    "module_tensors",
    "patch_conv",
    "probabilities",
    "read_manifest",
    "read_pth",
    "record",
]
