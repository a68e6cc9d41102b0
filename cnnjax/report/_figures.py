"""Figures drawn with Pillow: image grids with a caption under every tile, and the classic
adversarial-example figure: original + magnified perturbation = adversarial image, each with its
label and probability (Goodfellow et al. 2015, figure 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnjax._src.image_io import image_grid

__all__ = ["adversarial_figure", "captioned_grid", "rgb"]


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

    Example:
      >>> grid = captioned_grid(np.zeros((4, 28, 28, 1), np.float32), ["a", "b", "c", "d"])
      >>> grid.shape  # 2 x 2 tiles of 28 x 28 with a 14-pixel caption line, a 4-pixel gutter
      (88, 60, 3)
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


_GAP = 44  # room for the "+" and "=" between panels
_MIN_PANEL = 160  # small images (28x28) are enlarged, by an integer factor, to at least this


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _to_uint8_rgb(image: np.ndarray, scale: int) -> Image.Image:
    arr = rgb(image, "an image for the figure")
    img = Image.fromarray(np.round(np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def adversarial_figure(
    original,
    adversarial,
    *,
    original_label: str,
    original_prob: float,
    adversarial_label: str,
    adversarial_prob: float,
    title: str = "",
    magnify: float | None = None,
) -> np.ndarray:
    """Three panels: the original, the perturbation magnified, the adversarial image, labelled.

    The perturbation ``delta = adversarial - original`` is shown as ``0.5 + k * delta`` (grey
    is no change), with ``k = 0.5 / max|delta|`` unless ``magnify`` gives it, and the factor
    and the L-infinity and L2 norms are written under it.

    Args:
      original, adversarial: ``[h, w, c]`` or ``[1, h, w, c]`` in [0, 1], c in {1, 3}.
      original_label, adversarial_label: class names (with the index if wanted).
      original_prob, adversarial_prob: the probabilities of those classes.
      title: a line above the panels (e.g. the attack and its epsilon).
      magnify: the factor k (default: full contrast).

    Returns:
      An RGB image ``[H, W, 3]``, float32 in [0, 1], for ``cnnjax.save_image`` or a report.

    Example:
      >>> x = np.full((32, 32, 3), 0.5, np.float32)
      >>> adv = x + np.random.default_rng(0).choice([-2, 2], x.shape).astype(np.float32) / 255
      >>> fig = adversarial_figure(x, adv, original_label="tiger cat", original_prob=0.39,
      ...                          adversarial_label="Egyptian cat", adversarial_prob=0.97,
      ...                          title="PGD, eps 2/255")
      >>> fig.shape, fig.dtype  # panels enlarged 5x, to 160 pixels
      ((230, 580, 3), dtype('float32'))

    Reference: Goodfellow, Shlens & Szegedy (2015), "Explaining and Harnessing Adversarial
    Examples", ICLR, figure 1.
    """
    x = np.asarray(original, np.float32).reshape(np.shape(original)[-3:])
    xa = np.asarray(adversarial, np.float32).reshape(np.shape(adversarial)[-3:])
    if x.shape != xa.shape:
        raise ValueError(f"original {x.shape} and adversarial {xa.shape} must have the same shape")
    delta = xa - x
    peak = float(np.abs(delta).max())
    k = float(magnify) if magnify is not None else (0.5 / peak if peak > 0 else 1.0)
    h, w = x.shape[:2]
    scale = max(1, -(-_MIN_PANEL // max(h, w)))
    panels = [_to_uint8_rgb(p, scale) for p in (x, 0.5 + k * delta, xa)]
    pw, ph = panels[0].size

    font, small, big = _font(13), _font(11), _font(26)
    top = 26 if title else 6
    text_h = 38
    width = 3 * pw + 2 * _GAP + 12
    canvas = Image.new("RGB", (width, top + ph + text_h + 6), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((6, 6), title, fill=(0, 0, 0), font=font)
    l2 = float(np.sqrt(np.sum(delta.astype(np.float64) ** 2)))
    captions = [
        (original_label, f"{original_prob:.1%}"),
        (f"perturbation x{k:.3g}", f"L-inf {peak * 255:.3g}/255, L2 {l2:.3g}"),
        (adversarial_label, f"{adversarial_prob:.1%}"),
    ]
    for i, (panel, (line1, line2)) in enumerate(zip(panels, captions)):
        left = 6 + i * (pw + _GAP)
        canvas.paste(panel, (left, top))
        draw.text((left, top + ph + 4), _fit(draw, line1, font, pw), fill=(0, 0, 0), font=font)
        draw.text((left, top + ph + 21), _fit(draw, line2, small, pw), fill=(70, 70, 70), font=small)
        if i < 2:
            sign = "+" if i == 0 else "="
            sw = draw.textlength(sign, font=big)
            draw.text((left + pw + (_GAP - sw) / 2, top + ph / 2 - 16), sign, fill=(0, 0, 0), font=big)
    return np.asarray(canvas, np.float32) / 255.0


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
