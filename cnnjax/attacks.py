"""Breaking CNNs: adversarial attacks, their evaluation, and fooling images.

Every attack takes a model, images float32 NHWC in [0, 1] and labels or targets, and returns
an :class:`AttackResult` whose ``images`` are float32 in [0, 1]; epsilons are in [0, 1] pixel
space (the model's spec maps images to its own range). One compiled program per attack;
epsilon sweeps, restarts and one target per image run in the same program.

    from cnnjax.attacks import pgd
    adv = pgd(model, images, eps=2 / 255, steps=10)
"""

from cnnjax.techniques.adversarial import AttackResult as AttackResult
from cnnjax.techniques.adversarial import bim as bim
from cnnjax.techniques.adversarial import carlini_wagner as carlini_wagner
from cnnjax.techniques.adversarial import fgm as fgm
from cnnjax.techniques.adversarial import fgsm as fgsm
from cnnjax.techniques.adversarial import lbfgs as lbfgs
from cnnjax.techniques.adversarial import pgd as pgd
from cnnjax.techniques.adversarial import project as project
from cnnjax.techniques.adversarial import steepest_descent as steepest_descent
from cnnjax.techniques.fooling import Fooling as Fooling
from cnnjax.techniques.fooling import fooling_images as fooling_images
from cnnjax.techniques.robustness import PerturbationNorms as PerturbationNorms
from cnnjax.techniques.robustness import RobustnessCurve as RobustnessCurve
from cnnjax.techniques.robustness import perturbation_norms as perturbation_norms
from cnnjax.techniques.robustness import robustness_curve as robustness_curve
from cnnjax.techniques.robustness import robustness_plot as robustness_plot

__all__ = [
    "AttackResult",
    "Fooling",
    "PerturbationNorms",
    "RobustnessCurve",
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
    "robustness_plot",
    "steepest_descent",
]
