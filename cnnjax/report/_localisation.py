"""The localisation sections of ``cnnjax demo``: class activation maps of the sample photos,
and theoretical, empirical and effective receptive fields per stage with a unit segmentation."""

from __future__ import annotations

from html import escape as html_escape

import numpy as np

from cnnjax import receptive_field as rf
from cnnjax import saliency
from cnnjax._src.image_io import image_grid
from cnnjax.models import classify
from cnnjax.report._context import DemoContext
from cnnjax.report._html import Section, figure, table
from cnnjax.report._overlay import heatmap, overlay, segmentation_overlay
from cnnjax.report._plots import line_plot
from cnnjax.units import unit_segmentation

__all__ = ["RF_LAYERS", "cam_section", "receptive_field_section"]


def cam_section(ctx: DemoContext) -> Section:
    """Class activation maps of the sample photos for their top classes, and other methods."""
    model, spec = ctx.model, ctx.model.spec
    names = list(ctx.photos)
    images = np.concatenate([ctx.photos[n] for n in names])
    probs, idx = classify(model, images, top_k=5)
    probs, top = np.asarray(probs)[:, 0], np.asarray(idx)[:, :1]
    maps = np.asarray(saliency.cam(model, images, top, upsample=True))[:, 0]
    figures = []
    for i, name in enumerate(names):
        y, x = np.unravel_index(int(np.argmax(maps[i])), maps[i].shape)
        label = f"{spec.class_name(int(top[i, 0]))} ({int(top[i, 0])}), p = {probs[i]:.2f}"
        caption = f"<b>{name}</b>: {html_escape(label)}; peak at ({y}, {x})"
        figures.append(figure(overlay(images[i], maps[i]), caption))
    body = (
        "<p>Class activation maps (Zhou et al. 2016) of the top class of each photo, "
        "<code>cnnjax.cam(model, images, top, upsample=True)</code>: the head's 7x7 map, "
        "each activation placed at the centre of its receptive field (TensorFlow SAME padding "
        "puts those 15 pixels lower and to the right of a plain resize's). The cross marks the "
        f"peak.</p><div class=grid>{''.join(figures)}</div>"
    )
    if not ctx.full:
        body += ("<p>With <code>--full</code>: Grad-CAM++, Layer-CAM and Score-CAM, and their deletion and "
                 "insertion AUC.</p>")  # fmt: skip
        return Section("Class activation maps", body)
    # Other methods, each row a photo: Layer-CAM at block_10 is finer (14x14); Score-CAM runs
    # 1280 masked forward passes per photo.
    methods = [
        ("CAM, head", maps),
        ("Grad-CAM++, head", saliency.grad_cam_plus_plus(model, images, top, upsample=True)),
        ("Layer-CAM, block_10", saliency.layer_cam(model, images, top, layer="block_10", upsample=True)),
        ("Score-CAM, head", saliency.score_cam(model, images, top, upsample=True)),
    ]
    methods = [(label, np.asarray(m).reshape(len(names), *images.shape[1:3])) for label, m in methods]
    tiles = [overlay(images[i], m[i], mark_peak=False) for i in range(len(images)) for _, m in methods]
    grid = np.stack(tiles)
    rows = []
    for label, m in methods:
        d = np.asarray(saliency.deletion(model, images, m[:, None], top).auc)[:, 0]
        ins = np.asarray(saliency.insertion(model, images, m[:, None], top).auc)[:, 0]
        rows.append((label, f"{d.mean():.3f}", f"{ins.mean():.3f}"))
    body += (
        figure(image_grid(grid, cols=len(methods)),
               "Rows: the photos. Columns: " + ", ".join(m for m, _ in methods), width=180 * len(methods))
        + "<p>Deletion (lower is better) and insertion (higher is better) AUC, Petsiuk et al. 2018, "
        "224 steps, mean over the four photos:</p>"
        + table(["method", "deletion AUC", "insertion AUC"], rows)
    )  # fmt: skip
    return Section("Class activation maps", body)


#: The last block of each of EfficientNet-Lite0's seven stages.
RF_LAYERS = ("block_0", "block_2", "block_4", "block_7", "block_10", "block_14", "block_15")


def receptive_field_section(ctx: DemoContext) -> Section:
    """Theoretical, empirical (occlusion) and effective (gradient) receptive fields per stage."""
    model, spec = ctx.model, ctx.model.spec
    layers = [name for name in RF_LAYERS if name in spec.layer_names]
    if not layers:  # another model: its spatial layers
        layers = [lay.name for lay in spec.layers if lay.spatial and lay.name != "input"][-7:]
    names = list(ctx.photos)
    images = np.concatenate([ctx.photos[n] for n in names])
    fields = rf.theoretical(model)
    # Quick: the most active unit of each stage on the first photo, 16-pixel occluders on a
    # 16-pixel grid. Full: the published 11x11 occluders on a stride-3 grid, each unit's top
    # four photos, and the effective fields (gradients over the four photos).
    candidates = images if ctx.full else images[:1]
    patch, stride = (11, 3) if ctx.full else (16, 16)
    emp = rf.empirical(model, layers, None, candidates, top_k=len(candidates), patch=patch, stride=stride)
    eff_sizes = rf.effective(model, layers, images).sizes if ctx.full else [None] * len(layers)
    rows, theo_sizes = [], []
    for name, unit, size, eff in zip(layers, emp.units, emp.sizes, eff_sizes):
        f = fields[name]
        theo_sizes.append(f.size[0])
        effective = "--full" if eff is None else f"{eff:.1f}"
        rows.append((name, f"{f.size[0]}", spec.layer(name).receptive_field or "", f.stride[0], int(unit),
                     f"{size:.1f}", effective, f"{size / f.size[0]:.2f}"))  # fmt: skip
    series = {"theoretical": theo_sizes, "empirical": list(emp.sizes)}
    if ctx.full:
        series["effective"] = list(eff_sizes)
    plot = line_plot(
        series,
        x=list(range(1, len(layers) + 1)), title="receptive field size (pixels) by stage",
        xlabel="stage (last block)", size=(560, 300),
    )  # fmt: skip
    rf_maps = np.stack([_crop_centre(heatmap(m), 224) for m in emp.maps])
    seg_layer = "block_10" if "block_10" in layers else layers[-1]
    photo = names.index("astronaut.png") if "astronaut.png" in names else 0
    all_units = np.arange(spec.layer(seg_layer).channels)
    seg = unit_segmentation(model, images[photo : photo + 1], seg_layer, all_units)
    seg_units = np.argsort(-np.asarray(seg.thresholds))[:4]  # the most active units on this photo
    seg_img = segmentation_overlay(images[photo], np.asarray(seg.masks[0])[seg_units])
    settings = ("published settings: 11x11 occluders of random pixels on a stride-3 grid, each unit's "
                f"top {len(candidates)} of the photos" if ctx.full else
                "quick settings: 16x16 occluders on a 16-pixel grid, one photo (at the early stages the "
                "occluder itself, not the unit, sets the size; --full uses the published 11x11 on a "
                "stride-3 grid)")  # fmt: skip
    body = (
        "<p>Receptive fields per stage of the default model. <b>Theoretical</b>: derived by "
        "<code>cnnjax.receptive_field.theoretical</code> from the model itself (non-finite markers "
        "through <code>perturb</code>), next to the spec's hand-derived value. <b>Empirical</b>: "
        f"Zhou et al. 2015's occlusion estimate for the stage's most active unit ({settings}). "
        "<b>Effective</b> (with --full): Luo et al. 2016, the input gradient of the centre position "
        "(all channels), averaged over the four photos. Empirical and effective sizes are sides of "
        "the square with the area where the map is at least half its maximum. As Zhou et al. found, "
        "the actual field is much smaller than the theoretical one, more so the deeper the layer.</p>"
        + table(["layer", "theoretical (derived)", "hand-derived", "stride", "unit", "empirical",
                 "effective", "empirical / theoretical"], rows)  # fmt: skip
        + f"<div class=grid>{figure(plot, 'Sizes by stage', width=560)}"
        + figure(image_grid(rf_maps, cols=len(rf_maps)), "Empirical receptive fields, stages 1 to "
                 f"{len(layers)} (centred on the unit; the middle 224x224 of each canvas)", width=900)
        + figure(seg_img, f"Unit segmentation of {names[photo]} by units {', '.join(map(str, seg_units))} "
                 f"of {seg_layer} (activations at their fields' centres, thresholded at half the maximum)")
        + "</div>"
    )  # fmt: skip
    return Section("Receptive fields", body)


def _crop_centre(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[max(top, 0) : max(top, 0) + size, max(left, 0) : max(left, 0) + size]
