"""Folders that show what units mean: the top-images gallery (a figure per unit, a page per
layer, the tally as JSON and CSV; ``cnnjax units``) and the dissection report (``cnnjax
dissect``)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from cnnjax._src.atomic import atomic_write_bytes
from cnnjax._src.contract import Model
from cnnjax._src.image_io import save_image
from cnnjax.data import ImageCollection
from cnnjax.report._html import Report, Section, figure, table
from cnnjax.report._units import selectivity_table, type_chart, unit_figure, units_page
from cnnjax.units import (
    DissectResult,
    TopImagesResult,
    class_selectivity,
    semantic_type,
    semantic_types,
    top_segments,
)

__all__ = ["dissection_report", "unit_gallery"]

_GROUP = 16  # units segmented at once (memory: GROUP x top_k images)


def unit_gallery(
    out: str | os.PathLike,
    model: Model,
    collection: ImageCollection,
    top: TopImagesResult,
    *,
    units: Sequence[int] | None = None,
    progress: bool = True,
) -> Path:
    """Write the gallery of a :func:`~cnnjax.units.top_images` tally into the folder ``out``.

    ``out/LAYER/unit_NNNN.png`` is a unit's figure (:func:`unit_figure`); ``out/LAYER.html``
    the layer's page (with class selectivity when the collection has labels);
    ``out/index.html`` links them; ``out/top_images.json`` and ``out/top_images.csv`` hold
    every unit's top images (collection index, name, score, peak position, segment box).
    Every file is written atomically.

    Args:
      out: the folder.
      model: the model of the tally.
      collection: its :class:`~cnnjax.data.ImageCollection`.
      top: the tally.
      units: the units to draw (default: all; the JSON and CSV hold the drawn ones).
      progress: progress bars on stderr.

    Returns:
      The path of ``index.html``.
    """
    out, spec = Path(out), model.spec
    selectivity = class_selectivity(top, collection.labels) if collection.labels is not None else None
    rows, records = [], {}
    for layer in top.layers:
        chosen = list(range(spec.layer(layer).shape[-1])) if units is None else list(units)
        figures, records[layer] = [], []
        groups = range(0, len(chosen), _GROUP)
        for start in tqdm(
            groups, desc=f"{layer} figures", disable=not progress, leave=False, file=sys.stderr
        ):
            seg = top_segments(model, collection, top, layer, chosen[start : start + _GROUP])
            for row, unit in enumerate(seg.units.tolist()):
                image = unit_figure(seg.images[row], seg.masks[row], seg.scores[row].tolist())
                save_image(out / layer / f"unit_{unit:04d}.png", image)
                caption = f"{layer} unit {unit}"
                if selectivity is not None:
                    c, share = selectivity.classes[layer][unit], selectivity.purity[layer][unit]
                    caption += f": {share:.0%} {collection.class_names[c]}"
                figures.append((unit, image, caption))
                images = []
                for rank in range(seg.indices.shape[1]):
                    i, score = int(seg.indices[row, rank]), float(seg.scores[row, rank])
                    position = top.positions[layer][unit, rank].tolist()
                    images.append({"rank": rank + 1, "index": i, "name": collection.names[i], "score": score,
                                   "position": position, "box": seg.boxes[row, rank].tolist()})  # fmt: skip
                    rows.append([layer, unit, rank + 1, i, collection.names[i], f"{score:.6g}", *position])
                records[layer].append({"unit": unit, "images": images})
        summary = ""
        if selectivity is not None:
            detectors, total = selectivity.detectors[layer], len(selectivity.purity[layer])
            summary = (
                f"<p>{detectors} of {total} units are class detectors: at least "
                f"{selectivity.threshold:.0%} of their top {top.indices[layer].shape[1]} images are of one "
                "class.</p>"
                + selectivity_table(
                    selectivity.classes[layer], selectivity.purity[layer], collection.class_names
                )
            )
        units_page(f"{spec.name}: units of {layer}", layer, figures, summary).save(out / f"{layer}.html")

    result = {"model": spec.name, "images": len(collection), "layers": records}
    if selectivity is not None:
        result["class_detectors"] = {layer: selectivity.detectors[layer] for layer in top.layers}
    atomic_write_bytes(out / "top_images.json", json.dumps(result, indent=1).encode())
    text = io.StringIO()
    csv.writer(text).writerows([["layer", "unit", "rank", "index", "name", "score", "row", "col"], *rows])
    atomic_write_bytes(out / "top_images.csv", text.getvalue().encode())

    k = top.indices[top.layers[0]].shape[1]
    intro = f"The top {k} of {len(collection)} images of each unit, segmented by the unit."
    index = Report(f"{spec.name}: what its units respond to", intro=intro)
    body = "<ul>" + "".join(f'<li><a href="{layer}.html">{layer}</a></li>' for layer in top.layers) + "</ul>"
    if selectivity is not None:
        body += table(
            ["layer", "units", "class detectors"],
            [(layer, len(selectivity.purity[layer]), selectivity.detectors[layer]) for layer in top.layers],
        )
    index.add(Section("Layers", body))
    return index.save(out / "index.html")


def dissection_report(out: str | os.PathLike, result: DissectResult, *, model_name: str = "") -> Path:
    """Write a :func:`~cnnjax.units.dissect` result into the folder ``out``: ``dissect.json``
    and ``dissect.csv`` (per unit: its best concept, category, semantic type, IoU, whether it
    is a detector), ``types.png`` (:func:`type_chart` of the detectors) and ``index.html``.
    Every file is written atomically.

    Returns:
      The path of ``index.html``.
    """
    out = Path(out)
    header = ["layer", "unit", "concept", "category", "type", "iou", "detector", "threshold"]
    rows = []
    for layer in result.layers:
        for unit, c in enumerate(result.concepts[layer].tolist()):
            name, category = result.concept_names[c], result.concept_categories[c]
            rows.append([layer, unit, name, category, semantic_type(name, category) or "",
                         round(float(result.best_iou[layer][unit]), 6), bool(result.detectors[layer][unit]),
                         float(result.thresholds[layer][unit])])  # fmt: skip
    records = [dict(zip(header, row)) for row in rows]
    types = semantic_types(result)
    summary = {"model": model_name, "images": result.count, "layers": list(result.layers), "types": types,
               "units": records}  # fmt: skip
    atomic_write_bytes(out / "dissect.json", json.dumps(summary, indent=1).encode())
    text = io.StringIO()
    csv.writer(text).writerows([header, *rows])
    atomic_write_bytes(out / "dissect.csv", text.getvalue().encode())
    chart = type_chart(types, title="detectors by semantic type")
    save_image(out / "types.png", chart)
    title = "Network Dissection" + (f": {model_name}" if model_name else "")
    intro = (f"{result.count} images; a unit detects its best concept when their IoU exceeds "
             f"{result.iou_threshold:g}.")  # fmt: skip
    report = Report(title, intro=intro)
    counts = [
        (layer, len(result.detectors[layer]), int(result.detectors[layer].sum())) for layer in result.layers
    ]
    body = figure(chart, "detector units by type", width=chart.shape[1])
    report.add(Section("Semantic types per layer", body + table(["layer", "units", "detectors"], counts)))
    best = sorted((r for r in records if r["detector"]), key=lambda r: -r["iou"])[:50]
    report.add(Section("Best detectors", table(header[:6], [[r[k] for k in header[:6]] for r in best])))
    return report.save(out / "index.html")
