"""Attack throughput on the default model at 224x224: PGD-10 images per second, and an
epsilon sweep run as one batched program against a Python loop over the epsilons.

    python benchmarks/attacks.py [--batches 8 32] [--sweep-images 4] [--repeats 3]

One JSON line per case: device, shapes, compile seconds, steady-state seconds (median),
images per second, success rate (the quality figure), achieved FLOP/s and the fraction of
this machine's matmul peak measured in the same run. A PGD-10 run is 11 forward-and-backward
passes per image (10 steps and the pass that evaluates the last iterate); its FLOPs are 11
times XLA's count for one input gradient of the network with XLA's grouped depthwise
convolution (as in forward_grad.py), so the figure does not depend on how cnnjax computes
the depthwise layers.

Sweep cases, all PGD-10 on ``--sweep-images`` photos at 8 epsilons:

* ``sweep_batched``: one call, the sweep folded into the batch (what ``pgd(eps=[...])`` does);
* ``sweep_loop``: a Python loop of 8 calls of the one-epsilon program (compiled once);
* ``sweep_jax_vmap``: ``jax.vmap`` of the one-epsilon attack over the epsilons, for its
  compile time (the model is traced under vmap) and speed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import device_info, emit, matmul_peak, time_jitted
from forward_grad import build, flops_per_image

import cnnjax
from cnnjax.techniques.adversarial import _iterative

EPS = np.array([0.25, 0.5, 1, 2, 3, 4, 6, 8], np.float32) / 255
STEPS = 10


def attack_fn(model):
    """PGD-10 (L-inf, untargeted, random start, early stopping): ``(params, x, labels, eps) -> result``."""

    def run(params, images, labels, eps):
        n = images.shape[0]
        return _iterative(model.apply, params, images, labels, jnp.zeros((n,), bool), eps, 2.5 * eps / STEPS,
                          jax.random.key(0), jnp.asarray(True), jnp.asarray(True), norm="inf", steps=STEPS,
                          restarts=1, squeeze=False)  # fmt: skip

    return run


def photos_batch(model, n):
    photos = cnnjax.sample_photos()
    x = np.concatenate([photos[k] for k in photos])[np.arange(n) % 4]
    labels = np.asarray(cnnjax.classify(model, x)[1])[:, 0]
    return jnp.asarray(x), jnp.asarray(labels, jnp.int32)


def time_loop(compiled, args_per_call, repeats):
    jax.block_until_ready([compiled(*a) for a in args_per_call])  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready([compiled(*a) for a in args_per_call])
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--sweep-images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-vmap", action="store_true", help="skip the jax.vmap sweep case")
    args = parser.parse_args()

    info = device_info()
    peak = matmul_peak()
    emit({"case": "matmul_peak", **info, "gflops_per_s": round(peak / 1e9, 1)})
    grad_flops = flops_per_image(build("xla"))["input_grad"]
    pgd_flops = (STEPS + 1) * grad_flops
    model = cnnjax.load_model()
    run = jax.jit(attack_fn(model))

    def record(case, images, seconds, compile_s, success, **extra):
        rate = images * pgd_flops / seconds
        emit({
            "case": case, "model": "efficientnet_lite0", **info, "steps": STEPS, **extra,
            "compile_s": compile_s, "steady_s": round(seconds, 4), "images_per_s": round(images / seconds, 2),
            "success_rate": round(float(success), 3), "gflop_per_image": round(pgd_flops / 1e9, 2),
            "gflops_per_s": round(rate / 1e9, 1), "fraction_of_matmul_peak": round(rate / peak, 3),
        })  # fmt: skip

    for batch in args.batches:
        x, labels = photos_batch(model, batch)
        eps = jnp.asarray(EPS[3:4])  # 2/255
        r = time_jitted(run, model.params, x, labels, eps, repeats=args.repeats, min_seconds=0)
        success = np.mean(np.asarray(run(model.params, x, labels, eps).success))
        record("pgd10", batch, r["steady_s"], r["compile_s"], success, batch=batch, eps=2 / 255,
               shape=[batch, 224, 224, 3], runs=r["runs"])  # fmt: skip

    n = args.sweep_images
    x, labels = photos_batch(model, n)
    eps_all = jnp.asarray(EPS)
    sweep = time_jitted(run, model.params, x, labels, eps_all, repeats=args.repeats, min_seconds=0)
    success = np.mean(np.asarray(run(model.params, x, labels, eps_all).success))
    record("sweep_batched", n * len(EPS), sweep["steady_s"], sweep["compile_s"], success, batch=n,
           epsilons=len(EPS))  # fmt: skip

    t = time.perf_counter()
    one = run.lower(model.params, x, labels, eps_all[:1]).compile()
    compile_one = round(time.perf_counter() - t, 3)
    calls = [(model.params, x, labels, eps_all[i : i + 1]) for i in range(len(EPS))]
    loop_s = time_loop(one, calls, args.repeats)
    success = np.mean([np.asarray(one(*c).success) for c in calls])
    record("sweep_loop", n * len(EPS), loop_s, compile_one, success, batch=n, epsilons=len(EPS))

    results = {"sweep_batched": sweep["steady_s"]}
    if not args.no_vmap:
        vmapped = jax.jit(jax.vmap(lambda p, x, y, e: attack_fn(model)(p, x, y, e[None]),
                                   in_axes=(None, None, None, 0)))  # fmt: skip
        v = time_jitted(vmapped, model.params, x, labels, eps_all, repeats=args.repeats, min_seconds=0)
        success = np.mean(np.asarray(vmapped(model.params, x, labels, eps_all).success))
        record("sweep_jax_vmap", n * len(EPS), v["steady_s"], v["compile_s"], success, batch=n,
               epsilons=len(EPS))  # fmt: skip
        results["sweep_jax_vmap"] = v["steady_s"]
    emit({
        "case": "sweep_speedup_vs_loop", **info, "epsilons": len(EPS), "batch": n,
        **{f"{k}_speedup": round(loop_s / s, 3) for k, s in results.items()},
    })  # fmt: skip


if __name__ == "__main__":
    main()
