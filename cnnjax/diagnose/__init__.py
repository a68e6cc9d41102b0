""" "My network isn't working": Ng's bias/variance analysis and verdicts on training curves.

* :func:`bias_variance`: avoidable bias, variance and mismatch from error rates, a verdict and
  the recipe's next steps; :func:`fit_errors`: the rates of a finished ``fit`` run.
* :func:`curve_verdicts`: what a ``fit`` history says (diverging, stuck, still improving,
  overfitting from an epoch, too noisy), each with its evidence.
* :func:`doctor`: automated checks for the usual failures (inputs, final layer, gradients,
  initialisation, learning rate, overfitting one batch, an input-independent baseline,
  results), each pass, warn or fail with its evidence and a suggestion.
"""

from cnnjax.diagnose._bias_variance import NEXT_STEPS as NEXT_STEPS
from cnnjax.diagnose._bias_variance import BiasVarianceResult as BiasVarianceResult
from cnnjax.diagnose._bias_variance import bias_variance as bias_variance
from cnnjax.diagnose._curves import CurveVerdict as CurveVerdict
from cnnjax.diagnose._curves import curve_verdicts as curve_verdicts
from cnnjax.diagnose._curves import fit_errors as fit_errors
from cnnjax.diagnose._doctor import DoctorResult as DoctorResult
from cnnjax.diagnose._doctor import Finding as Finding
from cnnjax.diagnose._doctor import doctor as doctor

__all__ = [
    "NEXT_STEPS",
    "BiasVarianceResult",
    "CurveVerdict",
    "bias_variance",
    "curve_verdicts",
    "fit_errors",
]
