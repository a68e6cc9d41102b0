"""Forward and input-gradient throughput of the default model at 224x224.

    python benchmarks/forward_grad.py [--batches 1 8 32] [--baseline-batch 8]

One JSON line per case: device, batch, compile seconds, steady-state seconds (median),
images per second, achieved FLOP/s and the fraction of this machine's matmul peak measured
in the same run. FLOPs are XLA's own count (2 per multiply-add) for the network with XLA's
grouped convolution for the depthwise layers, so the figure does not depend on how cnnjax
computes them. The input gradient
is ``d logits[:, c].sum() / d images``. A baseline case runs the same network with XLA's
grouped convolution for the depthwise layers (``depthwise_impl="xla"``), for the speed-up
measured in the same run, and a case checks that the two networks agree: the largest
difference of their logits and of their input gradients on the sample photos, relative to the
largest value (the test suite checks the depthwise convolution itself against XLA's on small
shapes; the whole network's agreement is measured here, where both networks are built anyway).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from _common import device_info, emit, matmul_peak, time_jitted
from flax import nnx

import cnnjax
from cnnjax.models import EfficientNetLite0


def build(impl: str) -> cnnjax.Model:
    """The bundled EfficientNet-Lite0 with its depthwise layers computed by ``impl``.

    The weights are the bundled model's (``load_model`` checks the file): its params are the
    NNX state of an ``EfficientNetLite0``, which does not depend on ``depthwise_impl`` (a static
    attribute), so they are merged into the structure of an abstract module built with ``impl``.
    """
    reference = cnnjax.load_model()
    abstract = nnx.eval_shape(lambda: EfficientNetLite0(rngs=nnx.Rngs(0), depthwise_impl=impl))
    graphdef, _ = nnx.split(abstract)
    return cnnjax.from_nnx(nnx.merge(graphdef, reference.params), spec=reference.spec)


def functions(model: cnnjax.Model):
    forward = jax.jit(lambda p, x: model.apply(p, x)["logits"])
    input_grad = jax.jit(jax.grad(lambda x, p: model.apply(p, x)["logits"][:, 281].sum()))
    return {
        "forward": (forward, lambda x: (model.params, x)),
        "input_grad": (input_grad, lambda x: (x, model.params)),
    }


def flops_per_image(reference: cnnjax.Model) -> dict[str, float]:
    """XLA's FLOP count per image for each case, from the XLA-depthwise network at batch 1."""
    x = jnp.zeros((1, 224, 224, 3))
    out = {}
    for case, (fn, args) in functions(reference).items():
        out[case] = float(fn.lower(*args(x)).compile().cost_analysis()["flops"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--baseline-batch", type=int, default=8, help="0 to skip the XLA baseline")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    info = device_info()
    peak = matmul_peak()
    emit({"case": "matmul_peak", **info, "gflops_per_s": round(peak / 1e9, 1)})
    xla_model = build("xla")
    flops = flops_per_image(xla_model)
    models = {"auto": build("auto")}
    plan = [("auto", b) for b in args.batches]
    if args.baseline_batch:
        models["xla"] = xla_model
        plan.append(("xla", args.baseline_batch))
    results = {}
    for impl, batch in plan:
        x = jax.random.uniform(jax.random.key(batch), (batch, 224, 224, 3))
        for case, (fn, make_args) in functions(models[impl]).items():
            r = time_jitted(fn, *make_args(x), repeats=args.repeats if impl == "auto" else 3)
            rate = batch * flops[case] / r["steady_s"]
            results[(impl, batch, case)] = r["steady_s"]
            emit({
                "case": case, "model": "efficientnet_lite0", "depthwise": impl, **info,
                "batch": batch, "shape": [batch, 224, 224, 3],
                "compile_s": r["compile_s"], "steady_s": round(r["steady_s"], 4), "runs": r["runs"],
                "images_per_s": round(batch / r["steady_s"], 1),
                "gflop_per_image": round(flops[case] / 1e9, 3),
                "gflops_per_s": round(rate / 1e9, 1),
                "fraction_of_matmul_peak": round(rate / peak, 3),
            })  # fmt: skip
    if args.baseline_batch:
        photos = jnp.concatenate(list(cnnjax.sample_photos().values()))
        diffs = {}
        for case in ("forward", "input_grad"):
            (fn_a, make_a), (fn_x, make_x) = functions(models["auto"])[case], functions(models["xla"])[case]
            a, b = fn_a(*make_a(photos)), fn_x(*make_x(photos))
            diffs[case] = float(jnp.abs(a - b).max() / jnp.abs(b).max())
        emit({"case": "shift_depthwise_equals_xla_depthwise", **info, "images": int(photos.shape[0]),
              "max_relative_difference_logits": diffs["forward"],
              "max_relative_difference_input_grad": diffs["input_grad"],
              "agree": bool(diffs["forward"] < 1e-4 and diffs["input_grad"] < 1e-4)})  # fmt: skip
    if args.baseline_batch and ("auto", args.baseline_batch, "forward") in results:
        b = args.baseline_batch
        for case in ("forward", "input_grad"):
            emit({
                "case": f"{case}_speedup_vs_xla_depthwise", "batch": b, **info,
                "speedup": round(results[("xla", b, case)] / results[("auto", b, case)], 2),
            })  # fmt: skip


if __name__ == "__main__":
    main()
