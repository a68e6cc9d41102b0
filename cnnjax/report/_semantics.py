"""The demo's unit-semantics section: the top images of units of the default model over the
sample photos, and FashionNet's class detectors per layer when Fashion-MNIST is at hand."""

from __future__ import annotations

import numpy as np

from cnnjax.data import DataNotFoundError, load_fashion_mnist
from cnnjax.models import load_model
from cnnjax.report._context import DemoContext
from cnnjax.report._html import Section, figure, table
from cnnjax.report._units import unit_figure
from cnnjax.units import class_selectivity, top_images, top_segments

__all__ = ["units_section"]

_FASHION_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def units_section(ctx: DemoContext) -> Section:
    """What single units respond to (Zhou et al. 2015): the top images of the four units of
    ``block_6`` (or the last spatial layer) that respond most to the photos, and FashionNet's
    class detectors per layer over the Fashion-MNIST test set."""
    model = ctx.model
    photos = np.concatenate(list(ctx.photos.values()))
    images = np.concatenate([photos, photos[:, :, ::-1]])  # the photos and their mirror images
    layer = "block_6" if "block_6" in model.spec.layer_names else model.spec.layer_names[-3]
    top = top_images(model, images, layer, top_k=3, progress=False)
    units = np.argsort(-top.scores[layer][:, 0], kind="stable")[:4]
    seg = top_segments(model, images, top, layer, units)
    figures = "".join(
        figure(
            unit_figure(seg.images[i], seg.masks[i], seg.scores[i].tolist()),
            f"{layer} unit {int(u)}",
            width=480,
        )
        for i, u in enumerate(units)
    )
    body = (
        f"<p>Every unit of <code>{layer}</code> ranked the {len(images)} sample photos and their mirror "
        "images in one streamed pass (<code>cnnjax.units.top_images</code>); below, the four units that "
        "respond most, each with its top 3 images over their segments (the unit's receptive-field "
        "segmentation; <code>cnnjax units</code> does this for any folder of photos).</p>"
        f'<div class="grid">{figures}</div>'
    )
    ctx.results["units"] = {"layer": layer, "units": units.tolist(),
                            "top_scores": top.scores[layer][units, 0].round(4).tolist()}  # fmt: skip
    try:
        _, test = load_fashion_mnist()
    except DataNotFoundError:
        body += (
            "<p>Fashion-MNIST was not found here, so FashionNet's class detectors are not shown "
            "(<code>cnnjax units --model fashionnet --layer conv5 --data fashion-mnist "
            "--download</code>).</p>"
        )
        return Section("What units respond to", body)
    n = len(test.labels) if ctx.full else 2000
    fashion = load_model("fashionnet")
    ftop = top_images(fashion, test.images[:n], _FASHION_LAYERS, top_k=9, progress=False)
    sel = class_selectivity(ftop, test.labels[:n])
    rows = [(layer, len(sel.purity[layer]), sel.detectors[layer], f"{sel.purity[layer].mean():.0%}")
            for layer in _FASHION_LAYERS]  # fmt: skip
    ctx.results["units"]["fashionnet_class_detectors"] = {
        layer: sel.detectors[layer] for layer in _FASHION_LAYERS
    }
    best = np.argsort(-sel.purity["conv5"], kind="stable")[:3]
    fseg = top_segments(fashion, test.images[:n], ftop, "conv5", best)
    names = test.class_names
    captions = [
        f"conv5 unit {int(u)}: {sel.purity['conv5'][u]:.0%} {names[sel.classes['conv5'][u]]}" for u in best
    ]
    figures = "".join(
        figure(unit_figure(fseg.images[i], fseg.masks[i], fseg.scores[i].tolist()), captions[i], width=480)
        for i in range(len(best))
    )
    body += (
        f"<p><b>FashionNet</b> over {n:,} Fashion-MNIST test images: a unit whose top 9 images are at "
        "least 90% one class is a class detector. The deeper the layer, the more such units: object "
        "detectors emerge though no unit was told what a class is (Zhou et al. 2015), in miniature.</p>"
        + table(["layer", "units", "class detectors", "mean share of the majority class"], rows)
        + f'<div class="grid">{figures}</div>'
    )
    return Section("What units respond to", body)
