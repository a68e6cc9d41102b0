"""cnnjax: train CNNs and understand what they learned, as pure, jit-compiled JAX functions.

Images are float32 NHWC arrays in [0, 1]; a model is ``apply(params, images, *, perturb=None)
-> Activations`` plus its params and a :class:`ModelSpec`. See ``README.md`` for a tour.
"""

from cnnjax import attacks as attacks
from cnnjax import losses as losses
from cnnjax import models as models
from cnnjax import objectives as objectives
from cnnjax import param as param
from cnnjax import priors as priors
from cnnjax import training as training
from cnnjax import transforms as transforms
from cnnjax._src.checks import check_images as check_images
from cnnjax._src.contract import Activations as Activations
from cnnjax._src.contract import ApplyFn as ApplyFn
from cnnjax._src.contract import LayerSpec as LayerSpec
from cnnjax._src.contract import Model as Model
from cnnjax._src.contract import ModelSpec as ModelSpec
from cnnjax._src.contract import Objective as Objective
from cnnjax._src.contract import Parameterization as Parameterization
from cnnjax._src.contract import Transform as Transform
from cnnjax._src.contract import ValueMapping as ValueMapping
from cnnjax._src.contract import pytree_dataclass as pytree_dataclass
from cnnjax._src.contract import static_field as static_field
from cnnjax._src.depthwise import depthwise_conv as depthwise_conv
from cnnjax._src.image_io import image_grid as image_grid
from cnnjax._src.image_io import load_image as load_image
from cnnjax._src.image_io import load_images as load_images
from cnnjax._src.image_io import save_image as save_image
from cnnjax._src.samples import sample_photos as sample_photos
from cnnjax._src.samples import sample_styles as sample_styles
from cnnjax.models import Tape as Tape
from cnnjax.models import from_function as from_function
from cnnjax.models import from_linen as from_linen
from cnnjax.models import from_nnx as from_nnx
from cnnjax.models import list_models as list_models
from cnnjax.models import load_model as load_model
from cnnjax.techniques.classify import classify as classify
from cnnjax.techniques.dream import dream as dream
from cnnjax.techniques.invert import invert as invert
from cnnjax.techniques.style import style_transfer as style_transfer
from cnnjax.techniques.visualize import visualize as visualize

__version__ = "0.1.0"

__all__ = [
    "Activations",
    "ApplyFn",
    "LayerSpec",
    "Model",
    "ModelSpec",
    "Objective",
    "Parameterization",
    "Tape",
    "Transform",
    "ValueMapping",
    "attacks",
    "check_images",
    "classify",
    "depthwise_conv",
    "dream",
    "from_function",
    "from_linen",
    "from_nnx",
    "image_grid",
    "invert",
    "list_models",
    "load_image",
    "load_images",
    "load_model",
    "losses",
    "models",
    "objectives",
    "param",
    "priors",
    "pytree_dataclass",
    "sample_photos",
    "sample_styles",
    "save_image",
    "static_field",
    "style_transfer",
    "training",
    "transforms",
    "visualize",
]
