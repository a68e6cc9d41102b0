"""Ng's bias/variance analysis: which gap between error rates is the problem, and what to do
about it (A. Ng, "Nuts and bolts of building AI applications using deep learning", 2016;
*Machine Learning Yearning*, ch. 20-27).

    avoidable bias = training error - human-level error
    variance       = validation error - training error
    mismatch       = test error - validation error   (the data the network will meet differs)

Ng's example: human-level 1%, training 10%, test 10.4%: the avoidable bias (9%) dwarfs the
variance (0.4%): the problem is bias. Its mirror (1%, 2%, 10%) is variance.
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["BiasVarianceResult", "NEXT_STEPS", "bias_variance"]

#: What to try for each verdict (Ng's recipe).
NEXT_STEPS = {
    "bias": ("a bigger model (more layers or units)", "train longer or with a better optimiser",
             "another architecture"),
    "variance": ("more training data", "regularisation (L2, dropout, data augmentation)",
                 "early stopping", "another architecture"),
    "both": ("first a bigger model or longer training (bias), then more data or regularisation "
             "(variance)",),
    "mismatch": ("training or validation data that looks like the test data",
                 "synthesise or collect data of the target distribution"),
    "fine": ("nothing: the errors are near human level and close to each other",),
}  # fmt: skip


class BiasVarianceResult(NamedTuple):
    """Result of :func:`bias_variance`.

    Attributes:
      avoidable_bias: training error - human-level error.
      variance: validation (or, without it, test) error - training error.
      mismatch: test error - validation error (0 without both).
      verdict: ``"bias"``, ``"variance"``, ``"both"``, ``"mismatch"`` or ``"fine"``.
      next_steps: what to try, from :data:`NEXT_STEPS`.
      explanation: one sentence with the numbers.
    """

    avoidable_bias: float
    variance: float
    mismatch: float
    verdict: str
    next_steps: tuple[str, ...]
    explanation: str


def _rate(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be an error rate in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        hint = " (a percentage? give 0.104 for 10.4%)" if 1.0 < value <= 100.0 else ""
        raise ValueError(f"{name} must be an error rate in [0, 1], got {value!r}{hint}")
    return float(value)


def bias_variance(
    *,
    human: float,
    train: float,
    validation: float | None = None,
    test: float | None = None,
    tolerance: float = 0.01,
) -> BiasVarianceResult:
    """Ng's diagnosis from error rates in [0, 1].

    A gap matters when it exceeds ``tolerance`` (one percentage point) and is at least half
    the largest gap; if only bias and variance matter, both do ("both"); otherwise the largest
    gap names the problem.

    Args:
      human: human-level error (the best error one can hope for; Bayes error's proxy).
      train: training error, measured in evaluation mode (no dropout, no augmentation).
      validation: validation (dev) error.
      test: test error; at least one of ``validation`` and ``test`` is needed.
      tolerance: the smallest gap that matters.

    Returns:
      A :class:`BiasVarianceResult`.

    Raises:
      ValueError: a rate outside [0, 1] (naming it), neither ``validation`` nor ``test``, or
        a training error below human level by more than ``tolerance`` (the arguments swapped?).

    Example:
      >>> bias_variance(human=0.01, train=0.10, test=0.104).verdict  # Ng's example
      'bias'
      >>> bias_variance(human=0.01, train=0.02, test=0.10).verdict
      'variance'
    """
    human, train = _rate(human, "human"), _rate(train, "train")
    validation, test = _rate(validation, "validation"), _rate(test, "test")
    if validation is None and test is None:
        raise ValueError("give the validation error, the test error, or both")
    if train < human - tolerance:
        raise ValueError(f"the training error ({train:.1%}) is below human level ({human:.1%}): are human= "
                         "and train= swapped?")  # fmt: skip
    held_out = validation if validation is not None else test
    both = validation is not None and test is not None
    gaps = {
        "bias": train - human,
        "variance": held_out - train,
        "mismatch": test - validation if both else 0.0,
    }
    largest = max(gaps.values())
    matter = {k for k, g in gaps.items() if g > tolerance and g >= 0.5 * largest}
    if not matter:
        verdict = "fine"
    elif matter >= {"bias", "variance"} and "mismatch" not in matter:
        verdict = "both"
    else:
        verdict = max(matter, key=lambda k: gaps[k])
    held_name = "validation" if validation is not None else "test"
    parts = [f"avoidable bias {gaps['bias']:.1%} (training {train:.1%} vs human {human:.1%})",
             f"variance {gaps['variance']:.1%} ({held_name} {held_out:.1%})"]  # fmt: skip
    if both:
        parts.append(f"mismatch {gaps['mismatch']:.1%} (test {test:.1%})")
    explanation = ", ".join(parts) + (": fine" if verdict == "fine" else f": the problem is {verdict}")
    return BiasVarianceResult(gaps["bias"], gaps["variance"], gaps["mismatch"], verdict, NEXT_STEPS[verdict],
                              explanation)  # fmt: skip
