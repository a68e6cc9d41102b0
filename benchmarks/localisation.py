"""Localisation speed on the default model: CAM for all classes, Grad-CAM, occlusion.

    python benchmarks/localisation.py [--loop-classes 1000] [--copies 256]

One JSON line per case: device, shapes, compile seconds, steady-state seconds (median),
throughput, a quality figure, FLOP/s as a fraction of this machine's matmul peak (XLA's own
FLOP count of the compiled program), and ratios measured in the same run:

* ``cam_all_classes``: the forward pass and the maps of all 1000 classes of one image, one
  einsum (``cnnjax.cam``), against two loops over the classes in the same run: one jitted
  call per class (forward and one map: what a per-class API costs) and one jitted map per
  class from features computed once (the dispatch cost alone).
* ``grad_cam``: images per second at batch 8, one target per image (the top class), at the
  head (a backward pass through the classifier only) and at ``block_10``.
* ``occlusion``: occluded copies per second for the empirical receptive field (11x11 random
  patches, drawn on the host), for a unit of ``head`` (the whole network per copy) and of
  ``block_4``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import device_info, emit, matmul_peak, time_jitted

import cnnjax
from cnnjax.techniques import cam as cams
from cnnjax.techniques import receptive_field as rf


def _flops(r: dict) -> float:
    cost = r.get("cost") or {}
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0))


def _loop_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop-classes", type=int, default=1000, help="classes in the per-class loops")
    parser.add_argument("--copies", type=int, default=256, help="occluded copies per timed call")
    args = parser.parse_args()

    info = device_info()
    peak = matmul_peak()
    emit({"case": "matmul_peak", **info, "gflops_per_s": round(peak / 1e9, 1)})
    model = cnnjax.load_model()
    photos = cnnjax.sample_photos()
    images = jnp.asarray(np.concatenate(list(photos.values())))
    x1 = images[2:3]  # the astronaut

    # CAM: all classes of one image in one call.
    t = time.perf_counter()
    head = cams.cam_head(model)
    identify_s = time.perf_counter() - t
    classes = jnp.arange(1000, dtype=jnp.int32)[None]
    fn = jax.jit(lambda p, x, w, b, c: cams._cam_maps(model.apply, p, x, w, b, c, layer="head"))
    r = time_jitted(fn, model.params, x1, head.weights, head.bias, classes)
    _, error = fn(model.params, x1, head.weights, head.bias, classes)
    vmapped_s = r["steady_s"]
    n_loop = args.loop_classes
    one = jax.jit(lambda p, x, c: jnp.einsum("nhwk,k->nhw", model.apply(p, x)["head"], head.weights[:, c]))
    jax.block_until_ready(one(model.params, x1, 0))
    loop_forward_s = _loop_seconds(
        lambda: [jax.block_until_ready(one(model.params, x1, c)) for c in range(n_loop)], 1
    )
    feats = jax.jit(model.apply)(model.params, x1)["head"]
    map_only = jax.jit(lambda f, c: jnp.einsum("nhwk,k->nhw", f, head.weights[:, c]))
    jax.block_until_ready(map_only(feats, 0))
    loop_maps_s = _loop_seconds(lambda: [jax.block_until_ready(map_only(feats, c)) for c in range(n_loop)])
    scale = 1000 / n_loop
    emit({
        "case": "cam_all_classes", **info, "shape": [1, 224, 224, 3], "classes": 1000, "layer": "head",
        "identify_head_s": round(identify_s, 3), "compile_s": r["compile_s"], "steady_s": round(vmapped_s, 4),
        "maps_per_s": round(1000 / vmapped_s, 1),
        "loop_forward_and_map_maps_per_s": round(n_loop / loop_forward_s, 1),
        "loop_map_only_maps_per_s": round(n_loop / loop_maps_s, 1),
        "speedup_vs_loop_forward_and_map": round(loop_forward_s * scale / vmapped_s, 1),
        "speedup_vs_loop_map_only": round(loop_maps_s * scale / vmapped_s, 2),
        "loop_classes": n_loop,
        "cam_identity_relative_error": float(error),
        "fraction_of_matmul_peak": round(_flops(r) / vmapped_s / peak, 3),
    })  # fmt: skip

    # Grad-CAM at batch 8, top class per image.
    x8 = jnp.concatenate([images, images[:, :, ::-1]])  # the photos and their mirror images
    top = jnp.argmax(jax.jit(model.apply)(model.params, x8)["logits"], axis=1).astype(jnp.int32)[:, None]
    for layer in ("head", "block_10"):
        fn = jax.jit(lambda p, x, c, layer=layer: cams._gradient_maps(
            model.apply, p, x, c, layer=layer, method="gradcam", chunk=1))  # fmt: skip
        r = time_jitted(fn, model.params, x8, top, repeats=5)
        quality = {}
        if layer == "head":  # Grad-CAM = ReLU(CAM) / hw at the head
            g = fn(model.params, x8, top)
            c, _ = cams._cam_maps(model.apply, model.params, x8, head.weights, head.bias, top, layer="head")
            quality["max_abs_diff_from_relu_cam_over_hw"] = float(jnp.max(jnp.abs(g - jax.nn.relu(c) / 49)))
        emit({
            "case": "grad_cam", **info, "layer": layer, "batch": 8, "shape": [8, 224, 224, 3],
            "compile_s": r["compile_s"], "steady_s": round(r["steady_s"], 4), "runs": r["runs"],
            "images_per_s": round(8 / r["steady_s"], 1), **quality,
            "fraction_of_matmul_peak": round(_flops(r) / r["steady_s"] / peak, 3),
        })  # fmt: skip

    # Occluded copies per second (the empirical receptive field's inner loop). XLA counts a
    # loop body's FLOPs once, so the rate uses the forward pass's count per copy.
    fields = rf.theoretical(model)
    for layer in ("head", "block_4"):
        forward = jax.jit(lambda p, x, layer=layer: model.apply(p, x)[layer][:, 0, 0, 0])
        per_copy = _flops({"cost": forward.lower(model.params, x1).compile().cost_analysis()})
        h, w = fields[layer].shape
        n = args.copies
        grid = np.arange(0, 224 - 11 + 1, 3)
        rng = np.random.default_rng(0)
        tops, lefts = jnp.asarray(rng.choice(grid, n)), jnp.asarray(rng.choice(grid, n))
        patches = jnp.asarray(rng.random((n, 11, 11, 3), np.float32))  # drawn on the host, as empirical does
        peaks = jnp.asarray([[h // 2, w // 2]], jnp.int32)
        unit = jnp.asarray([0], jnp.int32)
        fn = jax.jit(lambda p, x, t, l_, q, layer=layer, peaks=peaks, unit=unit: rf._occlude(
            model.apply, p, x, unit, peaks, t, l_, q, layers=(layer,), batch=64))  # fmt: skip
        r = time_jitted(fn, model.params, x1, tops, lefts, patches, repeats=3)
        emit({
            "case": "occlusion", **info, "layer": layer, "copies_per_call": n, "patch": 11,
            "compile_s": r["compile_s"], "steady_s": round(r["steady_s"], 4), "runs": r["runs"],
            "copies_per_s": round(n / r["steady_s"], 1),
            "published_copies_per_image": len(grid) ** 2,
            "seconds_per_image_published": round(len(grid) ** 2 / (n / r["steady_s"]), 1),
            "gflop_per_copy": round(per_copy / 1e9, 3),
            "fraction_of_matmul_peak": round(per_copy * n / r["steady_s"] / peak, 3),
        })  # fmt: skip


if __name__ == "__main__":
    main()
