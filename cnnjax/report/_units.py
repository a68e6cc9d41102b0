"""Pictures of what units mean: a unit's top images with their segments (Zhou et al. 2015,
Fig. 3), a page per layer, and the semantic types of a layer's units as stacked bars (Fig. 5)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnjax.report._figures import captioned_grid
from cnnjax.report._html import Report, Section, figure, table

__all__ = ["TYPE_COLOURS", "selectivity_table", "type_chart", "unit_figure", "units_page"]

#: One colour per semantic type, in the order of the stacked bars.
TYPE_COLOURS = {
    "simple elements and colours": (0.96, 0.76, 0.26),
    "texture or material": (0.55, 0.35, 0.20),
    "region or surface": (0.45, 0.70, 0.85),
    "object part": (0.60, 0.80, 0.40),
    "object": (0.20, 0.50, 0.25),
    "scene": (0.30, 0.30, 0.65),
}


def unit_figure(images, masks, scores: Sequence[float], *, dim: float = 0.25) -> np.ndarray:
    """A unit's top images (first row, with their scores) over their segments (second row:
    the image outside the segment dimmed to ``dim``).

    Args:
      images: ``[k, H, W, c]`` in [0, 1].
      masks: bool ``[k, H, W]``.
      scores: ``k`` scores.
      dim: brightness outside the segment.

    Returns:
      An RGB image in [0, 1].

    Example:
      >>> fig = unit_figure(np.ones((3, 28, 28, 1)), np.ones((3, 28, 28), bool), [3.0, 2.0, 1.0])
      >>> fig.shape
      (144, 176, 3)
    """
    images = np.asarray(images, np.float32)
    masks = np.asarray(masks, bool)
    if images.ndim != 4 or masks.shape != images.shape[:3] or len(scores) != len(images):
        raise ValueError(
            "expected images [k, H, W, c], masks [k, H, W] and k scores, got "
            f"{images.shape}, {masks.shape}, {len(scores)}"
        )
    segments = np.where(masks[..., None], images, dim * images)
    scale = max(1, 64 // images.shape[1])
    captions = [f"{s:.3g}" for s in scores] + ["segment"] * len(images)
    return captioned_grid(np.concatenate([images, segments]), captions, cols=len(images), scale=scale)


def type_chart(counts: Mapping[str, Mapping[str, int]], *, title: str = "") -> np.ndarray:
    """Stacked bars: per layer (x, in the given order), the share of its labelled units of each
    semantic type (:data:`TYPE_COLOURS`), with a legend.

    Args:
      counts: ``{layer: {type: units}}``.
      title: a line above the chart.

    Returns:
      An RGB image in [0, 1].

    Example:
      >>> chart = type_chart({"conv1": {"object": 1, "scene": 3}, "conv2": {}})
      >>> chart.shape[2], chart.dtype
      (3, dtype('float32'))
    """
    unknown = {t for c in counts.values() for t in c} - set(TYPE_COLOURS)
    if unknown:
        raise ValueError(f"unknown semantic types {sorted(unknown)}; the types are {list(TYPE_COLOURS)}")
    layers = list(counts)
    bar, gap, height, left, top, legend = 46, 18, 220, 44, 28, 190
    width = left + len(layers) * (bar + gap) + legend
    img = Image.new("RGB", (width, top + height + 40), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    if title:
        draw.text((left, 6), title, fill=(20, 20, 20), font=font)
    for frac in (0.0, 0.5, 1.0):
        y = top + height - frac * height
        draw.line([(left - 4, y), (left + len(layers) * (bar + gap), y)], fill=(220, 220, 220))
        draw.text((4, y - 6), f"{frac:.0%}", fill=(60, 60, 60), font=font)
    for i, layer in enumerate(layers):
        x = left + i * (bar + gap) + gap // 2
        total = sum(counts[layer].values())
        y = top + height
        for kind, colour in TYPE_COLOURS.items():
            share = counts[layer].get(kind, 0) / total if total else 0.0
            if share:
                h = share * height
                draw.rectangle([x, y - h, x + bar, y], fill=tuple(int(255 * c) for c in colour))
                y -= h
        draw.text((x, top + height + 4), layer[:8], fill=(20, 20, 20), font=font)
        draw.text((x, top + height + 18), f"n={total}", fill=(90, 90, 90), font=font)
    lx = left + len(layers) * (bar + gap) + 10
    for j, (kind, colour) in enumerate(reversed(list(TYPE_COLOURS.items()))):
        y = top + 10 + j * 18
        draw.rectangle([lx, y, lx + 12, y + 12], fill=tuple(int(255 * c) for c in colour))
        draw.text((lx + 18, y), kind, fill=(20, 20, 20), font=font)
    return np.asarray(img, np.float32) / 255.0


def units_page(
    title: str, layer: str, figures: Sequence[tuple[int, np.ndarray, str]], summary: str = ""
) -> Report:
    """A layer's page: a figure per unit (``(unit, image, caption)``) after a summary (HTML).

    Example:
      >>> page = units_page("units", "conv3", [(0, np.zeros((8, 8, 3)), "unit 0")])
      >>> "unit 0" in page.render()
      True
    """
    body = summary + '<div class="grid">'
    body += "".join(figure(image, html.escape(caption)) for _, image, caption in figures) + "</div>"
    report = Report(title)
    report.add(Section(f"Layer {layer}", body))
    return report


def selectivity_table(classes: np.ndarray, purity: np.ndarray, class_names: Sequence[str] | None) -> str:
    """A table of the 20 most class-selective units (:func:`cnnjax.units.class_selectivity`
    of one layer), most selective first.

    Example:
      >>> "<td>Shirt</td>" in selectivity_table(np.array([1, 0]), np.array([0.5, 1.0]), ["Bag", "Shirt"])
      True
    """
    order = np.argsort(-purity, kind="stable")[:20]
    name = (lambda c: class_names[c]) if class_names is not None else str
    return table(["unit", "majority class", "share of top images"],
                 [(int(u), name(int(classes[u])), f"{purity[u]:.0%}") for u in order])  # fmt: skip
