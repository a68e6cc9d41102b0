"""Figures drawn with Pillow: image grids with a caption under every tile."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnjax._src.image_io import image_grid

__all__ = ["captioned_grid", "rgb"]


def rgb(image, what: str = "image") -> np.ndarray:
    """One image as float32 ``[h, w, 3]``: a leading batch of one is dropped and a grey
    channel repeated; any other shape is refused, naming ``what``."""
    arr = np.asarray(image, np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"{what} must be [h, w, 1 or 3], got shape {np.shape(image)}")
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def captioned_grid(
    images, captions: Sequence[str], cols: int | None = None, *, scale: int = 1, pad: int = 4
) -> np.ndarray:
    """Tile ``images`` ``[n, h, w, c]`` (in [0, 1]) with one caption line under each.

    Args:
      images: the tiles.
      captions: one string per tile (long ones are cut to the tile's width).
      cols: columns (default: a near-square grid).
      scale: integer upscaling of every tile (nearest neighbour), for small images.
      pad: white gutter in pixels.

    Returns:
      An RGB image ``[H, W, 3]`` in [0, 1].
    """
    arr = np.asarray(images, np.float32)
    if arr.ndim != 4:
        raise ValueError(f"images must be [n, h, w, c], got shape {arr.shape}")
    if len(captions) != len(arr):
        raise ValueError(f"{len(captions)} captions for {len(arr)} images")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, _ = arr.shape
    font = ImageFont.load_default()
    line = 14
    tiles = []
    for image, caption in zip(arr, captions):
        tile = Image.new("RGB", (w, h + line), "white")
        tile.paste(Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)), (0, 0))
        draw = ImageDraw.Draw(tile)
        text = str(caption)
        while text and draw.textlength(text, font=font) > w - 2:
            text = text[:-1]
        draw.text((1, h + 1), text, fill=(30, 30, 30), font=font)
        tiles.append(np.asarray(tile, np.float32) / 255.0)
    cols = min(n, math.ceil(math.sqrt(n)) if cols is None else cols)
    return image_grid(np.stack(tiles), cols=cols, pad=pad)
