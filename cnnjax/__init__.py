"""cnnjax: train CNNs and understand what they learned, as pure, jit-compiled JAX functions.

Images are float32 NHWC arrays in [0, 1]; a model is ``apply(params, images, *, perturb=None)
-> Activations`` plus its params and a :class:`ModelSpec`. Every function has one home, grouped
by what users do; the most used ones are also here:

* :mod:`cnnjax.models`: bundled models, adapters, :func:`classify`;
* :mod:`cnnjax.training` and :mod:`cnnjax.data`: training and data;
* :mod:`cnnjax.saliency`, :mod:`cnnjax.receptive_field`, :mod:`cnnjax.units`: where the network
  looks and what a unit responds to;
* :mod:`cnnjax.synthesis` with :mod:`cnnjax.objectives`, :mod:`cnnjax.param`,
  :mod:`cnnjax.transforms`, :mod:`cnnjax.priors`, :mod:`cnnjax.losses`: the input a network
  wants to see;
* :mod:`cnnjax.attacks`: breaking CNNs;
* :mod:`cnnjax.report`: pictures and the HTML report; :mod:`cnnjax.testing`: test helpers.

See ``README.md`` for a tour and ``docs/design.md`` for the contract.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cnnjax._src.cache import use_compilation_cache as _use_compilation_cache
from cnnjax._src.checks import DivergedError as DivergedError
from cnnjax._src.contract import Activations as Activations
from cnnjax._src.contract import ApplyFn as ApplyFn
from cnnjax._src.contract import LayerSpec as LayerSpec
from cnnjax._src.contract import Model as Model
from cnnjax._src.contract import ModelSpec as ModelSpec
from cnnjax._src.contract import Objective as Objective
from cnnjax._src.contract import Parameterization as Parameterization
from cnnjax._src.contract import Transform as Transform
from cnnjax._src.contract import ValueMapping as ValueMapping

# The packages and the functions re-exported here are imported on first use (PEP 562), so a
# command or a script pays only for what it touches: ``cnnjax classify`` never imports the
# report, the attacks or the training loop.
_SUBPACKAGES = frozenset({
    "attacks", "data", "losses", "models", "objectives", "param", "priors", "receptive_field",
    "report", "saliency", "synthesis", "training", "transforms", "units",
})  # fmt: skip
_REEXPORTS = {
    "image_grid": "cnnjax._src.image_io",
    "load_image": "cnnjax._src.image_io",
    "load_images": "cnnjax._src.image_io",
    "save_image": "cnnjax._src.image_io",
    "sample_photos": "cnnjax._src.samples",
    "sample_styles": "cnnjax._src.samples",
    "classify": "cnnjax.models",
    "from_function": "cnnjax.models",
    "from_linen": "cnnjax.models",
    "from_nnx": "cnnjax.models",
    "list_models": "cnnjax.models",
    "load_model": "cnnjax.models",
    "overlay": "cnnjax.report",
    "cam": "cnnjax.saliency",
    "grad_cam": "cnnjax.saliency",
    "dream": "cnnjax.synthesis",
    "invert": "cnnjax.synthesis",
    "style_transfer": "cnnjax.synthesis",
    "visualize": "cnnjax.synthesis",
}

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from cnnjax import (  # noqa: F401  # noqa: F401
        attacks,
        data,
        losses,
        models,
        objectives,
        param,
        priors,
        receptive_field,
        report,
        saliency,
        synthesis,
        training,
        transforms,
        units,
    )
    from cnnjax._src.image_io import image_grid, load_image, load_images, save_image  # noqa: F401
    from cnnjax._src.samples import sample_photos, sample_styles  # noqa: F401
    from cnnjax.models import classify, from_function, from_linen, from_nnx, list_models, load_model  # noqa: F401
    from cnnjax.report import overlay  # noqa: F401
    from cnnjax.saliency import cam, grad_cam  # noqa: F401
    from cnnjax.synthesis import dream, invert, style_transfer, visualize  # noqa: F401


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"cnnjax.{name}")
    if name in _REEXPORTS:
        value = getattr(importlib.import_module(_REEXPORTS[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'cnnjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBPACKAGES | set(_REEXPORTS))


__version__ = "0.2.0"

__all__ = [
    "Activations",
    "ApplyFn",
    "DivergedError",
    "LayerSpec",
    "Model",
    "ModelSpec",
    "Objective",
    "Parameterization",
    "Transform",
    "ValueMapping",
    "attacks",
    "cam",
    "classify",
    "data",
    "dream",
    "from_function",
    "from_linen",
    "from_nnx",
    "grad_cam",
    "image_grid",
    "invert",
    "list_models",
    "load_image",
    "load_images",
    "load_model",
    "losses",
    "models",
    "objectives",
    "overlay",
    "param",
    "priors",
    "receptive_field",
    "report",
    "saliency",
    "sample_photos",
    "sample_styles",
    "save_image",
    "style_transfer",
    "synthesis",
    "training",
    "transforms",
    "units",
    "visualize",
]

_use_compilation_cache()  # compiled programs kept on disk, once per machine (CNNJAX_CACHE_DIR=off: not)
