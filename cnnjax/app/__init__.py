"""``cnnjax annotate``: people label units as in Zhou et al. (ICLR 2015), in a local web app.

Needs the optional extra ``pip install 'cnnjax[app]'`` (Starlette and uvicorn).

* :class:`AnnotationStore`: the answers, in SQLite (WAL, one transaction per answer, a schema
  version and migrations), and the results (:meth:`AnnotationStore.results`).
* :func:`prepare_crops`: the segmented top images people see.
* :func:`build_app`: the Starlette app; :func:`serve`: run it with uvicorn (:func:`check_port`
  first).
* :func:`export_results`: results as JSON, CSV, a page and the types chart.
* :func:`annotation_section`: the ``cnnjax demo`` section showing the app.
"""

from cnnjax.app._demo import annotation_section as annotation_section
from cnnjax.app._prepare import prepare_crops as prepare_crops
from cnnjax.app._serve import check_port as check_port
from cnnjax.app._serve import export_results as export_results
from cnnjax.app._serve import serve as serve
from cnnjax.app._server import build_app as build_app
from cnnjax.app._store import CATEGORIES as CATEGORIES
from cnnjax.app._store import SCHEMA_VERSION as SCHEMA_VERSION
from cnnjax.app._store import AnnotationStore as AnnotationStore

__all__ = [
    "CATEGORIES",
    "SCHEMA_VERSION",
    "AnnotationStore",
    "annotation_section",
    "build_app",
    "check_port",
    "export_results",
    "prepare_crops",
    "serve",
]
