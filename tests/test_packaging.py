"""Packaging: the wheel carries every package, the assets and the bundled weights."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(), reason="needs the source tree")


def test_every_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cnnjax").rglob("__init__.py")}
    assert found | {"cnnjax.weights"} == listed


def _setuptools_builds_here() -> bool:
    """Whether the installed setuptools meets pyproject's build requirement (then the wheel is
    built without an isolated build environment, seconds faster)."""
    try:
        import setuptools
        import wheel  # noqa: F401  (setuptools' bdist_wheel)
    except ImportError:
        return False
    need = re.search(r'"setuptools>=([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    have = tuple(int(p) for p in re.findall(r"\d+", setuptools.__version__)[:2])
    return have >= tuple(int(p) for p in need.split("."))


def test_wheel_contains_weights_assets_and_entry_point(tmp_path):
    isolation = ["--no-build-isolation"] if _setuptools_builds_here() else []
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation,
           "-w", str(tmp_path), str(ROOT)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("cnnjax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in [
        "cnnjax/weights/efficientnet_lite0.safetensors",
        "cnnjax/weights/efficientnet_lite0.json",
        "cnnjax/assets/imagenet_classes.tsv",
        "cnnjax/assets/photos/coffee.png",
        "cnnjax/assets/photos/LICENSE.md",
        "cnnjax/cli.py",
    ]:
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert re.search(r"cnnjax\s*=\s*cnnjax\.cli:console", text)
