"""The annotation web app (Starlette): Zhou et al.'s (2015) three tasks per unit, for several
people at once, over the crops of each unit's top images.

Pages: ``/`` (sign in with a name, then one unit at a time), ``/results`` (the agreed labels,
precision, agreement and the types per layer), ``/results.json``, ``/results.csv``. API (JSON):
``POST /api/annotators`` ``{"name"}`` -> ``{"token"}``; ``GET /api/next``; ``POST /api/answers``
``{"layer", "unit", "description", "mismatches", "category", "request"}``. Crops:
``/crops/LAYER/UNIT/RANK.png``, only of registered units.

Safety: the annotator's token travels in the ``X-Annotator-Token`` header, never in a cookie,
so another site cannot post as anyone (a cross-site form can set neither the header nor the
JSON content type without a CORS preflight, which this app does not answer); requests whose
``Origin`` is not this server are refused; bodies over 16 KB, malformed JSON, unknown units and
bad values get a 4xx with a message and store nothing; every page escapes what people typed
(the script fills text with ``textContent``), and the Content-Security-Policy allows only this
server's own script and images.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from cnnjax.app._store import CATEGORIES, AnnotationStore

__all__ = ["MAX_BODY", "build_app", "page_snapshot", "results_csv", "results_html"]

MAX_BODY = 16_384

#: Zhou et al.'s examples of each category, shown beside the choices of task 3.
EXAMPLES = {
    "simple elements and colours": "blue, stripes, a corner, a gradient",
    "texture or material": "fur, wood grain, knitted, shiny metal",
    "region or surface": "sky, water, grass, a floor",
    "object part": "a wheel, an eye, a collar, a sleeve",
    "object": "a dog, a car, a shoe, a bag",
    "scene": "a beach, a kitchen, a forest, a street",
}

_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:1.5em auto;padding:0 1em;color:#222}
.images{display:flex;flex-wrap:wrap;gap:8px}.images img{width:150px;height:150px;border:4px solid #ccc;
cursor:pointer;image-rendering:pixelated}.images img.mismatch{border-color:#d33;opacity:.45}
label{display:block;margin:.2em 0}.hidden{display:none}.error{color:#b00}.meta{color:#666}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
"""

_PAGE = """<!doctype html><html lang=en><head><meta charset=utf-8><title>cnnjax annotate</title>
<style>{css}</style></head><body>
<h1>What does this unit see?</h1>
<p class=meta>{about}</p>
<section id=signin><p>Your name (once; it is shown with your answers):</p>
<form id=signin-form><input id=name maxlength=60 required autofocus>
<button id=start>Start</button></form></section>
<section id=task class=hidden>
<p class=meta><span id=who></span> &middot; unit <b id=unit></b> &middot; <span id=progress></span>
&middot; <a href="/results">results</a></p>
<h2>1. What do these images share?</h2>
<input id=description maxlength=200 size=60 placeholder="a word or a short description">
<h2>2. Click the images that do not match your description</h2>
<div class=images id=images></div>
<h2>3. What kind of thing is it?</h2>
<div id=categories>{categories}</div>
<p><button id=submit>Submit and next</button> <span id=error class=error></span></p>
</section>
<section id=done class=hidden><p>You have annotated every unit. Thank you.
<a href="/results">See the results</a>.</p></section>
<script src="/app.js"></script></body></html>
"""

_SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
let token = localStorage.getItem("cnnjax-token"), name = localStorage.getItem("cnnjax-name"), unit = null;
function show(id) { for (const s of ["signin", "task", "done"]) $(s).classList.toggle("hidden", s !== id); }
async function api(method, path, body) {
  const headers = {"Content-Type": "application/json"};
  if (token) headers["X-Annotator-Token"] = token;
  const r = await fetch(path, {method, headers, body: body ? JSON.stringify(body) : undefined});
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function request() {
  const a = new Uint8Array(16); crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}
async function next() {
  const data = await api("GET", "/api/next");
  $("progress").textContent = `${data.progress.done} of ${data.progress.total} units done`;
  if (!data.unit) { show("done"); return; }
  unit = data.unit;
  $("unit").textContent = `${unit.layer} ${unit.unit}`;
  $("description").value = "";
  for (const r of document.querySelectorAll("input[name=category]")) r.checked = false;
  const images = $("images"); images.replaceChildren();
  for (let i = 0; i < unit.images; i++) {
    const img = document.createElement("img");
    img.src = `/crops/${encodeURIComponent(unit.layer)}/${unit.unit}/${i}.png`;
    img.dataset.rank = i; img.alt = `image ${i + 1}`; img.id = `image-${i}`;
    img.addEventListener("click", () => img.classList.toggle("mismatch"));
    images.appendChild(img);
  }
  show("task"); $("description").focus();
}
$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const data = await api("POST", "/api/annotators", {name: $("name").value});
    token = data.token; name = data.name;
    localStorage.setItem("cnnjax-token", token); localStorage.setItem("cnnjax-name", name);
    $("who").textContent = name; await next();
  } catch (err) { alert(err.message); }
});
$("submit").addEventListener("click", async () => {
  const checked = document.querySelector("input[name=category]:checked");
  const body = {layer: unit.layer, unit: unit.unit, description: $("description").value,
                category: checked ? checked.value : "", request: request(),
                mismatches: Array.from(document.querySelectorAll("#images img.mismatch"),
                                       (i) => +i.dataset.rank)};
  try { await api("POST", "/api/answers", body); $("error").textContent = ""; await next(); }
  catch (err) { $("error").textContent = err.message; }
});
if (token) {
  $("who").textContent = name;
  next().catch(() => { localStorage.clear(); token = null; show("signin"); });
}
"""


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=_HEADERS)


async def _json_body(request: Request) -> dict:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadRequest(415, "send JSON (Content-Type: application/json)")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise BadRequest(413, f"the body is larger than {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(413, f"the body is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "the body must be a JSON object")
    return data


def _check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise BadRequest(403, "requests from other sites are refused")


def results_csv(results: dict) -> str:
    text = io.StringIO()
    keys = ["layer", "unit", "label", "category", "precision", "agreement", "annotators"]
    csv.writer(text).writerows([keys, *([r[k] for k in keys] for r in results["units"])])
    return text.getvalue()


def results_html(results: dict, chart_uri: str | None = None) -> str:
    """The results page: a row per unit (everything people typed escaped) and the types chart."""
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r[k]))}</td>" for k in ("layer", "unit", "label", "category"))
        + f"<td>{r['precision']:.0%}</td><td>{r['agreement']:.0%}</td><td>{r['annotators']}</td></tr>"
        for r in results["units"]
    )  # fmt: skip
    chart = f'<p><img alt="types per layer" src="{chart_uri}"></p>' if chart_uri else ""
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>cnnjax annotate: results</title>"
        f"<style>{_CSS}</style></head><body><h1>Annotation results</h1>"
        f"<p class=meta>{len(results['units'])} units annotated. The label is the most common description, "
        "the precision the share of a unit's images that match it (averaged over annotators), the agreement "
        "the share of annotators who gave that label.</p>"
        f"{chart}<table><tr><th>layer</th><th>unit</th><th>label</th><th>category</th><th>precision</th>"
        f"<th>agreement</th><th>annotators</th></tr>{rows}</table><p><a href='/results.json'>JSON</a> "
        "&middot; <a href='/results.csv'>CSV</a> &middot; <a href='/'>annotate</a></p></body></html>"
    )


def types_chart_uri(results: dict) -> str | None:
    from cnnjax.report import png_data_uri, type_chart

    return (
        png_data_uri(type_chart(results["types"], title="people's labels by type"))
        if results["types"]
        else None
    )


def _categories_html(checked: str | None = None) -> str:
    rows = []
    for c in CATEGORIES:
        mark = " checked" if c == checked else ""
        value = html.escape(c)
        rows.append(f'<label><input type=radio name=category value="{value}"{mark}> {value} '
                    f"<span class=meta>(e.g. {html.escape(EXAMPLES[c])})</span></label>")  # fmt: skip
    return "".join(rows)


def page_snapshot(
    about: str,
    layer: str,
    unit: int,
    crops: list[str],
    description: str,
    mismatches: list[int],
    category: str,
) -> str:
    """The unit page as an annotator sees it after answering (static: crops as data URIs, no
    script), for reports."""
    page = _PAGE.format(css=_CSS, about=html.escape(about), categories=_categories_html(category))
    images = "".join(
        f'<img src="{uri}" alt="image {k + 1}"{" class=mismatch" if k in mismatches else ""}>'
        for k, uri in enumerate(crops)
    )
    return (
        page.replace("<section id=signin>", "<section id=signin class=hidden>")
        .replace("<section id=task class=hidden>", "<section id=task>")
        .replace("<b id=unit></b>", f"<b id=unit>{html.escape(layer)} {int(unit)}</b>")
        .replace('<div class=images id=images></div>', f"<div class=images id=images>{images}</div>")
        .replace('placeholder="a word or a short description">',
                 f'placeholder="a word or a short description" value="{html.escape(description)}">')
        .replace('<script src="/app.js"></script>', "")
    )  # fmt: skip


def build_app(store: AnnotationStore, crops: str | Path, *, about: str = "") -> Starlette:
    """The app over ``store``, serving crops from ``crops/LAYER/UNIT/RANK.png``."""
    crops = Path(crops).resolve()
    categories = "".join(
        f'<label><input type=radio name=category value="{html.escape(c)}"> {html.escape(c)} '
        f"<span class=meta>(e.g. {html.escape(EXAMPLES[c])})</span></label>"
        for c in CATEGORIES
    )
    page = _PAGE.format(css=_CSS, about=html.escape(about), categories=categories)

    def annotator(request: Request) -> dict:
        who = store.annotator(request.headers.get("x-annotator-token", ""))
        if who is None:
            raise BadRequest(401, "sign in first: no valid X-Annotator-Token")
        return who

    def guarded(handler):
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except BadRequest as e:
                return _error(e.status, e.message)
            except ValueError as e:
                return _error(400, str(e))

        return run

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers=_HEADERS)

    async def script(request: Request) -> Response:
        return Response(_SCRIPT, media_type="text/javascript", headers=_HEADERS)

    async def sign_in(request: Request) -> Response:
        _check_origin(request)
        data = await _json_body(request)
        if not isinstance(data.get("name"), str):
            raise BadRequest(400, "give your name")
        who = store.add_annotator(data["name"])
        return JSONResponse({"name": who["name"], "token": who["token"]}, headers=_HEADERS)

    async def next_unit(request: Request) -> Response:
        who = annotator(request)
        unit = store.next_unit(who["id"])
        body: dict[str, Any] = {"progress": store.progress(who["id"]), "unit": None}
        if unit is not None:
            body["unit"] = {"layer": unit["layer"], "unit": unit["unit"], "images": unit["images"]}
        return JSONResponse(body, headers=_HEADERS)

    async def answer(request: Request) -> Response:
        _check_origin(request)
        who = annotator(request)
        data = await _json_body(request)
        layer, number = data.get("layer"), data.get("unit")
        if not isinstance(layer, str) or not isinstance(number, int) or isinstance(number, bool):
            raise BadRequest(400, "give the unit's layer (a string) and number (an integer)")
        unit = store.unit(layer, number)
        if unit is None:
            raise BadRequest(404, f"no unit {number} of layer {layer!r} is being annotated")
        mismatches, request_id = data.get("mismatches", []), data.get("request")
        if not isinstance(mismatches, list):
            raise BadRequest(400, "mismatches must be a list of image numbers")
        if request_id is not None and not (isinstance(request_id, str) and 1 <= len(request_id) <= 64):
            raise BadRequest(400, "request must be a string of 1 to 64 characters")
        description, category = data.get("description", ""), data.get("category", "")
        stored = store.add_answer(
            who["id"], unit["id"], description, category, mismatches, request=request_id
        )
        return JSONResponse({"stored": stored}, headers=_HEADERS)

    async def crop(request: Request) -> Response:
        layer, number, rank = (
            request.path_params["layer"],
            request.path_params["unit"],
            request.path_params["rank"],
        )
        unit = store.unit(layer, number)
        if unit is None or not 0 <= rank < unit["images"]:
            raise BadRequest(404, "no such image")
        path = crops / unit["layer"] / str(unit["unit"]) / f"{rank}.png"
        if not path.is_file():
            raise BadRequest(404, "no such image")
        return FileResponse(path, media_type="image/png", headers=_HEADERS)

    async def results_page(request: Request) -> Response:
        results = store.results()
        return HTMLResponse(results_html(results, types_chart_uri(results)), headers=_HEADERS)

    async def results_json(request: Request) -> Response:
        return JSONResponse(store.results(), headers=_HEADERS)

    async def results_text(request: Request) -> Response:
        return Response(results_csv(store.results()), media_type="text/csv", headers=_HEADERS)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "not found")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed here")

    routes = [
        Route("/", index), Route("/app.js", script),
        Route("/api/annotators", guarded(sign_in), methods=["POST"]),
        Route("/api/next", guarded(next_unit)),
        Route("/api/answers", guarded(answer), methods=["POST"]),
        Route("/crops/{layer:str}/{unit:int}/{rank:int}.png", guarded(crop)),
        Route("/results", results_page), Route("/results.json", results_json),
        Route("/results.csv", results_text),
    ]  # fmt: skip
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
