"""The README's examples run, and its Quick start is what CI runs."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text() if README.is_file() else ""
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)

pytestmark = pytest.mark.skipif(not TEXT, reason="README.md is not beside the tests (installed package)")


def test_quick_start_has_two_commands():
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", TEXT, re.S | re.M).group(1)
    commands = [c for c in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines() if c]
    assert len(commands) == 2
    assert "cnnjax demo" in commands[0] and "pytest" in commands[1]


def _param(index):
    # The visualize example runs the demo's class-visualisation program, the CAM example the
    # demo's receptive fields and CAM head: on the demo's worker they are already there.
    shares_demo = "cnnjax.visualize(" in BLOCKS[index] or "cnnjax.cam(" in BLOCKS[index]
    return pytest.param(index, marks=[pytest.mark.xdist_group("demo")] if shares_demo else [])


@pytest.mark.parametrize("index", [_param(i) for i in range(len(BLOCKS))])
def test_python_examples_run_and_print_what_they_say(index, capsys):
    code = BLOCKS[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    # What a print promises: its inline comment, or a comment on the line right after it.
    lines = code.splitlines()
    promised = []
    for i, line in enumerate(lines):
        if line.startswith("print("):
            inline = re.search(r"\)[ \t]+# (.*)$", line)
            after = lines[i + 1] if i + 1 < len(lines) else ""
            promised.append(inline.group(1) if inline else after.removeprefix("# "))
    assert printed == promised
