"""Every benchmark of the project in one run, and one Markdown table of what they measured.

    python benchmarks/run_all.py [--out DIR] [--data PATH_TO_FASHION_MNIST] [--only NAME ...]
                                 [--args NAME="--flag value" ...] [--dry-run]
    python benchmarks/run_all.py --table results/attacks.jsonl results/train.jsonl ...

Runs each benchmark script of this folder (``BENCHMARKS``, in that order) as its own process,
one after the other (so their timings do not overlap), with the interpreter running this one.
Each script's JSON lines go to ``DIR/<name>.jsonl`` as they come; a script that fails is
recorded (exit code, last line of its error output) and the others still run. At the end
``DIR/summary.md`` holds one table: device and CPU model, benchmark, case, compile seconds,
steady-state seconds, throughput, a quality figure or same-run ratio, and the fraction of the
device's measured matmul peak, each taken from a line's fields by name (``compile_s``,
``steady_s``, ``..._per_s``, ``fraction_of_matmul_peak``; "-" where a case has none). ``--table``
builds the same table from JSON-lines files already written, without running anything.

``--dry-run`` prints the commands and runs nothing. ``DIR`` defaults to
``results/run-<UTC time>``; the files under ``results/`` that the READMEs quote are not touched.
The scripts for a CPU machine, a GPU and a TPU VM (``run_on_cpu.sh``, ``run_on_gpu.sh``,
``run_on_tpu.sh``) install the matching JAX and call this.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> the arguments it always gets; "--data" is added for those that read Fashion-MNIST.
BENCHMARKS = {
    "forward_grad": [],
    "synthesis": [],
    "attacks": [],
    "precision": [],
    "localisation": [],
    "units": [],
    "train": [],
    "claims": [],
    "first_call": [],
}
NEEDS_DATA = {"train", "claims"}

# Fields read into the table's columns, in order of preference (a name, or "*suffix").
COMPILE = ("compile_s", "*compile_s")
STEADY = ("steady_s", "*steady_s", "*_step_s", "second_epoch_s", "run_s", "seconds", "*_ms")
THROUGHPUT = ("*_per_s",)
QUALITY = ("success_rate", "*accuracy", "*accuracy_after_one_epoch", "final_loss", "*speedup",
           "*_over_*", "noise", "iou", "recognised")  # fmt: skip
PEAK = ("fraction_of_matmul_peak", "*fraction_of*")
CONTEXT = ("backend", "device", "devices", "cpu", "jax", "python", "xla_cache", "case")
# Settings that tell a benchmark's cases apart, shown beside the case's name.
SETTINGS = ("model", "program", "impl", "method", "layer", "shape", "batch", "targets", "size", "images",
            "steps", "cache", "epsilons", "dtype")  # fmt: skip


def commands(names: list[str], data: str | None, extra: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """``(name, argv)`` for each benchmark to run."""
    out = []
    for name in names:
        argv = [sys.executable, str(HERE / f"{name}.py"), *BENCHMARKS[name]]
        if data is not None and name in NEEDS_DATA:
            argv += ["--data", data]
        out.append((name, argv + extra.get(name, [])))
    return out


def _pick(
    record: dict, patterns: tuple[str, ...], exclude: tuple[str, ...] = ()
) -> tuple[str, object] | None:
    keys = [k for k in record if k not in CONTEXT and k not in exclude]
    for pattern in patterns:
        for k in keys:
            if pattern == k or (pattern.startswith("*") and _matches(k, pattern[1:])):
                return k, record[k]
    return None


def _matches(key: str, pattern: str) -> bool:
    if "*" in pattern:  # "_over_*": a key containing "_over_"
        return pattern.strip("*") in key
    return key.endswith(pattern)


def _show(found: tuple[str, object] | None, *, name: bool = False) -> str:
    if found is None or isinstance(found[1], (dict, list)):
        return "-"
    key, value = found
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if key.endswith("_per_s"):
        return f"{text} {key.removesuffix('_per_s').replace('_', ' ').replace('gflops', 'GFLOP')}/s"
    return f"{key.replace('_', ' ')} {text}" if name else text


def table(records: list[tuple[str, dict]]) -> str:
    """The Markdown table of ``(benchmark, JSON record)`` pairs, one row per record."""
    lines = ["| device | CPU | benchmark | case | compile s | steady s | throughput | quality / ratio | "
             "fraction of peak |", "| --- | --- | --- | --- | ---: | ---: | --- | --- | ---: |"]  # fmt: skip
    for bench, r in records:
        if "error" in r:
            lines.append(f"| - | - | {bench} | **failed**: {r['error']} | - | - | - | - | - |")
            continue
        backend, kind = r.get("backend", "?"), r.get("device", "")
        device = (
            f"{backend} x{r.get('devices', 1)}"
            if kind in ("", backend)
            else f"{backend} {kind} x{r.get('devices', 1)}"
        )
        settings = ", ".join(
            f"{k} {json.dumps(r[k])}" for k in SETTINGS if k in r and not isinstance(r[k], dict)
        )
        case = f"{r.get('case', '-')} ({settings})" if settings else str(r.get("case", "-"))
        throughput = _pick(r, THROUGHPUT, exclude=("gflops_per_s",)) or _pick(r, ("gflops_per_s",))
        steady = _pick(r, STEADY)
        cells = [device, str(r.get("cpu", "-")), bench, case,
                 _show(_pick(r, COMPILE)), _show(steady, name=steady is not None and steady[0] != "steady_s"),
                 _show(throughput),
                 _show(_pick(r, QUALITY), name=True), _show(_pick(r, PEAK))]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def read_jsonl(path: Path) -> list[dict]:
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{i}: not a JSON line ({e.msg})") from None
    return records


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(cmds: list[tuple[str, list[str]]], out: Path) -> list[tuple[str, dict]]:
    out.mkdir(parents=True, exist_ok=True)
    records: list[tuple[str, dict]] = []
    for i, (name, argv) in enumerate(cmds, 1):
        print(f"[{i}/{len(cmds)}] {name}: {shlex.join(argv)}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        with open(out / f"{name}.jsonl", "w") as sink:
            proc = subprocess.Popen(argv, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for line in proc.stdout:
                sink.write(line)
                sink.flush()
                if line.startswith("{"):
                    records.append((name, json.loads(line)))
            err = proc.stderr.read()
            code = proc.wait()
        if code != 0:
            last = next((s for s in reversed(err.strip().splitlines()) if s.strip()), "")
            records.append((name, {"error": f"exit {code}: {last[:200]}"}))
        print(f"    {'ok' if code == 0 else f'failed ({code})'} in {time.perf_counter() - t:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the results (default results/run-<time>)"
    )
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder, for train and claims")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--args", nargs="+", default=[], metavar='NAME="--flag value"',
                        help="extra arguments for one benchmark, e.g. attacks=\"--batches 8\"")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--table", nargs="+", type=Path, default=None, metavar="JSONL",
                        help="print the table of these JSON-lines files and exit")  # fmt: skip
    args = parser.parse_args(argv)
    if args.table is not None:
        missing = [str(p) for p in args.table if not p.is_file()]
        if missing:
            parser.error(f"no such file: {', '.join(missing)}")
        print(table([(p.stem, r) for p in args.table for r in read_jsonl(p)]), end="")
        return 0
    extra = {}
    for item in args.args:
        name, sep, flags = item.partition("=")
        if not sep or name not in BENCHMARKS:
            parser.error(
                f'--args: expected NAME="--flag value" with NAME one of {", ".join(BENCHMARKS)}, got {item!r}'
            )
        extra[name] = shlex.split(flags)
    cmds = commands(args.only, args.data, extra)
    if args.dry_run:
        for _, cmd in cmds:
            print(shlex.join(cmd))
        return 0
    out = args.out or HERE / "results" / time.strftime("run-%Y%m%dT%H%M%SZ", time.gmtime())
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file")
    records = run(cmds, out)
    _write_atomic(out / "summary.md", table(records))
    print(f"wrote {out / 'summary.md'}", file=sys.stderr)
    return 1 if any("error" in r for _, r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
