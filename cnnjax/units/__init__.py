"""What a single unit responds to (Zhou et al., ICLR 2015; Bau et al., CVPR 2017).

* :func:`top_images`: the images of a collection that excite each unit most, for every unit
  of several layers at once, streamed and resumable; :func:`top_segments`: those images
  segmented by their unit, with crops.
* :func:`class_selectivity`: how much of a unit's top images share one class.
* :func:`unit_segmentation`: segment images by units' activations.
"""

from cnnjax.units._segment import UnitSegmentationResult as UnitSegmentationResult
from cnnjax.units._segment import unit_segmentation as unit_segmentation
from cnnjax.units._selectivity import ClassSelectivityResult as ClassSelectivityResult
from cnnjax.units._selectivity import class_selectivity as class_selectivity
from cnnjax.units._top import SAVE_SECONDS as SAVE_SECONDS
from cnnjax.units._top import TopImagesResult as TopImagesResult
from cnnjax.units._top import TopSegmentsResult as TopSegmentsResult
from cnnjax.units._top import top_images as top_images
from cnnjax.units._top import top_segments as top_segments

__all__ = [
    "SAVE_SECONDS",
    "ClassSelectivityResult",
    "TopImagesResult",
    "TopSegmentsResult",
    "UnitSegmentationResult",
    "class_selectivity",
    "top_images",
    "top_segments",
    "unit_segmentation",
]
