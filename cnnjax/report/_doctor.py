"""The doctor's page: every check with its status, evidence and suggestion, and the pictures
behind them (the learning-rate range test, gradient norms and activation scales per layer, the
confusion matrix, prediction samples and the most confidently wrong validation images)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnjax.diagnose import DoctorResult
from cnnjax.report._figures import captioned_grid
from cnnjax.report._html import Report, Section, figure, table
from cnnjax.report._plots import line_plot

__all__ = ["doctor_report"]

_MARK = {"pass": "&#10004; pass", "warn": "&#9888; warn", "fail": "&#10008; fail"}
_COLOUR = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}


def doctor_report(
    out: str | Path,
    result: DoctorResult,
    images,
    labels,
    class_names: Sequence[str] | None = None,
    *,
    title: str = "cnnjax doctor",
) -> Path:
    """Write ``out/index.html``: the findings of :func:`cnnjax.diagnose.doctor` and their pictures.

    Args:
      out: the folder (created; the page is written atomically).
      result: what ``doctor`` returned.
      images: the validation images ``doctor`` checked (``result.predictions`` are theirs).
      labels: their labels.
      class_names: names of the classes (default: the indices).
      title: the page's title.

    Returns:
      The path of the page.
    """
    images = np.asarray(images)[: len(result.predictions)]
    labels = np.asarray(labels)[: len(result.predictions)]
    k = result.confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    counts = {s: sum(f.status == s for f in result.findings) for s in ("pass", "warn", "fail")}
    report = Report(
        title, intro=f"{counts['fail']} failed, {counts['warn']} warnings, {counts['pass']} passed."
    )

    rows = "".join(
        f'<tr><td>{html.escape(f.check)}</td><td style="color:{_COLOUR[f.status]}">'
        f"<b>{_MARK[f.status]}</b></td><td>{html.escape(f.evidence)}</td>"
        f"<td>{html.escape(f.suggestion) if f.status != 'pass' else ''}</td></tr>"
        for f in result.findings
    )
    report.add(Section("Findings", "<table><tr><th>check</th><th>status</th><th>evidence</th><th>suggestion"
                       f"</th></tr>{rows}</table>"))  # fmt: skip

    lrs = np.asarray(result.learning_rates)
    curves = np.asarray(result.range_losses)
    body = ("<p>SGD with momentum 0.9 on the training set's mini-batches, one run per rate, all rates one "
            "vmapped program.</p>")  # fmt: skip
    if curves.size:
        end = {"training loss at the end": np.mean(curves[:, -5:], 1)}
        body += figure(
            line_plot(end, x=np.log10(lrs), title="learning-rate range test", xlabel="log10(learning rate)"),
            "The loss of the last 5 steps of each run",
            width=480,
        )
        top = 2 * max(
            float(np.nanmax(np.where(np.isfinite(curves[:, 0]), curves[:, 0], np.nan))), math.log(k)
        )
        shown = {f"{lr:.2g}": np.minimum(curves[i], top) for i, lr in enumerate(lrs) if i % 2 == 0}
        body += figure(
            line_plot(shown, title="loss per step", xlabel="step"),
            "The loss per step at every "
            f"other rate, cut at {top:.3g} (a diverged run ends where its loss stops being finite)",
            width=480,
        )
    report.add(Section("Learning rate", body))

    layer_rows = [[name, f"{result.grad_norms[name]:.3g}"] for name in result.grad_norms]
    act_rows = [[name, f"{v:.3g}"] for name, v in result.activation_std.items()]
    noise = (f"about {result.noise_scale:.3g} examples" if math.isfinite(result.noise_scale)
             else "beyond what the probe's examples can measure")  # fmt: skip
    report.add(
        Section(
            "Gradients and activations",
            table(["layer", "gradient norm"], layer_rows)
            + table(["layer", "activation std"], act_rows)
            + f"<p>Gradient noise scale B_simple (McCandlish et al. 2018): {noise}.</p>",
        )
    )

    header = ["true \\ predicted", *names]
    conf_rows = [[names[i], *result.confusion[i].tolist()] for i in range(k)]
    body = table(header, conf_rows)
    n = min(16, len(images))
    if n:
        caps = [f"{_short(names[p])} {c:.0%}" + ("" if p == y else " x")
                for p, c, y in zip(result.predictions[:n], result.confidence[:n], labels[:n])]  # fmt: skip
        body += figure(
            captioned_grid(images[:n], caps, cols=8, scale=_scale(images)),
            "Prediction samples: the predicted class and its probability (x: wrong)",
            width=640,
        )
    wrong = np.asarray(result.confident_wrong)
    if len(wrong):
        caps = [f"{_short(names[result.predictions[i]])} {result.confidence[i]:.0%}, is "
                f"{_short(names[labels[i]])}" for i in wrong]  # fmt: skip
        body += figure(
            captioned_grid(images[wrong], caps, cols=4, scale=_scale(images) * 2),
            "The most confidently wrong validation images: predicted, probability, truth",
            width=640,
        )
    report.add(Section("Results", body))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return report.save(out / "index.html")


def _short(name: str) -> str:
    return name.split(",")[0][:12]


def _scale(images: np.ndarray) -> int:
    return max(1, 64 // max(1, images.shape[1]))
