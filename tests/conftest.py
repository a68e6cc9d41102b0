"""Strict test settings: warnings are errors (pyproject), rank promotion raises."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest  # noqa: E402


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
