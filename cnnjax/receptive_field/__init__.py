"""Receptive fields of a model's units: theoretical, empirical and effective.

* :func:`theoretical` (probed from the model itself) gives every spatial layer's field size,
  stride, padding and the input box of every position; :func:`gradient_support` cross-checks
  it; :func:`centre_matrices` and :func:`upsample_to_input` place a layer's maps at the
  centres of its fields.
* :func:`empirical`: Zhou et al.'s occlusion estimate (ICLR 2015).
* :func:`effective`: Luo et al.'s gradient of a centre unit (NIPS 2016).

Empirical and effective sizes (:func:`field_size`) are sides of the square with the area where
the map is at least half its maximum, so the three kinds compare as lengths.
"""

from cnnjax.receptive_field._effective import EffectiveResult as EffectiveResult
from cnnjax.receptive_field._effective import effective as effective
from cnnjax.receptive_field._effective import field_size as field_size
from cnnjax.receptive_field._empirical import EmpiricalResult as EmpiricalResult
from cnnjax.receptive_field._empirical import empirical as empirical
from cnnjax.receptive_field._theoretical import ReceptiveField as ReceptiveField
from cnnjax.receptive_field._theoretical import centre_matrices as centre_matrices
from cnnjax.receptive_field._theoretical import gradient_support as gradient_support
from cnnjax.receptive_field._theoretical import theoretical as theoretical
from cnnjax.receptive_field._theoretical import upsample_to_input as upsample_to_input

__all__ = [
    "EffectiveResult",
    "EmpiricalResult",
    "ReceptiveField",
    "centre_matrices",
    "effective",
    "empirical",
    "field_size",
    "gradient_support",
    "theoretical",
    "upsample_to_input",
]
