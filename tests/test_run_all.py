"""benchmarks/run_all.py and benchmarks/run_on.sh: every benchmark listed, the table's columns
read from the right fields, a failing benchmark recorded, the machine scripts in dry mode."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(*argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)


def test_dry_run_lists_every_benchmark_script_once_and_data_only_where_read():
    r = _run(sys.executable, str(BENCH / "run_all.py"), "--dry-run", "--data", "/d")
    assert r.returncode == 0, r.stderr
    scripts = {p.name for p in BENCH.glob("*.py")} - {"_common.py", "run_all.py"}
    listed = [line.split()[1] for line in r.stdout.splitlines()]
    assert sorted(Path(s).name for s in listed) == sorted(scripts)
    with_data = {Path(line.split()[1]).stem for line in r.stdout.splitlines() if "--data /d" in line}
    assert with_data == {"train", "claims"}


def test_table_reads_each_column_from_its_field(tmp_path):
    records = [
        {"case": "train_step", "backend": "cpu", "device": "cpu", "devices": 1, "cpu": "Some CPU",
         "batch": 128, "compile_s": 1.5, "steady_s": 0.25, "examples_per_s": 512.0, "gflops_per_s": 90.0,
         "val_accuracy": 0.8, "fraction_of_matmul_peak": 0.3},
        {"case": "matmul_peak", "backend": "gpu", "device": "NVIDIA A100", "devices": 8,
         "gflops_per_s": 19500.0},
        {"case": "layer", "backend": "cpu", "device": "cpu", "devices": 1, "impl": "xla",
         "forward_ms": 2.5, "speedup": 1.7},
    ]  # fmt: skip
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    r = _run(sys.executable, str(BENCH / "run_all.py"), "--table", str(path))
    assert r.returncode == 0, r.stderr
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in r.stdout.splitlines()[2:]]
    assert rows == [
        ["cpu x1", "Some CPU", "mine", "train_step (batch 128)", "1.5", "0.25", "512 examples/s",
         "val accuracy 0.8", "0.3"],
        ["gpu NVIDIA A100 x8", "-", "mine", "matmul_peak", "-", "-", "19500 GFLOP/s", "-", "-"],
        ["cpu x1", "-", "mine", "layer (impl \"xla\")", "-", "forward ms 2.5", "-", "speedup 1.7", "-"],
    ]  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"case": 1}\nnot json\n')
    r = _run(sys.executable, str(BENCH / "run_all.py"), "--table", str(bad))
    assert r.returncode != 0 and "bad.jsonl:2: not a JSON line" in r.stderr


def test_a_failing_benchmark_is_recorded_and_the_summary_still_written(tmp_path):
    out = tmp_path / "run"
    r = _run(sys.executable, str(BENCH / "run_all.py"), "--only", "first_call", "--out", str(out),
             "--args", "first_call=--cases no_such_case")  # fmt: skip
    assert r.returncode == 1
    summary = (out / "summary.md").read_text()
    assert "| first_call | **failed**: exit 2: " in summary and "no_such_case" in summary
    assert not list(out.glob("*.tmp"))
    r = _run(sys.executable, str(BENCH / "run_all.py"), "--args", "nonsense=--x")
    assert r.returncode == 2 and "--args: expected NAME" in r.stderr


@pytest.mark.parametrize("machine, jax", [("cpu", "jax"), ("gpu", "jax[cuda12]"), ("tpu", "jax[tpu]")])
def test_machine_scripts_in_dry_mode(machine, jax):
    r = _run("bash", str(BENCH / "run_on.sh"), machine, "--dry-run", "--only", "attacks", "units")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith(f"-m pip install {BENCH}/.. {jax}")
    assert f"assert b == '{machine}'" in lines[1]
    assert [Path(line.split()[1]).stem for line in lines[2:]] == ["attacks", "units"]


def test_machine_script_refuses_an_unknown_machine():
    r = _run("bash", str(BENCH / "run_on.sh"), "quantum", "--dry-run")
    assert r.returncode == 2 and "unknown machine 'quantum'" in r.stderr
