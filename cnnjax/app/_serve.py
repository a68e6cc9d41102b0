"""Running the app (uvicorn on loopback by default) and exporting its results."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path

from cnnjax._src.atomic import atomic_write_bytes
from cnnjax.app._server import build_app, results_csv, results_html, types_chart_uri
from cnnjax.app._store import AnnotationStore

__all__ = ["check_port", "export_results", "serve"]


def check_port(host: str, port: int) -> None:
    """Refuse, with one sentence, a port that is in use (or a host that cannot be bound)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port} on {host} is in use; choose another with --port") from None
            raise ValueError(f"cannot listen on {host}:{port} ({e.strerror})") from None


def serve(store: AnnotationStore, crops: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          about: str = "") -> None:  # fmt: skip
    """Serve the app until interrupted (Ctrl-C)."""
    import uvicorn

    check_port(host, port)
    app = build_app(store, crops, about=about)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()


def export_results(store: AnnotationStore, out: str | Path) -> Path:
    """Write ``results.json``, ``results.csv`` and ``results.html`` (with the types chart)
    into ``out``, atomically; returns the JSON's path."""
    out = Path(out)
    results = store.results()
    atomic_write_bytes(out / "results.csv", results_csv(results).encode())
    atomic_write_bytes(out / "results.html", results_html(results, types_chart_uri(results)).encode())
    return atomic_write_bytes(out / "results.json", json.dumps(results, indent=1).encode())
