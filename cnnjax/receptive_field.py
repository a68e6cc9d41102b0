"""Receptive fields of a model's units: ``cnnjax.receptive_field.theoretical(model)``,
``empirical(...)`` (occlusion, Zhou et al. 2015) and ``effective(...)`` (gradient, Luo et al.
2016). The implementation lives in :mod:`cnnjax.techniques.receptive_field`."""

from cnnjax.techniques.receptive_field import EffectiveRF as EffectiveRF
from cnnjax.techniques.receptive_field import EmpiricalRF as EmpiricalRF
from cnnjax.techniques.receptive_field import ReceptiveField as ReceptiveField
from cnnjax.techniques.receptive_field import effective as effective
from cnnjax.techniques.receptive_field import empirical as empirical
from cnnjax.techniques.receptive_field import field_size as field_size
from cnnjax.techniques.receptive_field import gradient_support as gradient_support
from cnnjax.techniques.receptive_field import theoretical as theoretical

__all__ = [
    "EffectiveRF",
    "EmpiricalRF",
    "ReceptiveField",
    "effective",
    "empirical",
    "field_size",
    "gradient_support",
    "theoretical",
]
