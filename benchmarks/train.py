"""FashionNet training speed: examples per second at batch 128, one epoch's time and accuracy.

    python benchmarks/train.py [--data PATH_TO_FASHION_MNIST] [--batch 128]

JSON lines (each with device and CPU): the matmul peak of this machine; the steady-state
training step (``jax.jit`` of ``cnnjax.training.make_train_step``, compile time apart, median
of repeated steps) with examples/s, FLOP/s (XLA's count of the compiled step) and the
fraction of the matmul peak; ``fit`` itself for one chunk of ``--steps`` steps (its
``lax.scan`` over batches gathered on the device, one epoch of ``steps * batch`` training
examples, ``steps_per_checkpoint=steps``, validation on ``batch`` examples included) against a
Python loop of the same number of jitted steps, ratio measured in the same run (``fit`` is
timed with ``_common.time_call``: compile seconds from JAX's compile events during the first
call, then the median of later calls); and two full epochs of ``fit`` on Fashion-MNIST (54,000
training images each): the first with its compiles, the second's throughput against the scan's
(``second_epoch_over_scan``; issue 17's target: within 5%), and the validation accuracy after
the first. ``train_step_instruments``
times the same jitted step with ``instruments=True`` (per-layer gradient norms,
update-to-parameter ratios, dead-unit fractions) against the plain step in the same run,
rounds of each interleaved so that other load on the machine falls on both alike, and emits
``instrumented_over_plain`` (target <= 1.10); ``--only instruments`` runs that case alone.
``--only layers`` times each layer alone instead (``layer_breakdown``: the 3x3 convolutions as
patches, as XLA's convolution and as ``dense_conv``, the max-pools as cnnjax's and as Flax's).
``--only profile`` profiles the step with ``jax.profiler`` (``profile_step``: the jitted step
and a scan of steps, milliseconds by phase and by layer).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from _common import device_info, emit, matmul_peak, profile_ops, time_call, time_jitted
from flax import nnx

from cnnjax import data
from cnnjax.models import FashionNet, dense_conv, fashionnet_model, max_pool_2x2, patch_conv
from cnnjax.training import FashionConfig, TrainState, fit, make_train_step
from cnnjax.transforms import augmentation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder (default: the usual places)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="steps per timed chunk")
    parser.add_argument("--limit", type=int, default=None, help="first N training images only (checks)")
    parser.add_argument("--only", choices=("all", "instruments", "layers", "profile"), default="all",
                        help="'instruments': only the instrumented-against-plain step case; 'layers': "
                             "only the per-layer breakdown; 'profile': only the step's profiles")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the instruments case")
    args = parser.parse_args()
    info = device_info()
    if args.only == "layers":
        layer_breakdown(args.batch, info)
        return

    train_all, _ = data.load_fashion_mnist(args.data)
    if args.limit is not None:
        train_all = data.make_dataset(train_all.images[: args.limit], train_all.labels[: args.limit],
                                      train_all.class_names)  # fmt: skip
    train, val = data.split_train_val(train_all, 0.1, key=0)
    model = fashionnet_model(FashionNet(rngs=nnx.Rngs(0)))
    optimizer = optax.sgd(0.05, momentum=0.9)
    config = FashionConfig()
    augment = augmentation(flip=config.flip, crop_pad=config.crop_pad)

    step = make_train_step(model, optimizer, l2=config.l2, augment=augment)
    state = TrainState(model.params, optimizer.init(model.params))
    b = args.batch
    x, y = jnp.asarray(train.images[:b]), jnp.asarray(train.labels[:b])
    jitted = jax.jit(step)

    if args.only == "profile":
        profile_step(jitted, step, state, train, b, info)
        return
    if args.only == "all":
        peak = matmul_peak()
        emit({"case": "matmul_peak", **info, "gflops_per_s": round(peak / 1e9, 1)})
        r = time_jitted(jitted, state, x, y, jax.random.key(0))
        flops = float(r["cost"]["flops"])
        rate = flops / r["steady_s"]
        emit({"case": "train_step", **info, "model": "fashionnet", "batch": b, "compile_s": r["compile_s"],
              "steady_s": round(r["steady_s"], 4), "runs": r["runs"],
              "examples_per_s": round(b / r["steady_s"], 1),
              "gflop_per_example": round(flops / b / 1e9, 4), "gflops_per_s": round(rate / 1e9, 1),
              "fraction_of_matmul_peak": round(rate / peak, 3)})  # fmt: skip

    # The step with instruments against the plain step, same batch, same run.
    instrumented = jax.jit(make_train_step(model, optimizer, l2=config.l2, augment=augment, instruments=True))
    r = _interleaved(jitted, instrumented, (state, x, y, jax.random.key(0)), rounds=args.rounds)
    emit({"case": "train_step_instruments", **info, "model": "fashionnet", "batch": b,
          "plain_compile_s": r["compile_s"][0], "instrumented_compile_s": r["compile_s"][1],
          "plain_steady_s": round(r["steady_s"][0], 4), "instrumented_steady_s": round(r["steady_s"][1], 4),
          "runs_each": r["runs"], "instrumented_over_plain": round(r["steady_s"][1] / r["steady_s"][0], 3),
          "target": 1.10})  # fmt: skip
    if args.only == "instruments":
        return

    # fit's chunked lax.scan (one chunk of args.steps steps: one epoch of steps * b examples)
    # against a Python loop of the same number of jitted steps, same run.
    n = args.steps * b
    chunk_train = (train.images[:n], train.labels[:n])
    chunk_val = (val.images[:b], val.labels[:b])
    scan = time_call(fit, model, chunk_train, chunk_val, optimizer=optimizer, epochs=1, batch_size=b,
                     l2=config.l2, augment=augment, steps_per_checkpoint=args.steps, progress=False,
                     repeats=3, min_seconds=0)  # fmt: skip
    images, labels = jnp.asarray(train.images[:n]), jnp.asarray(train.labels[:n])
    perm = jax.random.permutation(jax.random.key(1), n)
    key = jax.random.key(2)
    loop_times = []
    for _ in range(3):
        s = state
        t = time.perf_counter()
        for i in range(args.steps):
            idx = perm[i * b : (i + 1) * b]
            s, _ = jitted(s, images[idx], labels[idx], jax.random.fold_in(key, i))
        jax.block_until_ready(s)
        loop_times.append(time.perf_counter() - t)
    scan_s, loop_s = scan["steady_s"], statistics.median(loop_times)
    emit({"case": "scan_vs_python_loop", **info, "batch": b, "steps": args.steps,
          "fit_compile_s": scan["compile_s"], "fit_compiles": scan["compiles"],
          "fit_steady_s": round(scan_s, 4),
          "fit_steady_compiles": scan["steady_compiles"], "loop_steady_s": round(loop_s, 4),
          "scan_examples_per_s": round(n / scan_s, 1),
          "loop_examples_per_s": round(n / loop_s, 1),
          "scan_speedup": round(loop_s / scan_s, 3)})  # fmt: skip

    # Two epochs of fit, end to end: the first with its compiles, as a user sees it; the second
    # steady, its throughput against the steps' own in the scan above (the rest is evaluation
    # and the host's work between chunks).
    t = time.perf_counter()
    result = fit(model, (train.images, train.labels), (val.images, val.labels), optimizer=optimizer,
                 epochs=2, batch_size=b, l2=config.l2, augment=augment, progress=False)  # fmt: skip
    total_s = time.perf_counter() - t
    first, second = result.history
    steady = len(train.labels) / second["seconds"]
    emit({"case": "one_epoch", **info, "batch": b, "train_examples": len(train.labels),
          "two_epochs_s": round(total_s, 1), "first_epoch_s": first["seconds"],
          "second_epoch_s": second["seconds"], "second_epoch_examples_per_s": round(steady, 1),
          "second_epoch_over_scan": round(steady / (n / scan_s), 3),
          "val_accuracy_after_one_epoch": round(first["val_accuracy"], 4),
          "train_loss": round(first["train_loss"], 4)})  # fmt: skip


def profile_step(jitted: Callable, step: Callable, state, train, b: int, info: dict, steps: int = 10) -> None:
    """``jax.profiler`` profiles (``_common.profile_ops``) of the jitted step and of ``steps``
    steps in one ``lax.scan`` whose body gathers its batch from the images on the device, as
    ``fit``'s does: milliseconds per step by phase (forward, backward, the rest of the step) and
    by named scope (FashionNet's layers, ``augment``, ``l2_penalty``, ``update``,
    ``gather_batch``), each with its share of the operations' time."""
    images, labels = jnp.asarray(train.images[: steps * b]), jnp.asarray(train.labels[: steps * b])
    perm = jax.random.permutation(jax.random.key(1), steps * b)

    def scanned(state, key):
        def body(state, i):
            with jax.named_scope("gather_batch"):
                idx = jax.lax.dynamic_slice(perm, (i * b,), (b,))
                batch_images, batch_labels = images[idx], labels[idx]
            state, metrics = step(state, batch_images, batch_labels, jax.random.fold_in(key, i))
            return state, metrics["loss"]

        return jax.lax.scan(body, state, jnp.arange(steps))

    cases = {"jitted_step": (jitted, (state, images[:b], labels[:b], jax.random.key(0)), 1),
             "scan_step": (jax.jit(scanned), (state, jax.random.key(0)), steps)}  # fmt: skip
    for program, (fn, args, per_call) in cases.items():
        r = profile_ops(fn, *args, calls=5)
        rows = [{**row, "ms": round(row["ms"] / per_call, 2), "ops": round(row["ops"] / per_call),
                 "share": round(row["ms"] / r["ops_ms"], 3)}
                for row in r["rows"] if row["ms"] >= 0.01]  # fmt: skip
        emit({"case": "train_step_profile", **info, "model": "fashionnet", "batch": b, "program": program,
              "wall_ms_per_step": round(r["wall_ms"] / per_call, 2),
              "ops_ms_per_step": round(r["ops_ms"] / per_call, 2),
              "by_phase": {p: round(sum(row["ms"] for row in rows if row["phase"] == p), 2)
                           for p in ("forward", "backward", "step")},
              "rows": rows})  # fmt: skip


def layer_breakdown(b: int, info: dict) -> None:
    """FashionNet's layers at batch ``b``, each alone: every 3x3 convolution as patches times a
    matrix, as XLA's convolution and as ``dense_conv`` (XLA's with canonical gradients), forward
    and forward-with-both-gradients (of ``sum(sin(conv))``, so the cotangent is not constant;
    jitted, and per step of a ``lax.scan`` of such steps, as in ``fit``), and the two max-pools
    (cnnjax's and Flax's ``reduce_window``), forward and forward-with-gradient; milliseconds,
    medians of 15 (of 3 in the scan)."""
    peak = matmul_peak()
    emit({"case": "matmul_peak", **info, "gflops_per_s": round(peak / 1e9, 1)})

    def ms(fn, *args):
        return round(time_jitted(fn, *args, repeats=15, min_seconds=0)["steady_s"] * 1e3, 2)

    def xla_conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def with_gradients(fn, argnums):
        return jax.jit(jax.grad(lambda *args: jnp.sum(jnp.sin(fn(*args))), argnums))

    def gradients_in_scan_ms(fn, x, k, length=3):  # per step, the steps inside one lax.scan
        grads = jax.grad(lambda x, k: jnp.sum(jnp.sin(fn(x, k))), (0, 1))

        def steps(x, k):
            def body(k, _):
                gx, gk = grads(x, k)
                return k - 1e-6 * gk, jnp.sum(gx)

            return jax.lax.scan(body, k, None, length=length)

        r = time_jitted(jax.jit(steps), x, k, repeats=3, min_seconds=0)
        return round(r["steady_s"] * 1e3 / length, 2)

    convs = {"patches": lambda x, k: patch_conv(x, k, 1, "SAME"), "xla": xla_conv,
             "dense_conv": lambda x, k: dense_conv(x, k, "SAME")}  # fmt: skip
    for size, cin, cout in ((28, 1, 32), (28, 32, 32), (14, 32, 64), (14, 64, 64), (7, 64, 128)):
        x = jax.random.normal(jax.random.key(0), (b, size, size, cin))
        k = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) * 0.1
        flop = 2 * b * size * size * 9 * cin * cout
        for impl, conv in convs.items():
            fwd, both = ms(jax.jit(conv), x, k), ms(with_gradients(conv, (0, 1)), x, k)
            emit({"case": "layer_conv3x3", **info, "batch": b, "shape": [size, size, cin, cout], "impl": impl,
                  "forward_ms": fwd, "forward_and_gradients_ms": both,
                  "forward_and_gradients_in_scan_ms": gradients_in_scan_ms(conv, x, k),
                  "forward_fraction_of_peak": round(flop / (fwd / 1e3) / peak, 3),
                  "with_gradients_fraction_of_peak": round(3 * flop / (both / 1e3) / peak, 3)})  # fmt: skip
    pools = {"cnnjax": max_pool_2x2,
             "flax": lambda h: nnx.max_pool(h, window_shape=(2, 2), strides=(2, 2))}  # fmt: skip
    for size, c in ((28, 32), (14, 64)):
        h = jax.random.normal(jax.random.key(2), (b, size, size, c))
        for impl, pool in pools.items():
            emit({"case": "layer_max_pool", **info, "batch": b, "shape": [size, size, c], "impl": impl,
                  "forward_ms": ms(jax.jit(pool), h),
                  "forward_and_gradient_ms": ms(with_gradients(pool, 0), h)})  # fmt: skip


def _interleaved(
    plain: Callable, other: Callable, args: tuple, *, rounds: int = 7, per_round: int = 5
) -> dict:
    """Compile two jitted functions for ``args`` (compile seconds apart), then time them in
    ``rounds`` alternating rounds of ``per_round`` calls each after a warm-up: the medians of
    all their calls, so that a burst of other load on the machine falls on both alike."""
    compiled, compile_s = [], []
    for fn in (plain, other):
        t = time.perf_counter()
        compiled.append(fn.lower(*args).compile())
        compile_s.append(round(time.perf_counter() - t, 3))
        jax.block_until_ready(compiled[-1](*args))  # warm-up
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, fn in enumerate(compiled):
            for _ in range(per_round):
                t = time.perf_counter()
                jax.block_until_ready(fn(*args))
                times[i].append(time.perf_counter() - t)
    return {
        "compile_s": compile_s,
        "steady_s": [statistics.median(t) for t in times],
        "runs": rounds * per_round,
    }


if __name__ == "__main__":
    main()
