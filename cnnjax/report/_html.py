"""Self-contained HTML reports: sections of text, tables, bar charts and embedded images.

A :class:`Report` collects sections and writes one HTML file with every image embedded as a
PNG data URI, so the file can be mailed or opened anywhere. Writing is atomic.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cnnjax._src.atomic import atomic_write_bytes
from cnnjax._src.image_io import image_grid

__all__ = ["Report", "Section", "png_data_uri", "bars", "table", "figure"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
nav a{margin-right:1em} .grid{display:flex;flex-wrap:wrap;gap:1.2em}
figure{margin:0;max-width:340px} figure img{max-width:100%;image-rendering:auto;border:1px solid #ccc}
figcaption{font-size:.9em;color:#444} table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left} th{background:#f4f4f4}
.bar{display:flex;align-items:center;gap:.5em;font-size:.85em;margin:.1em 0}
.bar span.fill{display:inline-block;height:.8em;background:#4a7bd0}
.bar span.label{width:12em;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.meta{color:#666;font-size:.85em} code{background:#f4f4f4;padding:0 .2em}
"""


def png_data_uri(image) -> str:
    """A ``data:image/png;base64,...`` URI for an image array ``[h, w, c]`` or ``[n, h, w, c]``
    (a batch becomes a grid) with values in [0, 1], or uint8."""
    arr = np.asarray(image)
    if arr.ndim == 4:
        arr = image_grid(arr)
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def figure(image, caption: str = "", width: int | None = None) -> str:
    """An embedded image with a caption."""
    style = f' style="width:{int(width)}px"' if width else ""
    # A given width also lifts the stylesheet's 340 px cap on figures, or the image is shrunk to it.
    outer = f' style="max-width:{int(width)}px"' if width else ""
    return (
        f'<figure{outer}><img src="{png_data_uri(image)}" alt="{html.escape(caption)}"{style}>'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def bars(labels: Sequence[str], values: Sequence[float], fmt: str = "{:.1%}") -> str:
    """A small horizontal bar chart (values in [0, 1]) in plain HTML/CSS."""
    rows = []
    for label, value in zip(labels, values):
        width = max(1, int(round(160 * float(np.clip(value, 0.0, 1.0)))))
        rows.append(
            f'<div class="bar"><span class="label" title="{html.escape(label)}">{html.escape(label)}'
            f'</span><span class="fill" style="width:{width}px"></span>{fmt.format(value)}</div>'
        )
    return "".join(rows)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; cells are escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


@dataclass
class Section:
    """One titled part of a report; ``body`` is HTML built with the helpers above."""

    title: str
    body: str
    anchor: str = ""

    def __post_init__(self):
        if not self.anchor:
            self.anchor = "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


@dataclass
class Report:
    """A self-contained HTML report.

    Example:
      >>> import os, tempfile
      >>> report = Report("Results", intro="A tiny model on two photos.")
      >>> report.add(Section("Scores", table(["model", "accuracy"], [["tiny_cnn", 0.5]])))
      >>> report.add(Section("Maps", figure(np.zeros((8, 8, 3)), "a black square")))
      >>> path = report.save(os.path.join(tempfile.mkdtemp(), "index.html"))
      >>> path.read_text().count("<section"), [s.anchor for s in report.sections]
      (2, ['scores', 'maps'])
    """

    title: str
    intro: str = ""
    sections: list[Section] = field(default_factory=list)

    def add(self, section: Section) -> None:
        self.sections.append(section)

    def render(self) -> str:
        nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in self.sections)
        parts = [
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1><p class=meta>{self.intro}</p><nav>{nav}</nav>",
        ]
        for s in self.sections:
            parts.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{s.body}</section>')
        parts.append("</body></html>\n")
        return "".join(parts)

    def save(self, path: str | Path) -> Path:
        """Write the report atomically; return its path."""
        return atomic_write_bytes(path, self.render().encode("utf-8"))
