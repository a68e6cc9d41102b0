"""What a single unit responds to: segmenting images by a unit's activations (Zhou et al.,
ICLR 2015)."""

from cnnjax.units._segment import UnitSegmentationResult as UnitSegmentationResult
from cnnjax.units._segment import unit_segmentation as unit_segmentation

__all__ = ["UnitSegmentationResult", "unit_segmentation"]
