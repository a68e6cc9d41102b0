"""Input synthesis on the default model: visualize's targets per second (vmapped against a
Python loop over the same targets, in the same run), and style-transfer and inversion steps
per second.

    python benchmarks/synthesis.py [--targets 1 8 64] [--steps 16] [--cases step_vs_gradient ...]
    python benchmarks/synthesis.py --cases all_channels [--all-layer head] [--all-steps 8]
                                   [--all-channels N] [--memory-budgets 536870912 default]

One JSON line per case: device, CPU, shapes, compile seconds and steady-state seconds (median)
apart, throughput, achieved FLOP/s and the fraction of this machine's matmul peak measured in
the same run. Every technique is timed as a user calls it, through its public function
(``cnnjax.synthesis.visualize``, ``style_transfer``, ``invert``: argument checks, host work
and the finiteness check included), with ``_common.time_call``: the compile seconds are JAX's
own compile events during the first call, the steady state the median of later calls. The
loop runs ``visualize`` on one target (one program, compiled once) for each target in turn:
what a library without vmap over targets does at best. ``visualize_step_vs_gradient`` puts one
``visualize`` step of 8 targets next to the bare input gradient of the same batch and size.

``all_channels`` renders every channel of a layer (``--all-layer``, default ``head``: 1,280) with
the lucid preset in one ``visualize`` call under each ``--memory-budgets`` figure (bytes, or
``default``: the device's, 2 GiB on CPU), each in a fresh process so that its peak resident
memory (``resource.getrusage``) is its own: the memory with the model loaded, the peak after a
call on one chunk's worth of targets (which compiles the chunk's program and runs it once), the
peak after the whole call (twice: the first call and one more, timed), the chunks the budget
made, ``visualize``'s own estimate per target (``cnnjax.synthesis.bytes_per_target``) and XLA's
``memory_analysis()`` of the gradient of one chunk's step written from public pieces (the
parameterization, the transforms, the network on the chunk's images as one batch: what the
compiled step runs, without the optimiser's update and the loop). Few steps (``--all-steps``,
default 8): on a 2-core CPU a step of 1,280 targets at 128 px takes about 10 s.

FLOPs are XLA's count (``.lower().compile().cost_analysis()``) of one optimisation step of one
problem, written here from public pieces, times the steps (and the targets):

* visualize: the gradient of the objective (a ``block_10`` channel's mean) with respect to
  the latent, through the preset's parameterization, its random transforms and the model;
* style transfer: the value and gradient with respect to the image of the default loss
  (``cnnjax.losses.content`` and ``style`` on softmax-smoothed features of the default layers,
  plus total variation), the targets given;
* inversion: the value and gradient of ``losses.inversion`` at the layer plus the alpha-norm
  and total-variation priors.

The optimiser's own update and the work done once per run (the targets' forward passes, the
final scores) are not counted, so the figure is a lower bound; for L-BFGS the line search's
extra evaluations are not counted either.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import (
    device_info,
    emit,
    matmul_peak,
    memory_analysis,
    peak_rss_mb,
    program_flops,
    run_child,
    time_call,
)

import cnnjax
from cnnjax import losses, objectives
from cnnjax._src.chunks import budget_chunk, check_memory_budget
from cnnjax.synthesis import (
    bytes_per_target,
    default_layers,
    get_preset,
    invert,
    style_transfer,
    tv_weight,
    visualize,
)

LAYER = "block_10"
CASES = ("step_vs_gradient", "visualize", "style_transfer", "invert", "all_channels")
DEFAULT_CASES = CASES[:4]  # all_channels takes minutes: asked for by name
STEPS = (32, 96)  # visualize_step_vs_gradient: the step is the difference of these two runs


def visualize_step_flops(model, size: int) -> float:
    """XLA's FLOPs of one step of the lucid preset for one target (a channel of ``LAYER``)."""
    preset = get_preset("lucid")
    param = preset.param(size, 1, model.spec.channels)

    def objective(params, latent, key):
        x = param.to_image(latent)
        if preset.transform is not None:
            x = preset.transform(key, x)
        return jnp.mean(model.apply(params, x)[LAYER][..., 0])

    latent = param.init(jax.random.key(0))
    return program_flops(jax.grad(objective, argnums=1), model.params, latent, jax.random.key(1))


def style_step_flops(model, photo, style) -> float:
    """XLA's FLOPs of one value-and-gradient of style transfer's default loss (one problem)."""
    content_layer, style_layers = default_layers(model.spec)

    def smooth(f):
        return losses.softmax_smoothing(f, 1.0)

    c_acts, s_acts = model.apply(model.params, photo), model.apply(model.params, style)
    c_target = smooth(c_acts[content_layer])
    s_targets = {name: losses.gram(smooth(s_acts[name])) for name in style_layers}

    def loss(params, x, c_target, s_targets):
        acts = model.apply(params, x)
        c = losses.content(smooth(acts[content_layer]), c_target)
        s = sum(losses.style(smooth(acts[n]), s_targets[n]) for n in style_layers) / len(style_layers)
        return jnp.sum(c + 30.0 * s + 300.0 * losses.total_variation(x))

    return program_flops(jax.value_and_grad(loss, argnums=1), model.params, photo, c_target, s_targets)


def invert_step_flops(model, photo, layer: str) -> float:
    """XLA's FLOPs of one value-and-gradient of inversion's loss at ``layer`` (one image)."""
    code = model.apply(model.params, photo)[layer]
    tv = tv_weight(model, layer)

    def loss(params, x, code):
        error = losses.inversion(model.apply(params, x)[layer], code)
        return jnp.sum(error + 30.0 * losses.alpha_norm(x, 6.0) + tv * losses.total_variation(x, 2.0))

    return program_flops(jax.value_and_grad(loss, argnums=1), model.params, photo, code)


def step_vs_gradient(model, info: dict, size: int, *, repeats: int, targets: int = 8) -> None:
    """One ``visualize`` step (lucid preset, ``targets`` channels of ``LAYER``, one image each)
    against the bare input gradient of the same batch and size, in the same run.

    The step is the difference of two runs' seconds (``STEPS[1] - STEPS[0]`` steps apart), so
    the work done once per run (setup, the final scores, argument checks) cancels; the bare
    gradient is ``jax.grad`` of the same objectives (each image's own channel mean) with respect
    to ``[targets, size, size, 3]`` pixels, jitted, the model's params an argument. After the
    first calls (compiles), ``repeats`` rounds each time the two runs and 10 bare gradients back
    to back, so each round's ratio sees one machine load; the line gives their median.
    """
    objs = [objectives.channel(LAYER, c) for c in range(targets)]
    runs = {n: functools.partial(lambda n: visualize(model, objs, size=size, steps=n, key=0).images, n)
            for n in STEPS}  # fmt: skip

    def bare_loss(params, x):
        a = model.apply(params, x)[LAYER]
        return jnp.sum(jnp.mean(a, axis=(1, 2)) * jnp.eye(targets, a.shape[-1]))

    x = jnp.full((targets, size, size, 3), 0.5, jnp.float32)
    grad = jax.jit(jax.grad(bare_loss, argnums=1))
    first = {n: time_call(runs[n], repeats=1, min_seconds=0.0) for n in STEPS}
    bare_first = time_call(grad, model.params, x, repeats=1, min_seconds=0.0)

    def seconds(fn, calls=1):
        t = time.perf_counter()
        for _ in range(calls):
            jax.block_until_ready(fn())
        return (time.perf_counter() - t) / calls

    step_s, bare_s = [], []
    for _ in range(repeats):
        short, long = seconds(runs[STEPS[0]]), seconds(runs[STEPS[1]])
        step_s.append((long - short) / (STEPS[1] - STEPS[0]))
        bare_s.append(seconds(lambda: grad(model.params, x), calls=10))
    ratios = [a / b for a, b in zip(step_s, bare_s)]
    seen = get_preset("lucid").transform(jax.random.key(0), x).shape[1]
    emit({
        "case": "visualize_step_vs_gradient", **info, "targets": targets, "size": size,
        "network_input_size": int(seen), "steps": list(STEPS), "rounds": repeats,
        "compile_s": [first[n]["compile_s"] for n in STEPS] + [bare_first["compile_s"]],
        "compiles": [first[n]["compiles"] for n in STEPS] + [bare_first["compiles"]],
        "visualize_step_s": round(statistics.median(step_s), 4),
        "bare_gradient_s": round(statistics.median(bare_s), 4),
        "step_over_gradient_rounds": [round(r, 3) for r in ratios],
        "step_over_gradient": round(statistics.median(ratios), 3),
    })  # fmt: skip


def chunk_step_memory(model, layer: str, size: int, targets: int) -> dict:
    """XLA's memory figures for the gradient of one step of ``targets`` channel objectives of
    ``layer`` (lucid preset: parameterization, transforms, the network on the targets' images as
    one batch), compiled now; the optimiser's update and the loop are not in it."""
    preset = get_preset("lucid")
    param = preset.param(size, 1, model.spec.channels)

    def objective(params, latents, keys):
        x = jax.vmap(param.to_image)(latents)  # [t, 1, h, w, c]
        x = jax.vmap(preset.transform)(keys, x)
        acts = model.apply(params, x.reshape((-1,) + x.shape[2:]))[layer]
        return jnp.sum(jnp.mean(acts, axis=(1, 2)) * jnp.eye(targets, acts.shape[-1]))

    keys = jax.random.split(jax.random.key(0), targets)
    latents = jax.vmap(param.init)(keys)
    grad = jax.jit(jax.grad(objective, argnums=1))
    return memory_analysis(grad.lower(model.params, latents, keys).compile())


def all_channels_child(args) -> None:
    """One ``visualize`` call of every channel of ``--all-layer`` under one budget (this process)."""
    budget = None if args.child_budget == "default" else int(args.child_budget)
    model = cnnjax.load_model()
    channels = model.spec.layer(args.all_layer).channels
    n = channels if args.all_channels is None else min(args.all_channels, channels)
    objs = [objectives.channel(args.all_layer, c) for c in range(n)]
    each = bytes_per_target(model, size=args.size)
    bound = check_memory_budget(budget)
    chunk = budget_chunk(n, each, bound)
    before = peak_rss_mb()
    kw = dict(size=args.size, steps=args.all_steps, key=0, memory_budget=budget)
    # The chunk's program compiled and run once on one chunk's worth of targets, so that the
    # peak memory of the whole call after it is its running, not XLA's compiler.
    warm = time_call(visualize, model, objs[:chunk], repeats=1, min_seconds=0.0, **kw)
    warmed = peak_rss_mb()
    r = time_call(visualize, model, objs, repeats=1, min_seconds=0.0, **kw)
    after = peak_rss_mb()
    scores = np.asarray(r["out"].scores)
    xla_chunk = chunk_step_memory(model, args.all_layer, args.size, chunk)
    xla_one = chunk_step_memory(model, args.all_layer, args.size, 1)
    emit({
        "case": "all_channels", **device_info(), "model": "efficientnet_lite0", "layer": args.all_layer,
        "targets": n, "layer_channels": channels, "steps": args.all_steps, "size": args.size,
        "memory_budget": bound, "budget_mb": round(bound / 2**20, 1), "budget_given": args.child_budget,
        "estimate_per_target_mb": round(each / 2**20, 2), "chunk": chunk, "chunks": -(-n // chunk),
        "estimate_per_chunk_mb": round(chunk * each / 2**20, 1),
        "unchunked_estimate_mb": round(n * each / 2**20, 1),
        "rss_before_mb": before, "peak_rss_after_one_chunk_mb": warmed, "peak_rss_mb": after,
        "peak_rss_growth_over_one_chunk_mb": round(after - warmed, 1),
        "results_mb": round(sum(np.asarray(a).nbytes for a in r["out"]) / 2**20, 1),
        "chunk_compile_s": warm["compile_s"], "chunk_compiles": warm["compiles"],
        **timing(r), "targets_per_s": round(n / r["steady_s"], 3),
        "mean_final_score": round(float(scores.mean()), 3), "finite": bool(np.isfinite(scores).all()),
        **{f"chunk_step_{k}": v for k, v in xla_chunk.items()},
        "one_target_step_xla_temp_mb": xla_one.get("xla_temp_mb"),
    })  # fmt: skip


def rate(r, peak, flops):
    """FLOP/s of a run of ``flops`` in total (the per-step count times the steps)."""
    return {
        "gflop_per_run": round(flops / 1e9, 2),
        "gflops_per_s": round(flops / r["steady_s"] / 1e9, 2),
        "fraction_of_matmul_peak": round(flops / r["steady_s"] / peak, 4),
    }


def timing(r, digits=3):
    return {
        "compile_s": r["compile_s"], "compiles": r["compiles"], "first_call_s": r["first_call_s"],
        "steady_s": round(r["steady_s"], digits), "runs": r["runs"], "steady_compiles": r["steady_compiles"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--steps", type=int, default=16, help="visualize steps per run")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--style-steps", type=int, default=20, help="style-transfer and inversion steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(DEFAULT_CASES))
    parser.add_argument("--all-layer", default="head", help="all_channels: the layer")
    parser.add_argument("--all-steps", type=int, default=8, help="all_channels: visualize steps")
    parser.add_argument("--all-channels", type=int, default=None, help="all_channels: only the first N")
    parser.add_argument("--memory-budgets", nargs="+", default=[str(512 * 2**20), "default"],
                        help="all_channels: bytes, or 'default' (the device's)")  # fmt: skip
    parser.add_argument("--child-budget", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_budget is not None:
        all_channels_child(args)
        return

    if "all_channels" in args.cases:
        for budget in args.memory_budgets:
            argv = [__file__, "--child-budget", budget, "--all-layer", args.all_layer, "--all-steps",
                    str(args.all_steps), "--size", str(args.size)]  # fmt: skip
            run_child(
                argv + ([] if args.all_channels is None else ["--all-channels", str(args.all_channels)])
            )
        if set(args.cases) == {"all_channels"}:
            return
    info = device_info()
    peak = matmul_peak()
    emit({"case": "matmul_peak", **info, "gflops_per_s": round(peak / 1e9, 1)})
    model = cnnjax.load_model()
    channels = model.spec.layer(LAYER).channels

    def run(objs, key=0):
        return visualize(model, objs, preset="lucid", size=args.size, steps=args.steps, key=key)

    if "step_vs_gradient" in args.cases:
        step_vs_gradient(model, info, args.size, repeats=max(args.repeats, 5))
    step_flops = visualize_step_flops(model, args.size)
    for t in args.targets if "visualize" in args.cases else ():
        objs = [objectives.channel(LAYER, c % channels) for c in range(t)]
        r = time_call(run, objs, repeats=args.repeats, min_seconds=0.0)

        # The loop: one target per call, for each of the t targets (the one-target program,
        # compiled once: by the first case when it has one target); the objectives are built
        # before timing.
        def loop(objs=objs):
            return [run([o], key=c) for c, o in enumerate(objs)]

        lp = time_call(loop, repeats=args.repeats, min_seconds=0.0)
        emit({
            "case": "visualize", **info, "targets": t, "steps": args.steps, "size": args.size,
            "shape": [t, args.size, args.size, 3], **timing(r),
            "targets_per_s": round(t / r["steady_s"], 3),
            "loop_steady_s": round(lp["steady_s"], 3),
            "loop_targets_per_s": round(t / lp["steady_s"], 3),
            "speedup_vs_loop": round(lp["steady_s"] / r["steady_s"], 2),
            "mean_final_score": round(float(jnp.mean(r["out"].scores)), 3),
            **rate(r, peak, step_flops * args.steps * t),
        })  # fmt: skip

    photo = cnnjax.sample_photos()["chelsea.png"]
    style = cnnjax.sample_styles()["ihc.png"]
    steps = args.style_steps
    per_step = style_step_flops(model, jnp.asarray(photo), jnp.asarray(style))
    for optimizer in ("adam", "lbfgs") if "style_transfer" in args.cases else ():
        # The defaults: content 1, style 30, TV 300, softmax smoothing, from the content;
        # Adam's learning rate 0.01.
        r = time_call(style_transfer, model, photo, style, optimizer=optimizer, steps=steps,
                      repeats=args.repeats, min_seconds=0.0)  # fmt: skip
        out = r["out"]
        emit({
            "case": "style_transfer", "optimizer": optimizer, **info, "shape": [1, 224, 224, 3],
            "steps": steps, **timing(r), "iterations_per_s": round(steps / r["steady_s"], 3),
            "style_loss_ratio": round(float(out.initial_style_loss[0] / out.style_loss[0]), 2),
            **rate(r, peak, per_step * steps),
        })  # fmt: skip

    for layer in ("block_3", "logits") if "invert" in args.cases else ():
        # The defaults: from noise, learning rate 0.01, momentum 0.9, alpha 6 (weight 30),
        # beta 2, TV weight tv_weight(model, layer).
        r = time_call(invert, model, photo, layer, steps=steps, repeats=args.repeats, min_seconds=0.0)
        emit({
            "case": "invert", "layer": layer, **info, "shape": [1, 224, 224, 3], "steps": steps,
            **timing(r), "iterations_per_s": round(steps / r["steady_s"], 3),
            "reconstruction_error": round(float(r["out"].error[0]), 4),
            **rate(r, peak, invert_step_flops(model, jnp.asarray(photo), layer) * steps),
        })  # fmt: skip


if __name__ == "__main__":
    main()
