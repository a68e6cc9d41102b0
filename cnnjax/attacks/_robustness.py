"""Evaluating attacks: perturbation norms, success rates and accuracy under attack across an
epsilon sweep, and the robustness curve."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from cnnjax._src.contract import Model
from cnnjax._src.targets import classes_per_image
from cnnjax.attacks._common import AttackResult, top1
from cnnjax.attacks._iterative import pgd

__all__ = [
    "PerturbationNormsResult",
    "RobustnessCurveResult",
    "perturbation_norms",
    "robustness_curve",
]


class PerturbationNormsResult(NamedTuple):
    """Norms of ``adversarial - images``, one per image (leading axes as the adversarial batch).

    Attributes:
      l0: pixels (positions, any channel) changed by more than ``tol``.
      l2: Euclidean norm over all values, in [0, 1] pixel units.
      linf: largest absolute change of any value (multiply by 255 for 8-bit levels).
    """

    l0: np.ndarray
    l2: np.ndarray
    linf: np.ndarray


def perturbation_norms(images, adversarial, *, tol: float = 0.0) -> PerturbationNormsResult:
    r"""L0, L2 and L-infinity norms of the perturbation of each image.

    .. math:: \delta = x' - x; \quad L_0 = \#\{(i, j) : \max_c |\delta_{ijc}| > \text{tol}\},
              \quad L_2 = \lVert \delta \rVert_2, \quad L_\infty = \max |\delta|

    Args:
      images: the originals, ``[n, h, w, c]``.
      adversarial: ``[..., n, h, w, c]`` (e.g. ``[E, n, h, w, c]`` from an epsilon sweep).
      tol: a change counts for L0 when larger than this (0: any change; 1/510 counts only
        changes that survive rounding to 8 bits).

    Returns:
      :class:`PerturbationNormsResult` of NumPy arrays shaped ``[..., n]``.

    Example:
      >>> images = np.full((2, 8, 8, 3), 0.5, np.float32)
      >>> adversarial = images.copy()
      >>> adversarial[0, 0, 0] += 2 / 255  # one pixel of the first image, all three colours
      >>> norms = perturbation_norms(images, adversarial)
      >>> norms.l0.tolist(), [round(float(v) * 255, 2) for v in norms.linf]
      ([1, 0], [2.0, 0.0])

    Reference: Carlini & Wagner (2017), section II-D, for the three distance metrics.
    """
    x = np.asarray(images, np.float32)
    adv = np.asarray(adversarial, np.float32)
    if x.ndim != 4 or adv.ndim < 4 or adv.shape[-4:] != x.shape:
        raise ValueError(f"adversarial must be [..., {', '.join(map(str, x.shape))}] for images of shape "
                         f"{x.shape}, got {adv.shape}")  # fmt: skip
    delta = adv - x.reshape((1,) * (adv.ndim - 4) + x.shape)
    absd = np.abs(delta)
    return PerturbationNormsResult(
        l0=np.sum(absd.max(axis=-1) > tol, axis=(-2, -1)),
        l2=np.sqrt(np.sum(delta.astype(np.float64) ** 2, axis=(-3, -2, -1))).astype(np.float32),
        linf=absd.max(axis=(-3, -2, -1)),
    )


class RobustnessCurveResult(NamedTuple):
    """Accuracy under attack across an epsilon sweep (all arrays ``[E]`` unless said otherwise).

    Attributes:
      eps: the radii, in [0, 1] pixel units.
      accuracy: fraction of images whose adversarial prediction is still the label.
      success_rate: fraction of the correctly classified images the attack fooled.
      l0, l2, linf: mean norms of the successful perturbations (NaN when none succeeded).
      clean_accuracy: accuracy on the unperturbed images (a float).
      result: the attack's :class:`~cnnjax.attacks.AttackResult`, fields ``[E, n, ...]``.
    """

    eps: np.ndarray
    accuracy: np.ndarray
    success_rate: np.ndarray
    l0: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    clean_accuracy: float
    result: AttackResult


def robustness_curve(
    model: Model, images, labels, eps, *, attack: Callable[..., AttackResult] = pgd, **attack_kwargs
) -> RobustnessCurveResult:
    r"""Accuracy under an untargeted attack for each epsilon of a sweep, in one attack call.

    .. math:: \text{acc}(\epsilon) = \frac1n \sum_i [f(x'_i(\epsilon)) = y_i], \qquad
              \text{success}(\epsilon) = \frac{\sum_i [f(x_i) = y_i][f(x'_i(\epsilon)) \ne y_i]}
              {\sum_i [f(x_i) = y_i]}

    Args:
      model: a :class:`~cnnjax.Model`.
      images: float32 ``[n, h, w, c]`` in [0, 1].
      labels: the true classes, one per image.
      eps: a sequence of radii (include 0 for the clean point of the curve).
      attack: an epsilon attack of :mod:`cnnjax.attacks` (``fgsm``, ``fgm``, ``bim``, ``pgd``)
        or any function with its signature; the whole sweep is one call of it.
      **attack_kwargs: passed on (``steps``, ``norm``, ``restarts``, ``memory_budget``: the
        clean predictions run in chunks under it too).

    Returns:
      A :class:`RobustnessCurveResult`.

    Example:
      >>> from cnnjax.models import classify
      >>> from cnnjax.testing import tiny_cnn
      >>> model, images = tiny_cnn(), np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
      >>> labels = classify(model, images).classes[:, 0]  # the model's own answers
      >>> curve = robustness_curve(model, images, labels, [0, 2 / 255, 8 / 255], steps=5)
      >>> curve.clean_accuracy, curve.accuracy.shape, float(curve.accuracy[0])
      (1.0, (3,), 1.0)

    Reference: Madry et al. (2018), "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR (accuracy against PGD across epsilon).
    """
    if "targets" in attack_kwargs:
        raise ValueError("robustness_curve measures untargeted attacks; do not pass targets")
    eps_arr = np.asarray(eps, np.float32)
    if eps_arr.ndim != 1:
        raise ValueError(f"eps must be a sequence of radii for a curve, got {eps!r}")
    result = attack(model, images, labels, eps=eps_arr, **attack_kwargs)  # checks everything first
    labels = classes_per_image(model.spec, labels, np.shape(images)[0], "labels")
    clean = np.asarray(top1(model, images, attack_kwargs.get("memory_budget"))) == labels
    pred = np.asarray(result.predictions)
    fooled = (pred != labels[None]) & clean[None]
    norms = perturbation_norms(images, result.images)

    def mean_where(values, mask):
        counts = mask.sum(axis=1)
        total = np.sum(np.where(mask, values, 0.0), axis=1)
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)

    return RobustnessCurveResult(
        eps=eps_arr,
        accuracy=np.mean(pred == labels[None], axis=1),
        success_rate=fooled.sum(axis=1) / max(int(clean.sum()), 1),
        l0=mean_where(norms.l0, fooled),
        l2=mean_where(norms.l2, fooled),
        linf=mean_where(norms.linf, fooled),
        clean_accuracy=float(clean.mean()),
        result=result,
    )
