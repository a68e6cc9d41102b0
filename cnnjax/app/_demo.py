"""The demo's annotation section: the app's unit page and its results page, for FashionNet units
annotated by a scripted annotator (not a person: it labels each unit with the concept that
Network Dissection gives it, and marks the top images whose segment misses that concept)."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import numpy as np

from cnnjax.app._server import page_snapshot, results_html, types_chart_uri
from cnnjax.app._store import AnnotationStore
from cnnjax.data import load_broden
from cnnjax.models import load_model
from cnnjax.report import DemoContext, Section, png_data_uri
from cnnjax.testing import write_broden
from cnnjax.units import dissect, semantic_type, top_images, top_segments

__all__ = ["annotation_section"]

_LAYER, _UNITS, _K = "conv5", 4, 6


def _frame(page: str, height: int) -> str:
    return (f'<iframe sandbox srcdoc="{html.escape(page)}" style="width:100%;height:{height}px;'
            'border:1px solid #ccc"></iframe>')  # fmt: skip


def annotation_section(ctx: DemoContext) -> Section:
    """``cnnjax annotate`` shown: a unit's page as an annotator sees it, and the results page."""
    model = load_model("fashionnet")
    with tempfile.TemporaryDirectory() as root:
        concepts = load_broden(write_broden(Path(root) / "concepts", n=96, size=28))
        collection = concepts.images()
        top = top_images(model, collection, _LAYER, top_k=_K, progress=False)
        labels = dissect(model, concepts, _LAYER, progress=False)
        # For variety, the best unit (by IoU) of each concept, the best first.
        best: dict[int, int] = {}
        for unit in np.argsort(-labels.best_iou[_LAYER], kind="stable").tolist():
            best.setdefault(int(labels.concepts[_LAYER][unit]), unit)
        units = list(best.values())[:_UNITS]
        seg = top_segments(model, collection, top, _LAYER, units)
        store = AnnotationStore(Path(root) / "answers.sqlite")
        store.add_units(_LAYER, units, _K)
        who = store.add_annotator("scripted annotator")["id"]
        snapshot = ""
        for row, unit in enumerate(units):
            c = int(labels.concepts[_LAYER][unit])
            name, category = labels.concept_names[c], labels.concept_categories[c]
            # A top image matches when its segment touches the concept's mask (masks: every 2nd pixel).
            maps, _ = concepts.concept_maps(seg.indices[row])
            touches = [(seg.masks[row, k][1::2, 1::2] & (maps[k] == c).any(axis=0)).any() for k in range(_K)]
            mismatches = [k for k in range(_K) if not touches[k]]
            kind = semantic_type(name, category)
            store.add_answer(who, store.unit(_LAYER, unit)["id"], name, kind, mismatches)
            if row == 0:
                shown = np.where(seg.masks[row][..., None], seg.images[row], 0.25 * seg.images[row])
                crops = [png_data_uri(np.repeat(np.repeat(im, 5, 0), 5, 1)) for im in shown]
                snapshot = page_snapshot(f"fashionnet {_LAYER}", _LAYER, unit, crops, name, mismatches, kind)
        results = store.results()
    ctx.results["annotation"] = {"units": results["units"]}
    body = (
        "<p><code>cnnjax annotate</code> serves Zhou et al.'s three tasks for each unit to the people of a "
        "lab: describe what the unit's top images share, click those that do not match, pick the kind of "
        "thing. Below, the app's page for one FashionNet unit and its results page, filled in by a "
        "<b>scripted annotator</b> (not a person): it labels each unit with the concept Network Dissection "
        "gives it on a synthetic concept set, and marks the top images whose segment misses that concept.</p>"
        + _frame(snapshot, 760)
        + _frame(results_html(results, types_chart_uri(results)), 620)
    )
    return Section("Annotating units", body)
