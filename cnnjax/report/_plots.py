"""Small line plots drawn with Pillow (no plotting library needed): training curves and
robustness curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["line_plot", "robustness_plot", "training_curves"]

_COLOURS = [(74, 123, 208), (220, 110, 40), (60, 160, 90), (170, 70, 160), (120, 120, 120)]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= min((m for m in (1, 2, 5, 10) if m * step >= raw), default=10)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def line_plot(
    series: Mapping[str, Sequence[float]],
    *,
    x: Sequence[float] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = (480, 300),
) -> np.ndarray:
    """Draw named series as lines on shared axes; return an RGB image ``[h, w, 3]`` in [0, 1].

    Args:
      series: name -> y values (all the same length as ``x``); non-finite values are skipped.
      x: the x values (default 1, 2, ...).
      title, xlabel, ylabel: labels.
      size: ``(width, height)`` in pixels.
    """
    if not series:
        raise ValueError("line_plot needs at least one series")
    n = max(len(v) for v in series.values())
    xs = np.asarray(x if x is not None else np.arange(1, n + 1), float)
    ys = [np.asarray(v, float) for v in series.values()]
    finite = np.concatenate([y[np.isfinite(y)] for y in ys] + [np.zeros(0)])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    w, h = size
    left, right, top, bottom = 52, 12, 24 if title else 10, 36
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, x1 = float(xs.min()), float(xs.max()) if xs.max() > xs.min() else float(xs.min()) + 1

    def px(xv, yv):
        return (left + (xv - x0) / (x1 - x0) * (w - left - right),
                top + (hi - yv) / (hi - lo) * (h - top - bottom))  # fmt: skip

    for t in _ticks(lo, hi):
        _, yy = px(x0, t)
        draw.line([(left, yy), (w - right, yy)], fill=(230, 230, 230))
        draw.text((4, yy - 6), f"{t:.3g}", fill=(80, 80, 80), font=font)
    for t in _ticks(x0, x1):
        xx, _ = px(t, lo)
        draw.text((xx - 6, h - bottom + 4), f"{t:.3g}", fill=(80, 80, 80), font=font)
    draw.rectangle([left, top, w - right, h - bottom], outline=(120, 120, 120))
    for i, (name, y) in enumerate(zip(series, ys)):
        colour = _COLOURS[i % len(_COLOURS)]
        points = [px(a, b) for a, b in zip(xs, y) if np.isfinite(b)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for p in points:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
        draw.text((left + 8 + 110 * i, top + 4), name, fill=colour, font=font)
    if title:
        draw.text((left, 6), title, fill=(0, 0, 0), font=font)
    if xlabel:
        draw.text(((w - 6 * len(xlabel)) // 2, h - 14), xlabel, fill=(0, 0, 0), font=font)
    if ylabel:
        draw.text((4, h - 14), ylabel, fill=(0, 0, 0), font=font)
    return np.asarray(img, np.float32) / 255.0


def training_curves(history: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Loss and accuracy per epoch, training and validation, side by side, as one RGB image.

    Args:
      history: ``fit``'s history (``FitResult.history``): one mapping per epoch with
        ``train_loss``, ``val_loss``, ``train_accuracy`` and ``val_accuracy``.

    Returns:
      An RGB image ``[h, w, 3]`` in [0, 1]: two :func:`line_plot` panels side by side.

    Example:
      >>> history = [{"train_loss": 1.0, "val_loss": 1.2, "train_accuracy": 0.5, "val_accuracy": 0.4},
      ...            {"train_loss": 0.6, "val_loss": 0.9, "train_accuracy": 0.7, "val_accuracy": 0.6}]
      >>> training_curves(history).shape  # two 480 x 300 plots
      (300, 960, 3)
    """

    def curves(name):
        return {split: [h[f"{prefix}_{name}"] for h in history]
                for split, prefix in (("train", "train"), ("validation", "val"))}  # fmt: skip

    loss = line_plot(curves("loss"), title="loss (cross-entropy)", xlabel="epoch")
    acc = line_plot(curves("accuracy"), title="accuracy", xlabel="epoch")
    return np.concatenate([loss, acc], axis=1)


def robustness_plot(curves: Any, *, per_255: bool = True, title: str = "") -> np.ndarray:
    """The robustness curve: accuracy under attack against epsilon.

    Args:
      curves: one :class:`~cnnjax.attacks.RobustnessCurveResult`, or a mapping from attack
        name to curve over the same epsilons (one line per attack).
      per_255: label epsilon in 8-bit levels (``eps * 255``), the usual unit for L-infinity.
      title: the plot's title.

    Returns:
      An RGB image ``[h, w, 3]`` in [0, 1] (by :func:`line_plot`).
    """
    if not isinstance(curves, Mapping):
        eps = curves.eps
        series = {"accuracy": curves.accuracy}
    else:
        if not curves:
            raise ValueError("robustness_plot needs at least one curve")
        eps = next(iter(curves.values())).eps
        if any(not np.array_equal(c.eps, eps) for c in curves.values()):
            raise ValueError("curves plotted together must share their epsilons")
        series = {f"{name} accuracy": c.accuracy for name, c in curves.items()}
    x = np.asarray(eps, np.float64) * (255.0 if per_255 else 1.0)
    return line_plot(series, x=x, title=title or "accuracy under attack",
                     xlabel="epsilon x 255" if per_255 else "epsilon", ylabel="")  # fmt: skip
