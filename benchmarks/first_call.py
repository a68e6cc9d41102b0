"""The first call of a technique in a fresh process, with a cold and a warm compilation cache.

    python benchmarks/first_call.py [--cases visualize pgd grad_cam style_transfer classify_cli]

For each case, ``--runs`` fresh processes (2) share one new cache folder (``CNNJAX_CACHE_DIR``):
the first finds it empty (cold), the others find the programs the first wrote (warm). Each
process times its first call and the median of two further calls (steady state) of the same
technique on the default model, and counts the XLA compilations of the first call. JSON lines,
each with the device and CPU; ``first_over_steady`` is the ratio measured in the same process.
``classify_cli`` times the ``cnnjax classify`` command of one photo against a bare
``python -c "import jax"`` (medians of alternating runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import device_info, emit

CASES = {
    "visualize": "lambda: cnnjax.visualize(model, [objectives.channel('block_10', c) for c in range(8)], "
    "size=128, steps=64, key=0)",
    "pgd": "lambda: attacks.pgd(model, photos, eps=2 / 255, steps=10, key=0)",
    "grad_cam": "lambda: cnnjax.grad_cam(model, photos, classes=[1, 2, 3, 4, 5, 6, 7, 8])",
    "style_transfer": "lambda: cnnjax.style_transfer(model, photos[:1], styles[:1], steps=32)",
}

CHILD = """
import json, statistics, sys, time
t0 = time.perf_counter()
import jax, numpy as np
import cnnjax
from cnnjax import attacks, objectives
from cnnjax.testing import count_compiles
import_s = time.perf_counter() - t0
model = cnnjax.load_model("efficientnet_lite0")
photos = np.concatenate(list(cnnjax.sample_photos(size=224).values()))[:8]
styles = np.concatenate(list(cnnjax.sample_styles(size=224).values()))
run = {call}
with count_compiles() as compiles:
    t = time.perf_counter(); jax.block_until_ready(run()); first = time.perf_counter() - t
steady = []
for _ in range(2):
    t = time.perf_counter(); jax.block_until_ready(run()); steady.append(time.perf_counter() - t)
print(json.dumps({{"import_s": round(import_s, 2), "first_s": round(first, 3), "compiles": compiles.n,
                  "steady_s": round(statistics.median(steady), 3)}}))
"""


def classify_latency(info: dict, runs: int) -> None:
    """``cnnjax classify`` of one photo in fresh processes against a bare ``import jax``.

    One cold run fills a new cache; then ``runs`` warm commands alternate with ``runs`` bare
    imports (so both see the same machine load) and the medians are compared."""
    photo = Path(__file__).resolve().parents[1] / "cnnjax" / "assets" / "photos" / "coffee.png"
    folder = Path(tempfile.mkdtemp(prefix="cnnjax-latency-"))
    env = {**os.environ, "CNNJAX_CACHE_DIR": str(folder / "xla")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    command = [sys.executable, "-m", "cnnjax.cli", "classify", str(photo)]

    def seconds(argv):
        t = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        return time.perf_counter() - t

    try:
        cold = seconds(command)
        warm, bare = [], []
        for _ in range(runs):
            warm.append(seconds(command))
            bare.append(seconds([sys.executable, "-c", "import jax"]))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    warm_s, bare_s = statistics.median(warm), statistics.median(bare)
    emit({"case": "classify_cli_latency", **info, "runs": runs, "cold_s": round(cold, 2),
          "warm_s": round(warm_s, 2), "import_jax_s": round(bare_s, 2),
          "warm_minus_import_jax_s": round(warm_s - bare_s, 2)})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted([*CASES, "classify_cli"]),
                        default=[*CASES, "classify_cli"])  # fmt: skip
    parser.add_argument("--runs", type=int, default=2, help="processes per case (the first is cold)")
    args = parser.parse_args()
    info = {**device_info(), "xla_cache": "a new folder per case"}  # the children's, not this process's
    if "classify_cli" in args.cases:
        classify_latency(info, max(5, args.runs))
    for case in [c for c in args.cases if c in CASES]:
        folder = Path(tempfile.mkdtemp(prefix="cnnjax-first-call-"))
        try:
            for run in range(args.runs):
                env = {**os.environ, "CNNJAX_CACHE_DIR": str(folder / "xla")}
                env.pop("JAX_COMPILATION_CACHE_DIR", None)
                out = subprocess.run([sys.executable, "-c", CHILD.format(call=CASES[case])], env=env,
                                     capture_output=True, text=True, check=True)  # fmt: skip
                record = json.loads(out.stdout.strip().splitlines()[-1])
                cache = "cold" if run == 0 else "warm"
                emit({"case": f"first_call_{case}", **info, "cache": cache, **record,
                      "first_over_steady": round(record["first_s"] / record["steady_s"], 2)})  # fmt: skip
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
