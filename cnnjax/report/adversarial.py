"""The classic adversarial-example figure: original + magnified perturbation = adversarial image,
each with its label and probability (Goodfellow et al. 2015, figure 1), drawn with NumPy and
Pillow only; and the demo's section on adversarial examples."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnjax.report.figures import rgb
from cnnjax.report.html import Section

if TYPE_CHECKING:
    from cnnjax.report.demo import DemoContext

__all__ = ["adversarial_figure", "adversarial_section"]

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

    Example::

      fig = adversarial_figure(x[0], adv.images[0], original_label="tiger cat",
                               original_prob=0.39, adversarial_label="Egyptian cat",
                               adversarial_prob=0.97, title="PGD, eps 2/255")

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


def adversarial_section(ctx: DemoContext) -> Section:
    """The demo's section: PGD across an epsilon sweep on the sample photos, in one call."""
    from cnnjax.report.html import figure, table
    from cnnjax.techniques import adversarial, robustness
    from cnnjax.techniques.classify import classify

    model, spec = ctx.model, ctx.model.spec
    names = list(ctx.photos)
    images = np.concatenate([ctx.photos[n] for n in names])
    probs, idx = classify(model, images)  # the classification section's compiled program
    labels, p0 = np.asarray(idx[:, 0]), np.asarray(probs[:, 0])
    levels = [0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 4] if ctx.full else [0.1, 0.3, 2]  # in 1/255
    eps = [v / 255 for v in levels]
    steps = 20 if ctx.full else 3
    curves = {"PGD": robustness.robustness_curve(model, images, labels, eps, steps=steps)}
    if ctx.full:
        curves["FGSM"] = robustness.robustness_curve(model, images, labels, eps, attack=adversarial.fgsm)
    pgd_curve = curves["PGD"]
    def num(v, fmt):  # no fooled image at this epsilon: no norm to average
        return "-" if np.isnan(v) else fmt.format(v)

    rows = [
        (f"{e * 255:.3g}/255", f"{a:.0%}", f"{s:.0%}", num(l2, "{:.3f}"), num(li * 255, "{:.3g}/255"))
        for e, a, s, l2, li in zip(pgd_curve.eps, pgd_curve.accuracy, pgd_curve.success_rate,
                                   pgd_curve.l2, pgd_curve.linf)  # fmt: skip
    ]
    shown = levels.index(2)
    res = pgd_curve.result
    figures = []
    for i, name in enumerate(names):
        y, j = int(labels[i]), int(res.predictions[shown, i])
        fig = adversarial_figure(
            images[i], np.asarray(res.images[shown, i]),
            original_label=f"{spec.class_name(y)} ({y})", original_prob=float(p0[i]),
            adversarial_label=f"{spec.class_name(j)} ({j})", adversarial_prob=float(res.confidence[shown, i]),
            title=f"{name}: PGD, eps 2/255, {int(res.steps[shown, i])} steps",
        )  # fmt: skip
        figures.append(figure(fig, "", width=520))
    results = getattr(ctx, "results", None)  # where the demo keeps measured figures (results.json)
    if results is not None:
        results["adversarial"] = {
            "method": f"pgd-{steps}", "eps": [float(e) for e in pgd_curve.eps],
            "accuracy": pgd_curve.accuracy.tolist(), "success_rate": pgd_curve.success_rate.tolist(),
            "mean_l2": [None if np.isnan(v) else float(v) for v in pgd_curve.l2],
        }  # fmt: skip
    plot = robustness.robustness_plot(curves if ctx.full else pgd_curve,
                                      title=f"PGD-{steps} on the {len(names)} photos")  # fmt: skip
    body = (
        f"<p>Untargeted PGD (Madry et al. 2018; L-infinity, {steps} steps of 2.5 eps / {steps}, random "
        f"start, per-image early stopping) against the model's own top-1 class, at {len(eps)} "
        f"epsilons in [0, 1] pixel units, all in one compiled call of "
        f"<code>cnnjax.attacks.robustness_curve</code> ({len(eps) * len(names)} images per step). "
        f"Accuracy is agreement with the clean top-1 class; norms are means over the fooled "
        f"images. Below 0.5/255 a perturbation does not even survive rounding to 8 bits.</p>"
        + table(["epsilon", "accuracy under attack", "success rate", "mean L2", "mean L-inf"], rows)
        + figure(plot, "Robustness curve", width=480)
        + "<p>The classic figure at eps = 2/255: original, perturbation magnified, adversarial "
        "image (<code>cnnjax attack IMAGE --method pgd --eps 2/255</code> writes it).</p>"
        + f"<div class=grid>{''.join(figures)}</div>"
    )
    return Section("Adversarial examples", body)
