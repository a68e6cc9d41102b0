"""Heat maps over photos: a colour scale written out by hand, overlays, peak markers and
segmentation colouring (NumPy and Pillow only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from cnnjax.report._figures import rgb

__all__ = ["heat_colours", "heatmap", "overlay", "segmentation_overlay"]

# A dark-to-bright scale (black, violet, red, orange, pale yellow): brightness rises
# monotonically, so the map reads the same in greyscale. Anchors at 0, 0.25, 0.5, 0.75, 1.
_ANCHORS = (
    np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32) / 255.0
)

# Distinct colours for segments of several units.
_SEGMENT_COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180], [70, 240, 240],
     [245, 130, 48], [240, 50, 230]], np.float32,
) / 255.0  # fmt: skip


def heat_colours(values) -> np.ndarray:
    """Map values in [0, 1] (any shape) to RGB ``[..., 3]`` on the heat scale."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0) * (len(_ANCHORS) - 1)
    i = np.minimum(v.astype(np.int64), len(_ANCHORS) - 2)
    t = (v - i)[..., None]
    return _ANCHORS[i] * (1.0 - t) + _ANCHORS[i + 1] * t


def _normalised(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _resized(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if m.shape == tuple(size):
        return m
    return np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(size[::-1], Image.BILINEAR))


def heatmap(saliency) -> np.ndarray:
    """A map ``[h, w]`` as an RGB image ``[h, w, 3]`` in [0, 1], min-max normalised."""
    m = np.asarray(saliency, np.float32)
    if m.ndim != 2 or not np.all(np.isfinite(m)):
        raise ValueError(f"a heat map needs a finite [h, w] array, got shape {m.shape}")
    return heat_colours(_normalised(m))


def overlay(image, saliency, *, alpha: float = 0.5, mark_peak: bool = True) -> np.ndarray:
    """A heat map blended over a photo: ``(1 - alpha) image + alpha heat``.

    Args:
      image: ``[H, W, 3]`` or ``[1, H, W, 3]`` (or 1 channel) in [0, 1].
      saliency: ``[h, w]``; resized to ``H x W`` bilinearly if needed (upsample maps with
        their receptive fields' centres first for exact placement), min-max normalised.
      alpha: opacity of the heat map.
      mark_peak: draw a small cross at the map's maximum.

    Returns:
      float32 ``[H, W, 3]`` in [0, 1].

    Example:
      >>> photo = np.full((1, 32, 32, 3), 0.5, np.float32)
      >>> saliency = np.zeros((32, 32), np.float32)
      >>> saliency[8, 24] = 1.0
      >>> overlay(photo, saliency).shape
      (32, 32, 3)
    """
    img = rgb(image)
    m = np.asarray(saliency, np.float32)
    if m.ndim != 2:
        raise ValueError(f"saliency must be [h, w], got shape {m.shape}")
    m = _resized(m, img.shape[:2])
    out = (1.0 - alpha) * img + alpha * heatmap(m)
    if mark_peak:
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        _cross(out, y, x)
    return np.clip(out, 0.0, 1.0)


def _cross(out: np.ndarray, y: int, x: int, r: int = 5) -> None:
    H, W = out.shape[:2]
    for d in range(-r, r + 1):
        for yy, xx in ((y + d, x), (y, x + d)):
            if 0 <= yy < H and 0 <= xx < W:
                out[yy, xx] = 1.0
    for d in range(-r, r + 1):  # a dark outline so the cross shows on bright maps too
        for yy, xx in ((y + d, x + 1), (y + 1, x + d)):
            if 0 <= yy < H and 0 <= xx < W:
                out[yy, xx] = 0.0


def segmentation_overlay(image, masks: Sequence | np.ndarray, *, alpha: float = 0.55) -> np.ndarray:
    """Colour each mask ``[units, H, W]`` over the photo, one colour per unit (later on top)."""
    img = np.asarray(image, np.float32)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    out = img * 0.6  # dimmed, so the segments stand out
    for u, mask in enumerate(np.asarray(masks, bool)):
        colour = _SEGMENT_COLOURS[u % len(_SEGMENT_COLOURS)]
        out = np.where(mask[..., None], (1.0 - alpha) * img + alpha * colour, out)
    return np.clip(out, 0.0, 1.0)
