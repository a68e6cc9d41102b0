""" "My network isn't working": Ng's bias/variance analysis, verdicts on training curves, an
automated doctor for the usual failures, and the course notes' claims about training measured.

* :func:`bias_variance`: avoidable bias, variance and mismatch from error rates, a verdict and
  the recipe's next steps; :func:`fit_errors`: the rates of a finished ``fit`` run.
* :func:`curve_verdicts`: what a ``fit`` history says (diverging, stuck, still improving,
  overfitting from an epoch, too noisy), each with its evidence.
* :func:`doctor`: one automated check per usual failure (inputs, final layer, gradients,
  initialisation, learning rate, overfitting one batch, an input-independent baseline, depth
  and width, batch size, regularisation, results), each pass, warn or fail with its evidence
  and a suggestion.
* :func:`momentum_paths`, :func:`sgd_vs_full_batch`, :func:`regularisation_ablation`: the
  notes' claims (momentum damps the ping-pong; mini-batch SGD is noisy but goes down; L2 and
  dropout shrink the training-validation gap), each one compiled program.
"""

from cnnjax.diagnose._bias_variance import NEXT_STEPS as NEXT_STEPS
from cnnjax.diagnose._bias_variance import BiasVarianceResult as BiasVarianceResult
from cnnjax.diagnose._bias_variance import bias_variance as bias_variance
from cnnjax.diagnose._claims import ABLATION_SETTINGS as ABLATION_SETTINGS
from cnnjax.diagnose._claims import MOMENTUM_METHODS as MOMENTUM_METHODS
from cnnjax.diagnose._claims import MomentumPathsResult as MomentumPathsResult
from cnnjax.diagnose._claims import RegularisationAblationResult as RegularisationAblationResult
from cnnjax.diagnose._claims import SgdVsFullBatchResult as SgdVsFullBatchResult
from cnnjax.diagnose._claims import momentum_paths as momentum_paths
from cnnjax.diagnose._claims import regularisation_ablation as regularisation_ablation
from cnnjax.diagnose._claims import sgd_vs_full_batch as sgd_vs_full_batch
from cnnjax.diagnose._curves import CurveVerdict as CurveVerdict
from cnnjax.diagnose._curves import curve_verdicts as curve_verdicts
from cnnjax.diagnose._curves import fit_errors as fit_errors
from cnnjax.diagnose._doctor import DoctorResult as DoctorResult
from cnnjax.diagnose._doctor import Finding as Finding
from cnnjax.diagnose._doctor import doctor as doctor

__all__ = [
    "ABLATION_SETTINGS",
    "MOMENTUM_METHODS",
    "NEXT_STEPS",
    "BiasVarianceResult",
    "CurveVerdict",
    "DoctorResult",
    "Finding",
    "MomentumPathsResult",
    "RegularisationAblationResult",
    "SgdVsFullBatchResult",
    "bias_variance",
    "curve_verdicts",
    "doctor",
    "fit_errors",
    "momentum_paths",
    "regularisation_ablation",
    "sgd_vs_full_batch",
]
