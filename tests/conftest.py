"""Strict test settings (warnings are errors, rank promotion raises) and a shared XLA cache.

Most of the suite's time is XLA compiling; the two pytest-xdist workers, and the processes
tests start (training runs killed and resumed, the CLI), often compile the same programs. They
share one persistent compilation cache in a temporary folder made for this run (set before JAX
is imported, through JAX's own environment variables, so child processes use it too) and
removed at the end; a folder given in ``JAX_COMPILATION_CACHE_DIR`` is used as it is and kept.
"""

import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ and not os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnjax-test-xla-")
    os.environ["CNNJAX_TEST_OWNS_XLA_CACHE"] = os.environ["JAX_COMPILATION_CACHE_DIR"]
    # Programs that take less than this to compile are not worth a file.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# The suite's programs are compiled far more than they run. Measured on test_synthesis.py,
# test_cam.py and test_attacks.py (one process, CPU seconds): 79 with LLVM's optimisation level
# 1 instead of the default 2 (72 against 55 on the first two files alone), 52 with XLA's
# classic CPU fusion emitters on top of it instead of the new ones (the quick demo: 85 s -> 57 s
# of wall time). The programs are the same XLA graphs, generated differently. LLVM's expensive
# passes off on top of that: 82 s of backend compilation instead of 97 s for three of the demo's
# sections (CAM, visualize, inversion; one run each on a loaded machine) with the same figures to
# the last digit, and 691 CPU seconds for the whole suite instead of 706 (two runs side by side: a
# small gain). (Level 0 compiles those sections in 12 s, but the programs run several times
# slower: test_claims.py took 127 s instead of 33.)
_flags = " --xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false"
_flags += " --xla_llvm_disable_expensive_passes=true"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (pyproject): each keeps XLA's Eigen kernels to one
    # thread, so the workers do not oversubscribe the cores (set before JAX creates its client).
    _flags += " --xla_cpu_multi_thread_eigen=false"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + _flags).strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest  # noqa: E402

DEMO_FIXTURES = {"demo_report", "demo_results"}


def pytest_unconfigure(config):
    """The run's own cache folder goes when the run ends (in the process that made it)."""
    owned = os.environ.get("CNNJAX_TEST_OWNS_XLA_CACHE")
    if (
        owned
        and not os.environ.get("PYTEST_XDIST_WORKER")
        and owned == os.environ.get("JAX_COMPILATION_CACHE_DIR")
    ):
        shutil.rmtree(owned, ignore_errors=True)


def _in_demo_group(item) -> bool:
    mark = item.get_closest_marker("xdist_group")
    return mark is not None and (mark.args[:1] == ("demo",) or mark.kwargs.get("name") == "demo")


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the marks
def pytest_collection_modifyitems(items):
    """Tests that read the demo's report run on one xdist worker, so the demo runs once; they
    come first, so that worker starts on the demo (the longest unit of work, 100 s or so) while
    the other takes the rest, and never runs it alone at the end. (Clean-clone CI runs of the
    same suite took 307 and 367 s before this ordering, 329 s after: the machine is shared and
    noisy, so this is a guard against the worst case, not a measured gain.)"""
    for item in items:
        if DEMO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("demo"))
    items.sort(key=lambda item: not _in_demo_group(item))  # stable: the order within each part kept


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
