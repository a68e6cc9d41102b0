"""The docstrings' examples run and print what they say: each module's doctests are one test.

Every module under ``cnnjax/`` (private modules included) is searched with
:class:`doctest.DocTestFinder`, which keeps only the objects a module defines: a function
re-exported by a package's ``__init__`` runs once, under the module that defines it (and
``test_every_example_runs_once`` checks that each ``>>>`` line of a module's source is one
collected example). The test ids are the module names, so pytest-xdist shares the modules out
between its workers. Examples run in a temporary working directory, with ``tempfile``'s
folders inside it, under the suite's strict settings (warnings are errors, rank promotion
raises).
"""

import doctest
import importlib
import pkgutil
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cnnjax

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
MODULES = sorted(["cnnjax", *(m.name for m in pkgutil.walk_packages(cnnjax.__path__, "cnnjax."))])
EXTRA_GLOBALS = {"np": np, "jnp": jnp, "jax": jax, "optax": optax, "cnnjax": cnnjax}


def _doctests(name: str) -> list[doctest.DocTest]:
    """The doctests of the objects module ``name`` defines (its own docstring included), in
    source order, each with the module's globals plus :data:`EXTRA_GLOBALS`."""
    module = importlib.import_module(name)
    globs = {**vars(module), **EXTRA_GLOBALS}
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name, globs=globs)
    return sorted((t for t in tests if t.examples), key=lambda t: (t.lineno or 0, t.name))


# A module without examples (the command line, most private helpers) has nothing to run.
WITH_EXAMPLES = [name for name in MODULES if _doctests(name)]


def test_modules_are_found():
    """Private modules and subpackages are searched, not only the public ``__init__`` files."""
    assert {"cnnjax", "cnnjax.cli", "cnnjax.saliency", "cnnjax.saliency._cam"} <= set(MODULES)
    assert {"cnnjax.saliency._cam", "cnnjax.training._optim", "cnnjax.transforms"} <= set(WITH_EXAMPLES)


def test_every_example_runs_once():
    """Each ``>>>`` line in a module's source is one example collected for that module: none is
    out of the finder's reach, and no re-exported object is collected twice."""
    wrong = []
    for name in MODULES:
        path = Path(importlib.import_module(name).__file__)
        in_source = len(re.findall(r"^\s*>>>(?: |$)", path.read_text(), re.M))
        collected = sum(len(t.examples) for t in _doctests(name))
        if collected != in_source:
            wrong.append(f"{name}: {collected} examples collected, {in_source} in {path}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    for test in _doctests(name):
        runner.run(test, out=report.append)
    failed, attempted = runner.failures, runner.tries
    assert failed == 0, f"{failed} of {attempted} examples of {name} failed:\n" + "".join(report)
