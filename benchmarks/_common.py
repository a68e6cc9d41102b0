"""Shared benchmark helpers: timing with compile time kept apart (of a jitted function, or of a
public cnnjax function through JAX's own compile events), XLA's FLOP count of a computation,
the machine's matmul peak, and JSON-lines output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp

# Compile seconds are of cold compiles: cnnjax's persistent compilation cache stays off in the
# benchmarks unless CNNJAX_CACHE_DIR says otherwise (benchmarks/first_call.py sets a folder of
# its own for each process it starts, to measure the cache itself). Set before cnnjax is imported.
os.environ.setdefault("CNNJAX_CACHE_DIR", "off")

# The compile events JAX 0.10.2 records (checked by experiment: a first call of a jitted
# function emits one of each of the first three; a call that hits the in-memory cache emits
# none). A nested jit traced inside another emits no events of its own, so the durations do
# not overlap. The persistent compilation cache, if enabled, adds a retrieval event.
COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "backend_compile_s",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache_retrieval_s",
}
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"

_lock = threading.Lock()
_active: list[list[tuple[str, float]]] = []
_registered = False


def _listener(event: str, duration: float, **kwargs) -> None:
    if event in COMPILE_EVENTS:
        with _lock:
            for events in _active:
                events.append((event, duration))


@contextlib.contextmanager
def compile_events() -> Iterator[list[tuple[str, float]]]:
    """Collect ``(event, seconds)`` for JAX's compile events inside the block (any thread)."""
    global _registered
    events: list[tuple[str, float]] = []
    with _lock:
        if not _registered:
            jax.monitoring.register_event_duration_secs_listener(_listener)
            _registered = True
        _active.append(events)
    try:
        yield events
    finally:
        with _lock:
            _active.remove(events)


def _summarise(events: list[tuple[str, float]]) -> dict:
    out = {name: 0.0 for name in COMPILE_EVENTS.values()}
    for event, seconds in events:
        out[COMPILE_EVENTS[event]] += seconds
    return {
        "compile_s": round(sum(out.values()), 3),
        **{k: round(v, 3) for k, v in out.items()},
        "compiles": sum(event == BACKEND_COMPILE for event, _ in events),
    }


def time_call(fn: Callable, *args, repeats: int = 7, min_seconds: float = 1.0, **kwargs) -> dict:
    """Time ``fn(*args, **kwargs)`` as a user calls it: the first call, then steady state.

    ``fn`` is any function (a public cnnjax function, a loop of them, a jitted function); its
    result is waited for with ``jax.block_until_ready``. The first call's compile seconds are
    the sum of the durations of JAX's own compile events during it (tracing to a jaxpr,
    lowering to MLIR, XLA's backend compilation; ``trace_s``, ``lower_s``,
    ``backend_compile_s`` apart) for every program it compiles (``compiles``: how many
    backend compilations), not wall time, so host work and execution are not counted in it;
    ``first_call_s`` is the first call's wall time, everything included. The steady state is
    the median (and spread) of the wall seconds of later calls, at least ``repeats`` of them
    and ``min_seconds`` in total; ``steady_compiles`` counts backend compilations during them
    (0 unless a call recompiles) and ``steady_compile_event_s`` the compile-event seconds per
    call (tracing that is redone every call, e.g. ``jax.eval_shape`` of a fresh closure).
    ``out`` is the last call's result.
    """
    with compile_events() as events:
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*args, **kwargs))
        first_s = time.perf_counter() - t
    first = _summarise(events)
    times: list[float] = []
    with compile_events() as steady_events:
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            t = time.perf_counter()
            out = jax.block_until_ready(fn(*args, **kwargs))
            times.append(time.perf_counter() - t)
    steady = _summarise(steady_events)
    return {
        **first,
        "first_call_s": round(first_s, 3),
        "steady_s": statistics.median(times),
        "steady_min_s": min(times),
        "steady_max_s": max(times),
        "runs": len(times),
        "steady_compiles": steady["compiles"],
        "steady_compile_event_s": round(sum(steady[k] for k in COMPILE_EVENTS.values()) / len(times), 4),
        "out": out,
    }


def time_jitted(fn: Callable, *args, repeats: int = 7, min_seconds: float = 1.0) -> dict:
    """Compile ``fn`` (a jitted function) for ``args``, then time it.

    Returns compile seconds (lowering + XLA compilation, no execution) and the median and
    spread of steady-state seconds per call over at least ``repeats`` calls and
    ``min_seconds`` in total, after one warm-up call, and XLA's cost analysis of the program.
    """
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(*args))  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t)
    return {
        "compile_s": round(compile_s, 3),
        "steady_s": statistics.median(times),
        "steady_min_s": min(times),
        "steady_max_s": max(times),
        "runs": len(times),
        "cost": compiled.cost_analysis(),
    }


def profile_ops(fn: Callable, *args, calls: int = 5) -> dict:
    """Where the time of a jitted ``fn`` goes: ``jax.profiler`` traces ``calls`` calls after a
    warm-up and each compiled operation's events are attributed to a phase and a scope.

    The CPU runtime records one event per executed operation (a thunk, named after its HLO
    instruction); the compiled program's text gives each instruction's JAX name stack
    (``jit(f)/transpose(jvp(conv2))/dot_general``): phase ``backward`` under ``transpose(``,
    ``forward`` under ``jvp(``, else ``step``; scope the ``jax.named_scope`` names inside
    (the outermost: ``conv2``, ``update``; ``(none)`` without one; a loop's body is
    attributed as its operations are). Returns ``{"wall_ms", "ops_ms",
    "rows": [{"phase", "scope", "ms", "ops"}...]}``, milliseconds per call; ``ops_ms`` (the sum
    of the operations) exceeds ``wall_ms`` where operations ran at once on several threads.
    """
    import glob
    import gzip
    import re
    import tempfile
    from collections import defaultdict

    compiled = fn.lower(*args).compile()
    names = {}
    for m in re.finditer(r"%([\w.\-]+) = [^\n]*?metadata=\{op_name=\"([^\"]*)\"", compiled.as_text()):
        names[m.group(1)] = m.group(2)
    jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            t = time.perf_counter()
            for _ in range(calls):
                jax.block_until_ready(compiled(*args))
            wall = time.perf_counter() - t
        (path,) = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    ms: dict = defaultdict(float)
    count: dict = defaultdict(int)
    for e in events:
        op_name = names.get(e.get("name")) if e.get("ph") == "X" else None
        if op_name is None:
            continue
        parts = op_name.split("/")[1:-1]
        phase = "backward" if any("transpose(" in p for p in parts) else "forward" if any(
            "jvp(" in p for p in parts) else "step"  # fmt: skip
        scopes = [
            s
            for s in (re.sub(r"^(?:\w+\()+|\)+$", "", p) for p in parts)
            if s and s not in ("while", "body", "cond", "closed_call")
        ]  # a loop's own levels
        key = (phase, scopes[0] if scopes else "(none)")
        ms[key] += e["dur"] / 1e3 / calls  # microseconds in the trace
        count[key] += 1
    rows = [{"phase": k[0], "scope": k[1], "ms": round(v, 2), "ops": count[k] / calls}
            for k, v in sorted(ms.items(), key=lambda kv: -kv[1])]  # fmt: skip
    return {"wall_ms": round(wall / calls * 1e3, 2), "ops_ms": round(sum(ms.values()), 2), "rows": rows}


def flops_of(cost) -> float:
    """The ``flops`` entry of a cost analysis (a dict, or a list of one per program), or 0."""
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def program_flops(fn: Callable, *args) -> float:
    """XLA's FLOP count (2 per multiply-add) of ``jax.jit(fn)`` compiled for ``args``, from
    ``.lower(...).compile().cost_analysis()``. XLA counts a loop body once, whatever the trip
    count: pass the computation of one step."""
    return flops_of(jax.jit(fn).lower(*args).compile().cost_analysis())


def matmul_peak(n: int = 2048, repeats: int = 15) -> float:
    """This machine's float32 matmul throughput in FLOP/s (median), measured now."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    r = time_jitted(jax.jit(jnp.matmul), a, b, repeats=repeats)
    return 2 * n**3 / r["steady_s"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_info() -> dict:
    d = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": d.device_kind,
        "devices": jax.device_count(),
        "cpu": cpu_model(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "xla_cache": jax.config.jax_compilation_cache_dir or "off",  # compile seconds: cold unless set
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (``resource.getrusage``; Linux reports
    kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def memory_analysis(compiled) -> dict:
    """XLA's memory figures of a compiled program (``.lower(...).compile()``), in MB: its
    temporaries, arguments and outputs (``memory_analysis()``; empty where the backend has none)."""
    m = compiled.memory_analysis()
    if m is None:
        return {}
    return {
        "xla_temp_mb": round(m.temp_size_in_bytes / 2**20, 1),
        "xla_argument_mb": round(m.argument_size_in_bytes / 2**20, 1),
        "xla_output_mb": round(m.output_size_in_bytes / 2**20, 1),
    }


def run_child(argv: list[str]) -> None:
    """Run ``python argv...`` as a fresh process (its peak memory is its own) and pass on the JSON
    lines it prints."""
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{argv} failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            print(line, flush=True)


def emit(record: dict) -> None:
    """Print one JSON line (flushing, so a long run streams)."""
    record = {k: v for k, v in record.items() if k not in ("cost", "out")}
    print(json.dumps(record), flush=True)
    sys.stdout.flush()
