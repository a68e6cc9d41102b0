"""Attack throughput on the default model at 224x224: PGD-10 images per second, and an
epsilon sweep run as one batched program against a Python loop over the epsilons.

    python benchmarks/attacks.py [--batches 8 32] [--sweep-images 4] [--repeats 3]
    python benchmarks/attacks.py --cases dataset [--data PATH_TO_FASHION_MNIST] [--dataset-steps 5]
                                 [--dataset-limit N] [--memory-budgets 268435456 default]

One JSON line per case: device, CPU, shapes, compile seconds, steady-state seconds (median),
images per second, success rate (the quality figure), achieved FLOP/s and the fraction of
this machine's matmul peak measured in the same run. The attacks are timed as a user calls
them: ``cnnjax.attacks.pgd`` itself (its argument checks, the compiled attack and the check
that the result is finite), with ``_common.time_call``: the compile seconds are JAX's own
compile events during the first call, the steady state the median of later calls. A PGD-10
run is 11 forward-and-backward passes per image (10 steps and the pass that evaluates the
last iterate); its FLOPs are 11 times XLA's count for one input gradient of the network with
XLA's grouped depthwise convolution (``forward_grad.flops_per_image``), so the figure does
not depend on how cnnjax computes the depthwise layers.

Sweep cases, all PGD-10 on ``--sweep-images`` photos at 8 epsilons:

* ``sweep_batched``: one call, the sweep folded into the batch (``pgd(eps=[...])``);
* ``sweep_loop``: a Python loop of 8 calls of ``pgd(eps=[e])`` (one program, compiled once);
* ``sweep_jax_vmap``: ``jax.vmap`` over the epsilons of a one-epsilon PGD-10 written here
  from the public pieces (``cnnjax.attacks.steepest_descent`` and ``project``,
  ``cnnjax.losses.softmax_cross_entropy``, ``model.apply``), with the same random start,
  step size, early stopping and final evaluating pass as ``pgd``: its compile time (the
  model is traced under vmap) and speed. (``pgd`` itself checks its arguments on the host,
  so it cannot be vmapped.)

``dataset`` (asked for by name: minutes) attacks the whole Fashion-MNIST test set (10,000 images,
or ``--dataset-limit``) with the bundled FashionNet in one ``pgd`` call (L-infinity, eps 8/255,
``--dataset-steps`` steps, default 5, untargeted from the true labels) under each
``--memory-budgets`` figure (bytes, or ``default``: the device's, 2 GiB on CPU), each in a fresh
process so that its peak resident memory (``resource.getrusage``) is its own: with the model and
the data loaded, after a call on one chunk's worth of images (which compiles the chunk's program
and runs it once), and after the whole call (twice: the first call and one more, timed); the
chunks the budget made, pgd's estimate per image (3 forward passes and 8 copies of the image)
and XLA's ``memory_analysis()`` of the input gradient of one chunk (written here from
``model.apply`` and ``softmax_cross_entropy``: what each step runs, without the projection and
the loop).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import device_info, emit, matmul_peak, memory_analysis, peak_rss_mb, run_child, time_call
from forward_grad import build, flops_per_image

import cnnjax
from cnnjax._src.chunks import MEMORY_FACTOR, budget_chunk, check_memory_budget, forward_bytes
from cnnjax.attacks import pgd, project, steepest_descent
from cnnjax.data import load_fashion_mnist
from cnnjax.losses import softmax_cross_entropy

EPS = np.array([0.25, 0.5, 1, 2, 3, 4, 6, 8], np.float32) / 255
STEPS = 10


def pgd_one_eps(model):
    """PGD-10 (L-inf, untargeted, random start, early stopping) at one epsilon, from public
    pieces: ``(params, images, labels, eps) -> success [n]``, for ``jax.vmap`` over ``eps``."""

    def run(params, images, labels, eps):
        n = images.shape[0]
        eps_n = jnp.full((n,), eps)
        tx = steepest_descent("inf", 2.5 * eps / STEPS)  # pgd's default step
        noise = jax.random.uniform(jax.random.key(0), images.shape, minval=-1.0, maxval=1.0)
        x = project(images + eps * noise, images, eps_n, "inf")

        def loss(x):
            logits = model.apply(params, x)["logits"]
            return -jnp.sum(softmax_cross_entropy(logits, labels)), logits

        def body(carry, last):
            x, state, done = carry
            (_, logits), g = jax.value_and_grad(loss, has_aux=True)(x)
            done = done | (jnp.argmax(logits, -1) != labels)
            updates, state = tx.update(g, state, x)
            x_new = project(optax.apply_updates(x, updates), images, eps_n, "inf")
            frozen = (done | last)[:, None, None, None]
            return (jnp.where(frozen, x, x_new), state, done), None

        init = (x, tx.init(x), jnp.zeros((n,), bool))
        (_, _, done), _ = jax.lax.scan(body, init, jnp.arange(STEPS + 1) == STEPS)
        return done

    return run


def photos_batch(model, n):
    photos = cnnjax.sample_photos()
    x = np.concatenate([photos[k] for k in photos])[np.arange(n) % 4]
    labels = np.asarray(cnnjax.classify(model, x, top_k=1).classes)[:, 0]
    return jnp.asarray(x), jnp.asarray(labels, jnp.int32)


def dataset_child(args) -> None:
    """One ``pgd`` call on the Fashion-MNIST test set under one budget (this process)."""
    budget = None if args.child_budget == "default" else int(args.child_budget)
    model = cnnjax.load_model("fashionnet")
    _, test = load_fashion_mnist(args.data, progress=False)
    images, labels = np.asarray(test.images), np.asarray(test.labels)
    if args.dataset_limit is not None:
        images, labels = images[: args.dataset_limit], labels[: args.dataset_limit]
    n, shape = len(images), images.shape[1:]
    # pgd's count per image with one epsilon and one restart: 3 forward passes and 8 image copies
    each = MEMORY_FACTOR * forward_bytes(model.apply, model.params, shape) + 8 * 4 * int(np.prod(shape))
    bound = check_memory_budget(budget)
    chunk = budget_chunk(n, each, bound)
    kw = dict(eps=8 / 255, steps=args.dataset_steps, memory_budget=budget)
    before = peak_rss_mb()
    warm = time_call(pgd, model, images[:chunk], labels[:chunk], repeats=1, min_seconds=0.0, **kw)
    warmed = peak_rss_mb()
    r = time_call(pgd, model, images, labels, repeats=1, min_seconds=0.0, **kw)
    after = peak_rss_mb()
    out = r["out"]
    clean = np.asarray(cnnjax.classify(model, images[:1000]).classes[:, 0]) == labels[:1000]

    def loss(params, x, y):
        return jnp.sum(softmax_cross_entropy(model.apply(params, x)["logits"], y))

    grad = jax.jit(jax.grad(loss, argnums=1))
    xla = memory_analysis(grad.lower(model.params, images[:chunk], labels[:chunk]).compile())
    emit({
        "case": "dataset", **device_info(), "model": "fashionnet", "data": "fashion-mnist test",
        "images": n, "shape": list(images.shape), "steps": args.dataset_steps, "eps": 8 / 255,
        "memory_budget": bound, "budget_mb": round(bound / 2**20, 1), "budget_given": args.child_budget,
        "estimate_per_image_mb": round(each / 2**20, 3), "chunk": chunk, "chunks": -(-n // chunk),
        "estimate_per_chunk_mb": round(chunk * each / 2**20, 1),
        "unchunked_estimate_mb": round(n * each / 2**20, 1),
        "rss_before_mb": before, "peak_rss_after_one_chunk_mb": warmed, "peak_rss_mb": after,
        "peak_rss_growth_over_one_chunk_mb": round(after - warmed, 1),
        "chunk_compile_s": warm["compile_s"], "chunk_compiles": warm["compiles"],
        "compile_s": r["compile_s"], "compiles": r["compiles"], "first_call_s": r["first_call_s"],
        "steady_s": round(r["steady_s"], 3), "runs": r["runs"], "steady_compiles": r["steady_compiles"],
        "images_per_s": round(n / r["steady_s"], 1),
        "success_rate": round(float(np.mean(np.asarray(out.success))), 4),
        "accuracy_under_attack": round(float(np.mean(np.asarray(out.predictions) == labels)), 4),
        "clean_accuracy_first_1000": round(float(clean.mean()), 4),
        **{f"chunk_gradient_{k}": v for k, v in xla.items()},
    })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--sweep-images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-vmap", action="store_true", help="skip the jax.vmap sweep case")
    parser.add_argument("--cases", nargs="+", choices=("pgd", "dataset"), default=["pgd"],
                        help="pgd: PGD-10 and sweeps; dataset: a test set under budgets")  # fmt: skip
    parser.add_argument(
        "--data", default=None, help="dataset: the Fashion-MNIST folder (default: the usual places)"
    )
    parser.add_argument("--dataset-steps", type=int, default=5, help="dataset: PGD steps")
    parser.add_argument(
        "--dataset-limit", type=int, default=None, help="dataset: only the first N test images"
    )
    parser.add_argument("--memory-budgets", nargs="+", default=[str(256 * 2**20), "default"],
                        help="dataset: bytes, or 'default' (the device's)")  # fmt: skip
    parser.add_argument("--child-budget", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_budget is not None:
        dataset_child(args)
        return
    if "dataset" in args.cases:
        for budget in args.memory_budgets:
            argv = [__file__, "--child-budget", budget, "--dataset-steps", str(args.dataset_steps)]
            argv += [] if args.data is None else ["--data", args.data]
            run_child(
                argv + ([] if args.dataset_limit is None else ["--dataset-limit", str(args.dataset_limit)])
            )
        if "pgd" not in args.cases:
            return

    info = device_info()
    peak = matmul_peak()
    emit({"case": "matmul_peak", **info, "gflops_per_s": round(peak / 1e9, 1)})
    grad_flops = flops_per_image(build("xla"))["input_grad"]
    pgd_flops = (STEPS + 1) * grad_flops
    model = cnnjax.load_model()

    def attack(x, labels, eps):
        return pgd(model, x, labels, eps=eps, steps=STEPS)  # random start, early stopping, key 0

    def record(case, images, r, success, **extra):
        seconds = r["steady_s"]
        rate = images * pgd_flops / seconds
        emit({
            "case": case, "model": "efficientnet_lite0", **info, "steps": STEPS, **extra,
            "compile_s": r["compile_s"], "compiles": r["compiles"], "first_call_s": r["first_call_s"],
            "steady_s": round(seconds, 4), "runs": r["runs"], "steady_compiles": r["steady_compiles"],
            "images_per_s": round(images / seconds, 2), "success_rate": round(float(success), 3),
            "gflop_per_image": round(pgd_flops / 1e9, 2), "gflops_per_s": round(rate / 1e9, 1),
            "fraction_of_matmul_peak": round(rate / peak, 3),
        })  # fmt: skip

    for batch in args.batches:
        x, labels = photos_batch(model, batch)
        eps = [float(EPS[3])]  # 2/255, as a one-element sweep: the program the sweep loop runs
        r = time_call(attack, x, labels, eps, repeats=args.repeats, min_seconds=0)
        success = np.mean(np.asarray(r["out"].success))
        record("pgd10", batch, r, success, batch=batch, eps=2 / 255, shape=[batch, 224, 224, 3])

    n = args.sweep_images
    x, labels = photos_batch(model, n)
    sweep = time_call(attack, x, labels, [float(e) for e in EPS], repeats=args.repeats, min_seconds=0)
    success = np.mean(np.asarray(sweep["out"].success))
    record("sweep_batched", n * len(EPS), sweep, success, batch=n, epsilons=len(EPS))

    def loop():
        return [attack(x, labels, [float(e)]) for e in EPS]

    looped = time_call(loop, repeats=args.repeats, min_seconds=0)
    success = np.mean([np.asarray(a.success) for a in looped["out"]])
    record("sweep_loop", n * len(EPS), looped, success, batch=n, epsilons=len(EPS))

    results = {"sweep_batched": sweep["steady_s"]}
    if not args.no_vmap:
        vmapped = jax.jit(jax.vmap(pgd_one_eps(model), in_axes=(None, None, None, 0)))
        v = time_call(vmapped, model.params, x, labels, jnp.asarray(EPS), repeats=args.repeats, min_seconds=0)
        success = np.mean(np.asarray(v["out"]))
        record("sweep_jax_vmap", n * len(EPS), v, success, batch=n, epsilons=len(EPS))
        results["sweep_jax_vmap"] = v["steady_s"]
    emit({
        "case": "sweep_speedup_vs_loop", **info, "epsilons": len(EPS), "batch": n,
        **{f"{k}_speedup": round(looped["steady_s"] / s, 3) for k, s in results.items()},
    })  # fmt: skip


if __name__ == "__main__":
    main()
