"""Localisation speed on the default model: CAM for all classes, Grad-CAM, occlusion.

    python benchmarks/localisation.py [--loop-classes 1000] [--stride 14]

One JSON line per case: device, CPU, shapes, compile seconds, steady-state seconds (median),
throughput, a quality figure, FLOP/s as a fraction of this machine's matmul peak, and ratios
measured in the same run. Each technique is timed as a user calls it, through its public
function (argument checks and host work included), with ``_common.time_call``: the compile
seconds are JAX's own compile events during the first call, the steady state the median of
later calls. FLOPs are XLA's count (``.lower().compile().cost_analysis()``) of an equivalent
computation written here with the public ``model.apply`` (its ``perturb`` argument gives the
gradient at a layer), as noted per case:

* ``cam_all_classes``: ``cnnjax.saliency.cam`` of all 1000 classes of one image (one forward
  pass and one einsum), against two loops over the classes in the same run: one jitted call
  per class (forward and one map: what a per-class API costs) and one jitted map per class
  from features computed once (the dispatch cost alone). FLOPs: the forward pass and the
  einsum of the head's features with all the classes' weights.
* ``grad_cam``: ``cnnjax.saliency.grad_cam`` images per second at batch 8, one target per
  image (the top class), at the head (a backward pass through the classifier only) and at
  ``block_10``. FLOPs: the forward pass, the VJP of the target logits to the layer and the
  weighted sum.
* ``occlusion``: occluded copies per second of ``cnnjax.receptive_field.empirical`` on one
  image (11x11 random patches on the whole grid, ``restrict=False``; ``--stride 14`` gives
  16 x 16 = 256 copies per call), for unit 0 of ``head`` (the whole network per copy) and of
  ``block_4``. The call also draws the patches on the host and runs two more forward passes
  (the unit's peak and the unoccluded reference); the rate counts the occluded copies only.
  FLOPs per copy: the forward pass up to the layer at batch 1.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import device_info, emit, matmul_peak, program_flops, time_call

import cnnjax
from cnnjax import receptive_field
from cnnjax.saliency import cam, cam_head, grad_cam


def _loop_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def grad_cam_equivalent(model, layer):
    """What Grad-CAM computes for one target per image, for XLA's FLOP count."""

    def run(params, images, classes):
        def logits_of(delta):
            out = model.apply(params, images, perturb={layer: delta})
            return out["logits"], out[layer]

        zeros = jnp.zeros((images.shape[0], *model.spec.layer(layer).shape), jnp.float32)
        logits, vjp, a = jax.vjp(logits_of, zeros, has_aux=True)
        (g,) = vjp(jax.nn.one_hot(classes[:, 0], logits.shape[-1], dtype=logits.dtype))
        return jax.nn.relu(jnp.einsum("nhwk,nk->nhw", a, jnp.mean(g, axis=(1, 2))))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop-classes", type=int, default=1000, help="classes in the per-class loops")
    parser.add_argument("--stride", type=int, default=14, help="occlusion grid step (14: 256 copies a call)")
    parser.add_argument("--repeats", type=int, default=3, help="steady-state calls of grad_cam and occlusion")
    args = parser.parse_args()

    info = device_info()
    peak = matmul_peak()
    emit({"case": "matmul_peak", **info, "gflops_per_s": round(peak / 1e9, 1)})
    model = cnnjax.load_model()
    photos = cnnjax.sample_photos()
    images = jnp.asarray(np.concatenate(list(photos.values())))
    x1 = images[2:3]  # the astronaut
    forward = jax.jit(model.apply)

    # CAM: all classes of one image in one call.
    t = time.perf_counter()
    head = cam_head(model)  # checks the model's head (cached: cam reuses it)
    identify_s = time.perf_counter() - t
    r = time_call(cam, model, x1, None, layer="head", repeats=7, min_seconds=1.0)
    maps = r["out"]  # [1, 1000, 7, 7]
    logits = forward(model.params, x1)["logits"]
    # CAM's identity: each class score is its map's mean plus the bias.
    recon = jnp.mean(maps, axis=(2, 3)) + head.bias
    error = jnp.max(jnp.abs(recon - logits)) / (1.0 + jnp.max(jnp.abs(logits)))
    cam_flops = program_flops(lambda p, x, w: jnp.einsum("nhwk,kc->nchw", model.apply(p, x)["head"], w),
                              model.params, x1, head.weights)  # fmt: skip
    vmapped_s = r["steady_s"]
    n_loop = args.loop_classes
    one = jax.jit(lambda p, x, c: jnp.einsum("nhwk,k->nhw", model.apply(p, x)["head"], head.weights[:, c]))
    jax.block_until_ready(one(model.params, x1, 0))
    loop_forward_s = _loop_seconds(
        lambda: [jax.block_until_ready(one(model.params, x1, c)) for c in range(n_loop)], 1
    )
    feats = forward(model.params, x1)["head"]
    map_only = jax.jit(lambda f, c: jnp.einsum("nhwk,k->nhw", f, head.weights[:, c]))
    jax.block_until_ready(map_only(feats, 0))
    loop_maps_s = _loop_seconds(lambda: [jax.block_until_ready(map_only(feats, c)) for c in range(n_loop)])
    scale = 1000 / n_loop
    emit({
        "case": "cam_all_classes", **info, "shape": [1, 224, 224, 3], "classes": 1000, "layer": "head",
        "identify_head_s": round(identify_s, 3), "compile_s": r["compile_s"], "compiles": r["compiles"],
        "first_call_s": r["first_call_s"], "steady_s": round(vmapped_s, 4), "runs": r["runs"],
        "steady_compiles": r["steady_compiles"], "maps_per_s": round(1000 / vmapped_s, 1),
        "loop_forward_and_map_maps_per_s": round(n_loop / loop_forward_s, 1),
        "loop_map_only_maps_per_s": round(n_loop / loop_maps_s, 1),
        "speedup_vs_loop_forward_and_map": round(loop_forward_s * scale / vmapped_s, 1),
        "speedup_vs_loop_map_only": round(loop_maps_s * scale / vmapped_s, 2),
        "loop_classes": n_loop,
        "cam_identity_relative_error": float(error),
        "fraction_of_matmul_peak": round(cam_flops / vmapped_s / peak, 3),
    })  # fmt: skip

    # Grad-CAM at batch 8, top class per image.
    x8 = jnp.concatenate([images, images[:, :, ::-1]])  # the photos and their mirror images
    top = np.asarray(cnnjax.classify(model, x8, top_k=1).classes)  # [8, 1]
    for layer in ("head", "block_10"):
        r = time_call(grad_cam, model, x8, top, layer=layer, repeats=args.repeats + 2, min_seconds=0)
        flops = program_flops(grad_cam_equivalent(model, layer), model.params, x8, jnp.asarray(top))
        quality = {}
        if layer == "head":  # Grad-CAM = ReLU(CAM) / hw at the head
            c = cam(model, x8, top, layer="head")
            diff = jnp.max(jnp.abs(r["out"] - jax.nn.relu(c) / 49))
            quality["max_abs_diff_from_relu_cam_over_hw"] = float(diff)
        emit({
            "case": "grad_cam", **info, "layer": layer, "batch": 8, "shape": [8, 224, 224, 3],
            "compile_s": r["compile_s"], "compiles": r["compiles"], "first_call_s": r["first_call_s"],
            "steady_s": round(r["steady_s"], 4), "runs": r["runs"], "steady_compiles": r["steady_compiles"],
            "images_per_s": round(8 / r["steady_s"], 1), **quality,
            "fraction_of_matmul_peak": round(flops / r["steady_s"] / peak, 3),
        })  # fmt: skip

    # Occluded copies per second (the empirical receptive field). The theoretical fields,
    # which empirical reads (cached per model), are derived first, outside the timing.
    receptive_field.theoretical(model)
    published = len(np.arange(0, 224 - 11 + 1, 3)) ** 2
    for layer in ("head", "block_4"):

        def unit_of(p, x, layer=layer):
            return model.apply(p, x)[layer][:, 0, 0, 0]

        per_copy = program_flops(unit_of, model.params, x1)
        r = time_call(receptive_field.empirical, model, layer, 0, x1, top_k=1, patch=11, stride=args.stride,
                      restrict=False, chunk_size=64, repeats=args.repeats, min_seconds=0)  # fmt: skip
        n = int(r["out"].copies[0])
        emit({
            "case": "occlusion", **info, "layer": layer, "copies_per_call": n, "patch": 11,
            "stride": args.stride,
            "compile_s": r["compile_s"], "compiles": r["compiles"], "first_call_s": r["first_call_s"],
            "steady_s": round(r["steady_s"], 4), "runs": r["runs"], "steady_compiles": r["steady_compiles"],
            "copies_per_s": round(n / r["steady_s"], 1),
            "published_copies_per_image": published,
            "seconds_per_image_published": round(published / (n / r["steady_s"]), 1),
            "gflop_per_copy": round(per_copy / 1e9, 3),
            "fraction_of_matmul_peak": round(per_copy * n / r["steady_s"] / peak, 3),
        })  # fmt: skip


if __name__ == "__main__":
    main()
