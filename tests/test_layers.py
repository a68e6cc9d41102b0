"""The package's layers, declared once in pyproject.toml ([tool.importlinter]), hold on every run:
no module imports from a layer above its own, no package's modules import each other in a
cycle, private modules stay in their package; and no module imports another's private names."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(), reason="needs the source tree")


def test_import_linter_contracts_are_kept(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0


def _imports_of_private_names(path: Path):
    """``from X import _name`` where X is another cnnjax module (dunders excepted)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnjax"):
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                # A package may import its own private modules (cnnjax.saliency imports _cam).
                is_module = (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists()
                if private and not (is_module and module.startswith(node.module)):
                    yield f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {alias.name}"


def test_no_private_names_cross_modules():
    files = [
        *(ROOT / "cnnjax").rglob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
        *(ROOT / "weights").glob("*.py"),
    ]
    found = [line for path in files for line in _imports_of_private_names(path)]
    assert not found, "\n".join(found)
