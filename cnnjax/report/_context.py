"""What every section of the demo gets: the model, the photos, the settings, a timer log and the
figures the sections measured."""

from __future__ import annotations

import dataclasses

import numpy as np

from cnnjax._src.contract import Model

__all__ = ["DemoContext"]


@dataclasses.dataclass
class DemoContext:
    """What every demo section gets: the model, the photos, the settings, a timer log, and
    ``results``, where sections record the figures they measured (written to
    ``results.json`` beside the report)."""

    model: Model
    photos: dict[str, np.ndarray]
    full: bool = False
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    results: dict[str, dict] = dataclasses.field(default_factory=dict)
