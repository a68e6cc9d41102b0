"""Breaking CNNs: adversarial attacks, their evaluation, and fooling images.

Every attack takes a model, images float32 NHWC in [0, 1] and ``labels`` (the true classes;
default the model's own top-1) or ``targets`` (classes to reach), and returns an
:class:`AttackResult` whose ``images`` are float32 in [0, 1]. Epsilons are in [0, 1] pixel
space (``2 / 255`` is two 8-bit levels): the model's spec maps images to its own range, so
nothing here normalises. One compiled program per attack; epsilon sweeps, restarts and one
target per image run in the same program, and new values never recompile.

* :func:`fgsm`, :func:`fgm`, :func:`bim`, :func:`pgd`: gradient steps in a norm ball, built
  from the optax pieces :func:`steepest_descent` and :func:`project`.
* :func:`lbfgs` (Szegedy et al. 2014) and :func:`carlini_wagner` (2017): the smallest
  perturbation, with a search over the constant.
* :func:`perturbation_norms`, :func:`robustness_curve`: how far and how well.
* :func:`fooling_images` (Nguyen et al. 2015): images no person recognises, classified with
  high confidence.

Example:
  >>> from cnnjax.testing import tiny_cnn
  >>> images = np.full((2, 32, 32, 3), 0.5, np.float32)
  >>> adv = pgd(tiny_cnn(), images, eps=[0, 2 / 255, 8 / 255], steps=5)  # a sweep: one program
  >>> norms = perturbation_norms(images, adv.images)
  >>> adv.images.shape, norms.linf.shape, bool(norms.linf.max() <= 8 / 255 + 1e-6)
  ((3, 2, 32, 32, 3), (3, 2), True)
"""

from cnnjax.attacks._common import AttackResult as AttackResult
from cnnjax.attacks._fooling import FoolingImagesResult as FoolingImagesResult
from cnnjax.attacks._fooling import fooling_images as fooling_images
from cnnjax.attacks._iterative import bim as bim
from cnnjax.attacks._iterative import fgm as fgm
from cnnjax.attacks._iterative import fgsm as fgsm
from cnnjax.attacks._iterative import pgd as pgd
from cnnjax.attacks._minimal import carlini_wagner as carlini_wagner
from cnnjax.attacks._minimal import lbfgs as lbfgs
from cnnjax.attacks._robustness import PerturbationNormsResult as PerturbationNormsResult
from cnnjax.attacks._robustness import RobustnessCurveResult as RobustnessCurveResult
from cnnjax.attacks._robustness import perturbation_norms as perturbation_norms
from cnnjax.attacks._robustness import robustness_curve as robustness_curve
from cnnjax.attacks._steps import project as project
from cnnjax.attacks._steps import steepest_descent as steepest_descent

__all__ = [
    "AttackResult",
    "FoolingImagesResult",
    "PerturbationNormsResult",
    "RobustnessCurveResult",
    "bim",
    "carlini_wagner",
    "fgm",
    "fgsm",
    "fooling_images",
    "lbfgs",
    "perturbation_norms",
    "pgd",
    "project",
    "robustness_curve",
    "steepest_descent",
]
