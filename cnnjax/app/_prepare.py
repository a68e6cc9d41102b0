"""The images people annotate: each unit's top images segmented by the unit (Zhou et al. 2015),
computed once with :func:`cnnjax.units.top_images` and written as PNG crops."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cnnjax._src.contract import Model
from cnnjax._src.image_io import save_image
from cnnjax.data import ImageCollection
from cnnjax.units import top_images, top_segments

__all__ = ["prepare_crops"]

_SIDE = 150  # crops are enlarged (nearest pixel) to at least this


def prepare_crops(
    model: Model,
    collection: ImageCollection,
    layer: str,
    units: Sequence[int],
    out: str | Path,
    *,
    top_k: int = 9,
    dim: float = 0.25,
    progress: bool = True,
) -> Path:
    """Write ``out/LAYER/UNIT/RANK.png`` for each unit: its ``top_k`` images (best first) with
    everything outside the unit's segment dimmed to ``dim``; units whose crops are all there
    already are kept. The tally is resumable (``out/top_images.ckpt``). Returns ``out``.
    """
    out = Path(out)
    missing = [
        u for u in units if not all((out / layer / str(u) / f"{r}.png").is_file() for r in range(top_k))
    ]
    if not missing:
        return out
    top = top_images(model, collection, layer, top_k=top_k, checkpoint_dir=out, progress=progress)
    for start in tqdm(range(0, len(missing), 16), desc="crops", disable=not progress, file=sys.stderr):
        seg = top_segments(model, collection, top, layer, missing[start : start + 16])
        for row, unit in enumerate(seg.units.tolist()):
            for rank in range(top_k):
                image = seg.images[row, rank]
                shown = np.where(seg.masks[row, rank][..., None], image, dim * image)
                scale = max(1, -(-_SIDE // shown.shape[0]))
                save_image(out / layer / str(unit) / f"{rank}.png", shown.repeat(scale, 0).repeat(scale, 1))
    return out
