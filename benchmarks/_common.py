"""Shared benchmark helpers: timing with compile time kept apart, the machine's matmul peak,
and JSON-lines output."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp


def time_jitted(fn: Callable, *args, repeats: int = 7, min_seconds: float = 1.0) -> dict:
    """Compile ``fn`` (a jitted function) for ``args``, then time it.

    Returns compile seconds (lowering + XLA compilation, no execution) and the median and
    spread of steady-state seconds per call over at least ``repeats`` calls and
    ``min_seconds`` in total, after one warm-up call.
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


def matmul_peak(n: int = 2048, repeats: int = 15) -> float:
    """This machine's float32 matmul throughput in FLOP/s (median), measured now."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    r = time_jitted(jax.jit(jnp.matmul), a, b, repeats=repeats)
    return 2 * n**3 / r["steady_s"]


def device_info() -> dict:
    d = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": d.device_kind,
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def emit(record: dict) -> None:
    """Print one JSON line (flushing, so a long run streams)."""
    record = {k: v for k, v in record.items() if k != "cost"}
    print(json.dumps(record), flush=True)
    sys.stdout.flush()
