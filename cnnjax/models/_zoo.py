"""The bundled models: ``load_model(name)`` and ``list_models()``.

Bundled models are Flax NNX modules whose weights ship with cnnjax under ``weights/`` (one
``NAME.safetensors`` and its manifest ``NAME.json`` each). Loading checks the file's size and
sha256 against the manifest and needs no network.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import jax.numpy as jnp
import numpy as np

from cnnjax._src.contract import Model
from cnnjax.models._weights import read_finite, verified_file

__all__ = ["load_model", "list_models", "imagenet_classes", "module_tensors", "assign_tensors"]


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (comma-separated synonyms)."""
    text = resources.files("cnnjax").joinpath("assets/imagenet_classes.tsv").read_text()
    names = tuple(line.split("\t", 1)[1] for line in text.splitlines() if line)
    assert len(names) == 1000, len(names)
    return names


def module_tensors(module) -> dict[str, np.ndarray]:
    """The state of an NNX module as ``{"blocks.3.expand.kernel": array, ...}``."""
    from flax import nnx

    return {
        ".".join(map(str, path)): np.asarray(var[...]) for path, var in nnx.to_flat_state(nnx.state(module))
    }


def assign_tensors(module: Any, tensors: Mapping[str, np.ndarray], source: str):
    """Fill a module's state from ``tensors``: an empty module (its variables hold only shapes,
    such as ``nnx.eval_shape``'s), or a factory ``module()`` that is built abstractly first.

    Every variable must be present with its exact shape, and no tensor may be left over; a
    mismatch is a ValueError naming the tensor and ``source``.
    """
    from flax import nnx

    abstract = module if isinstance(module, nnx.Module) else nnx.eval_shape(module)
    graphdef, state = nnx.split(abstract)
    flat = nnx.to_flat_state(state)
    expected = {".".join(map(str, path)) for path, _ in flat}
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        raise ValueError(
            f"{source}: tensors do not match the model (missing {missing[:5]}, unexpected {extra[:5]})"
        )
    leaves = []
    for path, var in flat:
        name = ".".join(map(str, path))
        value = tensors[name]
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{source}: tensor {name} has shape {value.shape}, expected {var.shape}")
        leaves.append((path, var.replace(jnp.asarray(value, var.dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def _efficientnet_lite0(tensors: Mapping[str, np.ndarray], manifest: dict) -> Model:
    from cnnjax.models._adapters import from_nnx
    from cnnjax.models._efficientnet import VALUE_MAPPING, EfficientNetLite0

    module = assign_tensors(EfficientNetLite0(rngs=None), tensors, manifest["file"])
    spec = manifest["spec"]
    input_size = tuple(spec["input_size"])
    return from_nnx(
        module,
        name="efficientnet_lite0",
        input_size=input_size,
        shapes=EfficientNetLite0.layer_shapes(input_size),  # no forward traced to load the model
        value_mapping=VALUE_MAPPING,
        class_names=imagenet_classes(),
        resize_size=spec["resize_size"],
        receptive_fields=EfficientNetLite0.receptive_fields(),
        weights={k: str(manifest["source"][k]) for k in ("package", "version", "file", "licence")}
        | {"sha256": manifest["sha256"]},
    )


def _fashionnet(tensors: Mapping[str, np.ndarray], manifest: dict) -> Model:
    from flax import nnx

    from cnnjax._src.contract import ValueMapping
    from cnnjax.models._fashionnet import FashionNet, fashionnet_model

    mapping = manifest["spec"]["value_mapping"]
    value_mapping = ValueMapping(mean=tuple(mapping["mean"]), std=tuple(mapping["std"]))
    module = assign_tensors(
        lambda: FashionNet(rngs=nnx.Rngs(0), value_mapping=value_mapping), tensors, manifest["file"]
    )
    model = fashionnet_model(module)
    weights = {k: str(manifest["source"][k]) for k in ("package", "file", "licence", "data")}
    weights |= {"sha256": manifest["sha256"], "test_accuracy": f"{manifest['test_accuracy']:.4f}"}
    return dataclasses.replace(model, spec=dataclasses.replace(model.spec, weights=weights))


_MODELS: dict[str, tuple[Callable[..., Model], str]] = {
    "efficientnet_lite0": (
        _efficientnet_lite0,
        "EfficientNet-Lite0, ImageNet-1k (224x224 RGB), the default model",
    ),
    "fashionnet": (
        _fashionnet,
        "FashionNet, Fashion-MNIST (28x28 greyscale), trained with cnnjax",
    ),
}


def list_models() -> dict[str, str]:
    """Names of the bundled models and a one-line description of each."""
    return {name: desc for name, (_, desc) in _MODELS.items()}


def load_model(name: str = "efficientnet_lite0", *, weights_dir: str | os.PathLike | None = None) -> Model:
    """Load a bundled pretrained model.

    Args:
      name: one of :func:`list_models` (default ``"efficientnet_lite0"``).
      weights_dir: a folder holding ``NAME.safetensors`` and its manifest ``NAME.json``
        instead of the bundled ones (default: ``$CNNJAX_WEIGHTS``, else the bundled folder).

    Returns:
      A :class:`~cnnjax.Model` with ``apply(params, images, *, perturb=None)``, ``params``
      and ``spec``. Images are float32 NHWC in [0, 1] at ``spec.input_size``. The weights
      file's checksum is verified at every call; the same file gives the same (immutable)
      model object, so jitted techniques compile once per process.

    Raises:
      ValueError: unknown name, or a corrupted or truncated weights file (named).
      FileNotFoundError: the weights file or its manifest is missing.

    Example:
      The small Fashion-MNIST network (the default, EfficientNet-Lite0, loads the same way):

      >>> from cnnjax.models import classify
      >>> model = load_model("fashionnet")
      >>> model.spec.input_size, model.spec.channels, model.spec.class_names[:2]
      ((28, 28), 1, ('T-shirt/top', 'Trouser'))
      >>> probs, classes = classify(model, np.full((1, 28, 28, 1), 0.5, np.float32), top_k=3)
      >>> probs.shape, classes.shape
      ((1, 3), (1, 3))
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; bundled models: {', '.join(_MODELS)}")
    # The file is checked at every call; the model built from a file with a given checksum is
    # built once per process, so repeated loads share one ``apply`` and its compiled programs.
    path, manifest = verified_file(name, weights_dir)
    key = (name, str(path.resolve()), manifest["sha256"])
    if key not in _LOADED:
        try:
            _LOADED[key] = _MODELS[name][0](read_finite(path), manifest)
        except KeyError as e:  # a manifest written by hand or by another version
            raise ValueError(
                f"weights manifest {path.parent / (name + '.json')} lacks the entry {e.args[0]!r}"
            ) from None
    return _LOADED[key]


_LOADED: dict[tuple[str, str, str], Model] = {}
