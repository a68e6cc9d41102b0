"""Input synthesis on the default model: visualize's targets per second (vmapped against a
Python loop over the same targets, in the same run), and style-transfer and inversion steps
per second.

    python benchmarks/synthesis.py [--targets 1 8 64] [--steps 16]

One JSON line per case: device, shapes, compile seconds and steady-state seconds (median)
apart, throughput, achieved FLOP/s (XLA's count of the compiled program's loop body times the
steps) and the fraction of this machine's matmul peak measured in the same run. The loop runs
the one-target program (compiled once) for each target in turn: what a library without vmap
over targets does at best.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from _common import device_info, emit, matmul_peak, time_jitted

import cnnjax
from cnnjax import objectives
from cnnjax.techniques import invert as inv_mod
from cnnjax.techniques import style as style_mod
from cnnjax.techniques import visualize as vis_mod


def visualize_program(model, targets, steps, size):
    preset = vis_mod.get_preset("lucid")
    param = preset.param(size, 1, 3)
    objs = [objectives.channel("block_10", c % 112) for c in targets]
    stacked = objectives.stack(vis_mod.resolve_objectives(model, objs, param, preset.transform))
    keys = jax.random.split(jax.random.key(0), len(targets))
    fn = jax.jit(
        lambda p, o, k: vis_mod._run(
            model.apply,
            p,
            o,
            k,
            param=param,
            transform=preset.transform,
            optimizer=preset.optimizer,
            steps=steps,
            restarts=1,
        )
    )
    return fn, (model.params, stacked, keys)


def rate(r, peak, steps):
    """FLOP/s of a run of ``steps`` optimisation steps: XLA counts a loop's body once, so its
    count is multiplied by the steps. Work done once before the loop (the style, content or
    inversion targets' forward passes) is multiplied too, so for style transfer and inversion
    this is an upper bound; for L-BFGS the line search is a loop of its own, counted once."""
    flops = float((r["cost"] or {}).get("flops", 0.0)) * steps
    return {
        "gflops_per_s": round(flops / r["steady_s"] / 1e9, 2),
        "fraction_of_matmul_peak": round(flops / r["steady_s"] / peak, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--steps", type=int, default=16, help="visualize steps per run")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    info = device_info()
    peak = matmul_peak()
    emit({"case": "matmul_peak", **info, "gflops_per_s": round(peak / 1e9, 1)})
    model = cnnjax.load_model()

    one_fn, one_args = visualize_program(model, [0], args.steps, args.size)
    one_compiled = one_fn.lower(*one_args).compile()
    for t in args.targets:
        fn, fargs = visualize_program(model, list(range(t)), args.steps, args.size)
        r = time_jitted(fn, *fargs, repeats=args.repeats, min_seconds=0.0)
        # The loop: the one-target program, compiled once, run for each of the t targets (the
        # targets' objectives and keys are built before timing).
        singles = [visualize_program(model, [c], args.steps, args.size)[1][1:] for c in range(t)]
        loops = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for o, k in singles:
                jax.block_until_ready(one_compiled(model.params, o, k))
            loops.append(time.perf_counter() - start)
        loop_s = statistics.median(loops)
        emit(
            {
                "case": "visualize",
                **info,
                "targets": t,
                "steps": args.steps,
                "size": args.size,
                "shape": [t, args.size, args.size, 3],
                "compile_s": r["compile_s"],
                "steady_s": round(r["steady_s"], 3),
                "targets_per_s": round(t / r["steady_s"], 3),
                "loop_steady_s": round(loop_s, 3),
                "loop_targets_per_s": round(t / loop_s, 3),
                "speedup_vs_loop": round(loop_s / r["steady_s"], 2),
                **rate(r, peak, args.steps),
            }
        )

    photo = cnnjax.sample_photos()["chelsea.png"]
    style = cnnjax.sample_styles()["ihc.png"]
    steps = 20
    for optimizer in ("adam", "lbfgs"):
        opt = style_mod._adam(0.01) if optimizer == "adam" else style_mod._lbfgs()
        content_layer, style_layers = style_mod.default_layers(model.spec)
        fargs = (
            model.params,
            jnp.asarray(photo),
            jnp.asarray(style),
            jnp.ones((1, 1)),
            jnp.asarray([[1.0, 30.0, 300.0]]),
            jax.random.key(0),
            jnp.float32(1.0),
        )
        fn = jax.jit(
            lambda *a, opt=opt, cl=content_layer, sl=style_layers: style_mod._run(
                model.apply,
                *a,
                content_layer=cl,
                style_layers=sl,
                optimizer=opt,
                steps=steps,
                smoothing="softmax",
                from_noise=False,
                preserve_color=False,
            )
        )
        r = time_jitted(fn, *fargs, repeats=args.repeats, min_seconds=0.0)
        out = fn(*fargs)
        emit(
            {
                "case": "style_transfer",
                "optimizer": optimizer,
                **info,
                "shape": [1, 224, 224, 3],
                "steps": steps,
                "compile_s": r["compile_s"],
                "steady_s": round(r["steady_s"], 3),
                "iterations_per_s": round(steps / r["steady_s"], 3),
                "style_loss_ratio": round(float(out[3][0] / out[2][0]), 2),
                **rate(r, peak, steps),
            }
        )

    for layer in ("block_3", "logits"):
        param = cnnjax.param.pixel((224, 224), 1, 3)
        keys = jax.random.split(jax.random.key(0), 1)
        fargs = (
            model.params,
            jnp.asarray(photo),
            keys,
            jnp.asarray([inv_mod.tv_weight(model, layer)]),
            jnp.float32(30.0),
        )
        fn = jax.jit(
            lambda *a, layer=layer, param=param: inv_mod._run(
                model.apply,
                *a,
                layers=(layer,),
                param=param,
                optimizer=inv_mod._optimizer(0.01, 0.9, steps),
                steps=steps,
                alpha=6.0,
                beta=2.0,
                from_code=False,
            )
        )
        r = time_jitted(fn, *fargs, repeats=args.repeats, min_seconds=0.0)
        emit(
            {
                "case": "invert",
                "layer": layer,
                **info,
                "shape": [1, 224, 224, 3],
                "steps": steps,
                "compile_s": r["compile_s"],
                "steady_s": round(r["steady_s"], 3),
                "iterations_per_s": round(steps / r["steady_s"], 3),
                **rate(r, peak, steps),
            }
        )


if __name__ == "__main__":
    main()
