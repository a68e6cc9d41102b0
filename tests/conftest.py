"""Strict test settings: warnings are errors (pyproject), rank promotion raises."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (pyproject): each keeps XLA to one thread, so the
    # workers do not oversubscribe the cores (set before JAX creates its CPU client).
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest  # noqa: E402

DEMO_FIXTURES = {"demo_report", "demo_results"}


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the marks
def pytest_collection_modifyitems(items):
    """Tests that read the demo's report run on one xdist worker, so the demo runs once."""
    for item in items:
        if DEMO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("demo"))


@pytest.fixture(scope="session")
def demo_report(tmp_path_factory):
    """``cnnjax demo`` (quick settings) run once per session through the command line; the CLI
    tests check the report and the technique tests check the figures in its results.json."""
    from cnnjax.cli import main

    out = tmp_path_factory.mktemp("report")
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    return out / "index.html"


@pytest.fixture(scope="session")
def demo_results(demo_report):
    import json

    return json.loads((demo_report.parent / "results.json").read_text())
