"""The demo's section on the course notes' claims about training: the ping-pong of gradient
descent across a narrow valley and how momentum damps it, the noise of mini-batch steps, and
what L2 and dropout do to the training-validation gap of FashionNet on Fashion-MNIST."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnjax import diagnose
from cnnjax.data import DataNotFoundError, channel_stats, load_fashion_mnist, split_train_val
from cnnjax.report._context import DemoContext
from cnnjax.report._html import Section, figure, table
from cnnjax.report._plots import line_plot

__all__ = ["claims_section"]

_COLOURS = [(120, 120, 120), (220, 110, 40), (60, 105, 185)]  # one per method

# Quick settings keep the section near half a minute on 2 CPU cores, most of it compiling and
# reading Fashion-MNIST; ``full`` uses the defaults of benchmarks/claims.py, whose figures the
# README quotes (keep the two in step).
_QUICK = {"sgd": dict(examples=64, batch_size=8, steps=40, learning_rate=0.02),
          "ablation": dict(train=256, val=256, epochs=2, batch_size=32)}  # fmt: skip
_FULL = {"sgd": dict(examples=256, batch_size=32, steps=200, learning_rate=0.02),
         "ablation": dict(train=1024, val=2000, epochs=30, batch_size=32)}  # fmt: skip


def _font():
    return ImageFont.load_default()


def paths_figure(result, *, size: tuple[int, int] = (720, 300)) -> np.ndarray:
    """The momentum paths over the quadratic's contour lines, with a legend.

    Args:
      result: a :class:`~cnnjax.diagnose.MomentumPathsResult`.
      size: ``(width, height)`` of the plot area in pixels (the legend goes below it).

    Returns:
      An RGB image ``[h, w, 3]`` in [0, 1].
    """
    paths = np.asarray(result.paths, np.float64)
    losses = np.asarray(result.losses, np.float64)
    kappa = float(result.condition)
    finite = paths[np.isfinite(paths).all(axis=-1)]
    x0, y0 = paths[0, 0]
    # The window: every path, unless one diverges (then 3x the start's offsets, clipped).
    span = max(abs(x0), abs(y0))
    xlo = max(min(finite[:, 0].min(), -0.05 * span), -3 * span)
    xhi = min(max(finite[:, 0].max(), 0.15 * span), 3 * span)
    ylim = min(max(abs(finite[:, 1]).max(), abs(y0)), 3 * abs(y0)) * 1.15
    pw, ph = size
    margin = 0.04 * (xhi - xlo)
    xlo, xhi = xlo - margin, xhi + margin

    def px(x, y):
        u = (x - xlo) / (xhi - xlo) * (pw - 1)
        v = (ylim - y) / (2 * ylim) * (ph - 1)
        return (float(np.clip(u, -pw, 2 * pw)), float(np.clip(v, -ph, 2 * ph)))

    area = Image.new("RGB", (pw, ph), "white")
    draw = ImageDraw.Draw(area)
    f0 = float(losses[0, 0])
    theta = np.linspace(0.0, 2 * math.pi, 721)
    for k in range(12):  # level sets x^2 + kappa y^2 = 2c, c = f0 / 2^k
        c = f0 / 2**k
        xs, ys = math.sqrt(2 * c) * np.cos(theta), math.sqrt(2 * c / kappa) * np.sin(theta)
        draw.line([px(a, b) for a, b in zip(xs, ys)], fill=(215, 215, 215), width=1)
    draw.line([px(xlo, 0.0), px(xhi, 0.0)], fill=(235, 235, 235))
    for i in range(len(paths)):
        colour = _COLOURS[i % len(_COLOURS)]
        points = [px(a, b) for a, b in paths[i] if np.isfinite(a) and np.isfinite(b)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for p in points:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
    sx, sy = px(x0, y0)
    draw.ellipse([sx - 4, sy - 4, sx + 4, sy + 4], outline=(0, 0, 0), width=2)
    mx, my = px(0.0, 0.0)
    draw.line([(mx - 5, my), (mx + 5, my)], fill=(0, 0, 0), width=2)
    draw.line([(mx, my - 5), (mx, my + 5)], fill=(0, 0, 0), width=2)

    font = _font()
    left, top, legend = 8, 24, 18 * len(paths) + 8
    canvas = Image.new("RGB", (pw + 2 * left, top + ph + legend), "white")
    canvas.paste(area, (left, top))
    cd = ImageDraw.Draw(canvas)
    cd.rectangle([left - 1, top - 1, left + pw, top + ph], outline=(120, 120, 120))
    stretch = (ph / (2 * ylim)) / (pw / (xhi - xlo))
    title = (
        f"f = (x^2 + {kappa:g} y^2) / 2, learning rate {result.learning_rate:g}, momentum "
        f"{result.momentum:g}, {paths.shape[1] - 1} steps (y drawn {stretch:.1f}x larger than x)"
    )
    cd.text((left, 6), title, fill=(0, 0, 0), font=font)
    for i, name in enumerate(result.methods):
        colour = _COLOURS[i % len(_COLOURS)]
        y = top + ph + 6 + 18 * i
        cd.rectangle([left, y + 3, left + 14, y + 9], fill=colour)
        pingpong = float(result.pingpong[i])
        text = f"{name}: across the valley {pingpong:.3g} x |y0|, final loss {losses[i, -1]:.3g}"
        cd.text((left + 20, y), text, fill=(20, 20, 20), font=font)
    return np.asarray(canvas, np.float32) / 255.0


def ablation_figure(result) -> np.ndarray:
    """Training and validation accuracy per setting of a regularisation ablation, side by
    side, with the gap written above each pair.

    Args:
      result: a :class:`~cnnjax.diagnose.RegularisationAblationResult`.

    Returns:
      An RGB image ``[h, w, 3]`` in [0, 1].
    """
    train, val = np.asarray(result.train_accuracy, float), np.asarray(result.val_accuracy, float)
    lo = max(0.0, math.floor(min(train.min(), val.min()) * 10 - 1) / 10)
    hi = 1.0
    bar, gap, height, left, top = 34, 40, 220, 44, 40
    n = len(result.settings)
    width = left + n * (2 * bar + gap) + 130
    img = Image.new("RGB", (width, top + height + 36), "white")
    draw = ImageDraw.Draw(img)
    font = _font()
    draw.text((left, 6), f"accuracy after {result.epochs} epochs (evaluation mode); above: the gap "
                         "(train - validation)", fill=(0, 0, 0), font=font)  # fmt: skip

    def ypx(v):
        return top + height - (v - lo) / (hi - lo) * height

    for t in np.arange(lo, hi + 1e-9, 0.1):
        draw.line([(left - 4, ypx(t)), (left + n * (2 * bar + gap), ypx(t))], fill=(225, 225, 225))
        draw.text((4, ypx(t) - 6), f"{t:.0%}", fill=(60, 60, 60), font=font)
    colours = ((60, 105, 185), (220, 110, 40))
    for i, name in enumerate(result.settings):
        x = left + gap // 2 + i * (2 * bar + gap)
        for j, v in enumerate((train[i], val[i])):
            draw.rectangle([x + j * bar, ypx(v), x + (j + 1) * bar - 3, ypx(lo)], fill=colours[j])
        draw.text(
            (x, ypx(max(train[i], val[i])) - 14), f"{float(result.gap[i]):+.1%}", fill=(0, 0, 0), font=font
        )
        draw.text((x, top + height + 6), name, fill=(20, 20, 20), font=font)
    lx = left + n * (2 * bar + gap) + 10
    for j, label in enumerate(("training", "validation")):
        draw.rectangle([lx, top + 10 + 18 * j, lx + 12, top + 22 + 18 * j], fill=colours[j])
        draw.text((lx + 18, top + 10 + 18 * j), label, fill=(20, 20, 20), font=font)
    return np.asarray(img, np.float32) / 255.0


def _named(names, values, digits: int) -> dict[str, float]:
    """``{name: value}`` rounded for results.json (float64 first: float32's digits would show)."""
    return {name: round(float(v), digits) for name, v in zip(names, np.asarray(values, np.float64))}


def claims_section(ctx: DemoContext) -> Section:
    """The course notes' claims about training, measured (``cnnjax.diagnose``): momentum
    against the ping-pong, mini-batch noise, and L2 and dropout against the gap."""
    record: dict = {}
    ctx.results["claims"] = record
    paths = diagnose.momentum_paths()
    record["momentum"] = {
        "learning_rate": paths.learning_rate, "momentum": paths.momentum, "condition": paths.condition,
        "pingpong": _named(paths.methods, paths.pingpong, 3),
        "final_loss": _named(paths.methods, paths.losses[:, -1], 6),
    }  # fmt: skip
    pp = np.asarray(paths.pingpong)
    body = (
        "<p>Three claims of the course notes about training, measured with "
        "<code>cnnjax.diagnose</code> (the README quotes the full runs of "
        "<code>benchmarks/claims.py</code>).</p>"
        f"<p><b>Momentum against the ping-pong</b> (<code>momentum_paths</code>): on the narrow valley "
        f"f = (x<sup>2</sup> + {paths.condition:g} y<sup>2</sup>) / 2 with learning rate "
        f"{paths.learning_rate:g}, every step of plain gradient descent overshoots the valley's floor: "
        f"it travels {pp[0]:.1f} times its starting offset across the valley while creeping along it. The "
        f"notes' momentum (one step back along the previous gradient, momentum {paths.momentum:g}) "
        f"cancels part of each flipped gradient ({pp[1]:.1f} times) and heavy ball damps it most "
        f"({pp[2]:.1f} times); both end lower after the same {paths.paths.shape[1] - 1} steps. The notes' "
        "form needs a small momentum here: at 0.5 it ping-pongs more than plain descent.</p>"
        + figure(
            paths_figure(paths),
            "Three methods from the same start (circle) to the minimum (cross)",
            width=736,
        )  # fmt: skip
    )
    try:
        train_all, _ = load_fashion_mnist(progress=False)
    except DataNotFoundError:
        why = ("Fashion-MNIST was not found here, so the mini-batch and regularisation figures are not "
               "shown (<code>cnnjax.data.load_fashion_mnist(download=True)</code> fetches it; or set "
               "<code>CNNJAX_DATA</code> to its folder).")  # fmt: skip
        record["fashion_mnist"] = "not found"
        return Section("The notes' claims about training", body + f"<p>{why}</p>")
    settings = _FULL if ctx.full else _QUICK
    train, val = split_train_val(train_all, 0.1, key=0)
    body += _sgd_part(train, settings["sgd"], record) + _ablation_part(
        train, val, settings["ablation"], record
    )
    return Section("The notes' claims about training", body)


def _sgd_part(train, s: dict, record: dict) -> str:
    from flax import nnx

    from cnnjax._src.contract import ValueMapping
    from cnnjax.models import FashionNet, fashionnet_model

    images, labels = train.images[: s["examples"]], train.labels[: s["examples"]]
    mean, std = channel_stats(images)
    mapping = ValueMapping(mean=tuple(map(float, mean)), std=tuple(map(float, std)))
    model = fashionnet_model(FashionNet(rngs=nnx.Rngs(0), value_mapping=mapping))
    r = diagnose.sgd_vs_full_batch(model, (images, labels), learning_rate=s["learning_rate"],
                                   steps=s["steps"], batch_size=s["batch_size"], key=0)  # fmt: skip
    record["sgd_vs_full_batch"] = {
        "examples": r.examples, "batch_size": r.batch_size, "steps": s["steps"],
        "learning_rate": r.learning_rate,
        "noise": _named(r.methods, r.noise, 4), "rises": _named(r.methods, r.rises, 3),
        "first_loss": _named(r.methods, r.losses[:, 0], 4), "final_loss": _named(r.methods, r.final_loss, 4),
    }  # fmt: skip
    plot = line_plot({f"mini-batch ({r.batch_size})": r.losses[0], f"full batch ({r.examples})": r.losses[1]},
                     title="training loss before each step", xlabel="step", size=(640, 300))  # fmt: skip
    return (
        f"<p><b>Mini-batch against full batch</b> (<code>sgd_vs_full_batch</code>): a fresh FashionNet "
        f"trained {s['steps']} plain gradient steps (learning rate {r.learning_rate:g}) on {r.examples} "
        f"Fashion-MNIST training images, with mini-batches of {r.batch_size} or the whole set each step. "
        f"The mini-batch loss (each batch's own, as a training log shows it) jitters, with step-to-step "
        f"changes of standard deviation {r.noise[0]:.3f} against {r.noise[1]:.3f} for the full batch, yet "
        f"goes down too; on the whole set the two end at {r.final_loss[0]:.3f} and {r.final_loss[1]:.3f}, "
        f"the full batch having cost {r.examples // r.batch_size} times as much per step.</p>"
        + figure(plot, "Per-step training loss", width=640)
    )


def _ablation_part(train, val, s: dict, record: dict) -> str:
    r = diagnose.regularisation_ablation((train.images[: s["train"]], train.labels[: s["train"]]),
                                (val.images[: s["val"]], val.labels[: s["val"]]),
                                epochs=s["epochs"], batch_size=s["batch_size"], key=0)  # fmt: skip
    rows = [(name, f"{r.l2[i]:g}", f"{r.dropout_rate[i]:g}", f"{r.train_accuracy[i]:.1%}",
             f"{r.val_accuracy[i]:.1%}", f"{r.gap[i]:+.1%}", f"{r.train_loss[i]:.3f}", f"{r.val_loss[i]:.3f}")
            for i, name in enumerate(r.settings)]  # fmt: skip
    record["ablation"] = {
        "train_examples": s["train"], "val_examples": s["val"], "epochs": r.epochs,
        "batch_size": s["batch_size"],
        **{name: {"train_accuracy": round(float(r.train_accuracy[i]), 4),
                  "val_accuracy": round(float(r.val_accuracy[i]), 4), "gap": round(float(r.gap[i]), 4)}
           for i, name in enumerate(r.settings)},
    }  # fmt: skip
    return (
        f"<p><b>L2 and dropout against the gap</b> (<code>regularisation_ablation</code>): FashionNet "
        f"trained {r.epochs} epochs on {s['train']} training images four ways (no regularisation, L2 "
        f"{r.l2[1]:g}, dropout {r.dropout_rate[2]:g}, both) from the same initialisation and batches, the "
        "four runs one program vmapped over the settings, then scored in evaluation mode on the training "
        f"images and {s['val']} validation images. The gap (training minus validation accuracy) is "
        "Ng's variance: what the regularisers are for."
        + (
            " These quick settings are too short to overfit; the README's figures come from longer runs."
            if s is _QUICK["ablation"]
            else ""
        )
        + "</p>"
        + table(["setting", "L2", "dropout", "train acc", "val acc", "gap", "train loss", "val loss"], rows)
        + figure(ablation_figure(r), "Training and validation accuracy per setting", width=520)
    )
