"""Where the network looks: class activation maps and how good a saliency map is.

Every map is a float32 JAX array ``[images, targets, h, w]`` at the resolution of the layer it
reads (``upsample=True``: at the input's, each activation at the centre of its receptive
field), differentiable with respect to the images. ``classes`` selects the targets the same
way for every method: None (every class), one class (index or name), a list of classes for
every image, or an ``[images, k]`` array of each image's own. All targets of a call run in one
compiled program; new classes of the same shape never recompile.

* :func:`cam` (Zhou et al. 2016), checked by :func:`cam_head`; :func:`grad_cam`,
  :func:`grad_cam_plus_plus`, :func:`layer_cam`, :func:`score_cam`;
* :func:`upsample_maps`: linear upsampling between given centres;
* :func:`deletion`, :func:`insertion` (Petsiuk et al. 2018) and :func:`pointing_game`
  (Zhang et al. 2016).
"""

from cnnjax._src.targets import upsample_maps as upsample_maps
from cnnjax.saliency._cam import CamHead as CamHead
from cnnjax.saliency._cam import cam as cam
from cnnjax.saliency._cam import cam_head as cam_head
from cnnjax.saliency._evaluate import CurveResult as CurveResult
from cnnjax.saliency._evaluate import deletion as deletion
from cnnjax.saliency._evaluate import insertion as insertion
from cnnjax.saliency._evaluate import pointing_game as pointing_game
from cnnjax.saliency._gradcam import grad_cam as grad_cam
from cnnjax.saliency._gradcam import grad_cam_plus_plus as grad_cam_plus_plus
from cnnjax.saliency._gradcam import layer_cam as layer_cam
from cnnjax.saliency._scorecam import score_cam as score_cam

__all__ = [
    "CamHead",
    "CurveResult",
    "cam",
    "cam_head",
    "deletion",
    "grad_cam",
    "grad_cam_plus_plus",
    "insertion",
    "layer_cam",
    "pointing_game",
    "score_cam",
    "upsample_maps",
]
