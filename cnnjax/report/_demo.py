"""``cnnjax demo``: a report of everything the library does, on the default model and photos.

Each technique contributes one section function ``(ctx: DemoContext) -> Section`` to
:data:`SECTIONS`; ``run_demo`` runs them in order with a progress bar and writes
``OUT/index.html``. Small sizes and step counts by default (the whole demo fits in a few
minutes on 2 CPU cores); ``full=True`` uses the published settings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from html import escape as html_escape
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from cnnjax._src.atomic import atomic_write_bytes
from cnnjax._src.samples import sample_photos
from cnnjax.models import classify, load_model, read_manifest
from cnnjax.report._attacks import adversarial_section
from cnnjax.report._context import DemoContext
from cnnjax.report._diagnose import claims_section
from cnnjax.report._html import Report, Section, bars, figure, table
from cnnjax.report._localisation import cam_section, receptive_field_section
from cnnjax.report._plots import training_curves
from cnnjax.report._semantics import units_section
from cnnjax.report._synthesis import (
    dream_section,
    fooling_section,
    invert_section,
    style_section,
    visualize_section,
)

__all__ = ["SECTIONS", "run_demo"]


def classification_section(ctx: DemoContext) -> Section:
    names = list(ctx.photos)
    images = np.concatenate([ctx.photos[n] for n in names])
    probs, idx = classify(ctx.model, images, top_k=5)
    probs, idx = np.asarray(probs), np.asarray(idx)
    figures = []
    for i, name in enumerate(names):
        labels = [f"{ctx.model.spec.class_name(int(c))} ({int(c)})" for c in idx[i]]
        figures.append(figure(images[i], f"<b>{name}</b>{bars(labels, probs[i])}"))
    body = (
        f"<p>Top-5 ImageNet classes of the sample photos (resized to "
        f"{ctx.model.spec.resize_size}, centre-cropped to {ctx.model.spec.input_size[0]}) by "
        f"<code>cnnjax.classify</code>.</p><div class=grid>{''.join(figures)}</div>"
    )
    return Section("Classification", body)


def model_section(ctx: DemoContext) -> Section:
    spec = ctx.model.spec
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(ctx.model.params))
    rows = [
        (layer.name, "x".join(map(str, layer.shape)), layer.stride or "", layer.receptive_field or "")
        for layer in spec.layers
    ]
    source = ", ".join(f"{k}: {v}" for k, v in spec.weights.items())
    body = (
        f"<p><b>{spec.name}</b>: {n_params:,} parameters and statistics, input "
        f"{spec.input_size[0]}x{spec.input_size[1]}x{spec.channels} in [0, 1], "
        f"{spec.num_classes} classes. Weights: {source}.</p>"
        + table(["layer", "shape (h x w x c)", "stride", "theoretical receptive field"], rows)
    )
    return Section("The model", body)


def training_section(ctx: DemoContext) -> Section:
    """The bundled FashionNet: how it was trained (curves from its manifest) and how well."""
    try:
        manifest, _ = read_manifest("fashionnet")
    except (OSError, ValueError) as e:
        return Section("Training", f"<p>The FashionNet weights are not available here ({e}).</p>")
    t = manifest["training"]
    config = t["config"]
    body = (
        f"<p><b>FashionNet</b> ({html_escape(manifest['spec']['architecture'])}) trained on "
        f"Fashion-MNIST with <code>cnnjax.training.fit</code>: {t['examples']['train']:,} training "
        f"and {t['examples']['validation']:,} validation images (a stratified split of the official "
        f"training set), {html_escape(t['optimizer'])} (learning rate "
        f"{config['learning_rate']}, momentum {config['momentum']}, divided by 10 at epochs "
        f"{', '.join(map(str, config['lr_drop_epochs']))}), L2 {config['l2']}, dropout 0.5, random "
        f"flips and {config['crop_pad']}-pixel crops, batch {config['batch_size']}, seed "
        f"{config['seed']}; {t['epochs_run']} epochs in {t['seconds']:.0f} s on {t['backend']}. "
        f"{html_escape(t['stopped'])}.</p>"
        f"<p>Best epoch {t['best_epoch']}: validation accuracy "
        f"<b>{manifest['validation_accuracy']:.2%}</b>; test accuracy (the official 10,000 test "
        f"images, scored once at the end) <b>{manifest['test_accuracy']:.2%}</b>.</p>"
        + figure(training_curves(t["history"]), "Loss and accuracy per epoch", width=960)
    )
    return Section("Training", body)


#: The demo's sections, in order: training (and the notes' claims about it), localisation, units,
#: synthesis, breaking CNNs.
SECTIONS: list[Callable[[DemoContext], Section]] = [
    classification_section, model_section, training_section, claims_section,
    cam_section, receptive_field_section, units_section,
    visualize_section, dream_section, invert_section, style_section,
    adversarial_section, fooling_section,
]  # fmt: skip


def run_demo(
    out: str | Path,
    *,
    model_name: str = "efficientnet_lite0",
    full: bool = False,
    progress: bool = True,
    extra_sections: Sequence[Callable[[DemoContext], Section]] = (),
) -> Path:
    """Write ``out/index.html`` (every section of :data:`SECTIONS`, then ``extra_sections``,
    on a bundled model) and ``out/results.json`` (the figures the sections measured, the
    settings and the timings). Packages above the report (the annotation app) add their
    sections through ``extra_sections``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a directory")
    start = time.perf_counter()
    model = load_model(model_name)
    ctx = DemoContext(model, sample_photos(model.spec.input_size[0], model.spec.resize_size), full)
    report = Report(
        "cnnjax demo",
        intro=f"Model <code>{model.spec.name}</code>, backend {jax.default_backend()}, "
        f"{'published' if full else 'quick'} settings.",
    )
    for section_fn in tqdm([*SECTIONS, *extra_sections], desc="demo", unit="section", disable=not progress):
        t = time.perf_counter()
        report.add(section_fn(ctx))
        ctx.timings[section_fn.__name__] = time.perf_counter() - t
    total = time.perf_counter() - start
    parts = ", ".join(f"{name.removesuffix('_section')} {t:.1f} s" for name, t in ctx.timings.items())
    report.intro += f" Written in {total:.1f} s ({parts})."
    seconds = {k.removesuffix("_section"): round(v, 2) for k, v in ctx.timings.items()}
    results = {"model": model.spec.name, "backend": jax.default_backend(), "full": full, "seconds": seconds,
               **ctx.results}  # fmt: skip
    atomic_write_bytes(out / "results.json", (json.dumps(results, indent=1, sort_keys=True) + "\n").encode())
    return report.save(out / "index.html")
