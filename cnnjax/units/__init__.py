"""What a single unit responds to (Zhou et al., ICLR 2015; Bau et al., CVPR 2017).

* :func:`top_images`: the images of a collection that excite each unit most, for every unit
  of several layers at once, streamed and resumable; :func:`top_segments`: those images
  segmented by their unit, with crops.
* :func:`class_selectivity`: how much of a unit's top images share one class.
* :func:`dissect`: Network Dissection over Broden-layout concept data; :func:`semantic_types`:
  the detectors of each layer by Zhou et al.'s six semantic types.
* :func:`unit_segmentation`: segment images by units' activations.
"""

from cnnjax.units._dissect import CATEGORY_TYPES as CATEGORY_TYPES
from cnnjax.units._dissect import SEMANTIC_TYPES as SEMANTIC_TYPES
from cnnjax.units._dissect import SURFACE_CONCEPTS as SURFACE_CONCEPTS
from cnnjax.units._dissect import DissectResult as DissectResult
from cnnjax.units._dissect import dissect as dissect
from cnnjax.units._dissect import semantic_type as semantic_type
from cnnjax.units._dissect import semantic_types as semantic_types
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
    "CATEGORY_TYPES",
    "SAVE_SECONDS",
    "SEMANTIC_TYPES",
    "SURFACE_CONCEPTS",
    "DissectResult",
    "ClassSelectivityResult",
    "TopImagesResult",
    "TopSegmentsResult",
    "UnitSegmentationResult",
    "class_selectivity",
    "dissect",
    "semantic_type",
    "semantic_types",
    "top_images",
    "top_segments",
    "unit_segmentation",
]
