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
from cnnjax import receptive_field as receptive_field
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
from cnnjax.report.overlay import overlay as overlay
from cnnjax.techniques.cam import cam as cam
from cnnjax.techniques.cam import cam_head as cam_head
from cnnjax.techniques.cam import grad_cam as grad_cam
from cnnjax.techniques.cam import grad_cam_plus_plus as grad_cam_plus_plus
from cnnjax.techniques.cam import layer_cam as layer_cam
from cnnjax.techniques.cam import score_cam as score_cam
from cnnjax.techniques.cam import upsample_maps as upsample_maps
from cnnjax.techniques.classify import classify as classify
from cnnjax.techniques.dream import dream as dream
from cnnjax.techniques.invert import invert as invert
from cnnjax.techniques.map_eval import deletion as deletion
from cnnjax.techniques.map_eval import insertion as insertion
from cnnjax.techniques.map_eval import pointing_game as pointing_game
from cnnjax.techniques.segment import unit_segmentation as unit_segmentation
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
    "cam",
    "cam_head",
    "check_images",
    "classify",
    "deletion",
    "depthwise_conv",
    "dream",
    "from_function",
    "from_linen",
    "from_nnx",
    "grad_cam",
    "grad_cam_plus_plus",
    "image_grid",
    "insertion",
    "invert",
    "layer_cam",
    "list_models",
    "load_image",
    "load_images",
    "load_model",
    "losses",
    "models",
    "objectives",
    "overlay",
    "param",
    "pointing_game",
    "priors",
    "pytree_dataclass",
    "receptive_field",
    "sample_photos",
    "sample_styles",
    "save_image",
    "score_cam",
    "static_field",
    "style_transfer",
    "training",
    "transforms",
    "unit_segmentation",
    "upsample_maps",
    "visualize",
]
