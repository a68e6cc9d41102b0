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

from cnnjax import attacks as attacks
from cnnjax import data as data
from cnnjax import losses as losses
from cnnjax import models as models
from cnnjax import objectives as objectives
from cnnjax import param as param
from cnnjax import priors as priors
from cnnjax import receptive_field as receptive_field
from cnnjax import report as report
from cnnjax import saliency as saliency
from cnnjax import synthesis as synthesis
from cnnjax import training as training
from cnnjax import transforms as transforms
from cnnjax import units as units
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
from cnnjax._src.image_io import image_grid as image_grid
from cnnjax._src.image_io import load_image as load_image
from cnnjax._src.image_io import load_images as load_images
from cnnjax._src.image_io import save_image as save_image
from cnnjax._src.samples import sample_photos as sample_photos
from cnnjax._src.samples import sample_styles as sample_styles
from cnnjax.models import classify as classify
from cnnjax.models import from_function as from_function
from cnnjax.models import from_linen as from_linen
from cnnjax.models import from_nnx as from_nnx
from cnnjax.models import list_models as list_models
from cnnjax.models import load_model as load_model
from cnnjax.report import overlay as overlay
from cnnjax.saliency import cam as cam
from cnnjax.saliency import grad_cam as grad_cam
from cnnjax.synthesis import dream as dream
from cnnjax.synthesis import invert as invert
from cnnjax.synthesis import style_transfer as style_transfer
from cnnjax.synthesis import visualize as visualize

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
