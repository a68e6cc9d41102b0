"""The demo's section on breaking CNNs: PGD across an epsilon sweep on the sample photos."""

from __future__ import annotations

import numpy as np

from cnnjax import attacks
from cnnjax.models import classify
from cnnjax.report._context import DemoContext
from cnnjax.report._figures import adversarial_figure
from cnnjax.report._html import Section, figure, table
from cnnjax.report._plots import robustness_plot

__all__ = ["adversarial_section"]


def adversarial_section(ctx: DemoContext) -> Section:
    """The demo's section: PGD across an epsilon sweep on the sample photos, in one call."""
    model, spec = ctx.model, ctx.model.spec
    names = list(ctx.photos)
    images = np.concatenate([ctx.photos[n] for n in names])
    probs, idx = classify(model, images)  # the classification section's compiled program
    labels, p0 = np.asarray(idx[:, 0]), np.asarray(probs[:, 0])
    levels = [0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 4] if ctx.full else [0.1, 0.3, 2]  # in 1/255
    eps = [v / 255 for v in levels]
    steps = 20 if ctx.full else 3
    curves = {"PGD": attacks.robustness_curve(model, images, labels, eps, steps=steps)}
    if ctx.full:
        curves["FGSM"] = attacks.robustness_curve(model, images, labels, eps, attack=attacks.fgsm)
    pgd_curve = curves["PGD"]

    def num(v, fmt):  # no fooled image at this epsilon: no norm to average
        return "-" if np.isnan(v) else fmt.format(v)

    rows = [
        (f"{e * 255:.3g}/255", f"{a:.0%}", f"{s:.0%}", num(l2, "{:.3f}"), num(li * 255, "{:.3g}/255"))
        for e, a, s, l2, li in zip(
            pgd_curve.eps, pgd_curve.accuracy, pgd_curve.success_rate, pgd_curve.l2, pgd_curve.linf
        )  # fmt: skip
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
    ctx.results["adversarial"] = {
        "method": f"pgd-{steps}", "eps": [float(e) for e in pgd_curve.eps],
        "accuracy": pgd_curve.accuracy.tolist(), "success_rate": pgd_curve.success_rate.tolist(),
        "mean_l2": [None if np.isnan(v) else float(v) for v in pgd_curve.l2],
    }  # fmt: skip
    plot = robustness_plot(curves if ctx.full else pgd_curve,
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
