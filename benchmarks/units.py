"""Unit semantics speed: the top-images tally and the dissection tally against the network's
own forward pass, and peak memory against the collection's size.

    python benchmarks/units.py [--images 4096] [--sizes 1000 4000 16000]

One JSON line per case (device and CPU model in each; compile seconds and steady-state
seconds apart, through ``_common.time_call``):

* ``top_images``: images per second of ``cnnjax.units.top_images`` over an in-memory collection
  for every unit of a layer (FashionNet's ``conv5``, 128 units, over ``--images`` 28x28
  images; EfficientNet-Lite0's ``head``, 1280 units, over 256 224x224 images), against the
  bare forward pass measured in the same run (``model.apply`` jitted at the same chunk of 64
  images, on data already on the device). ``fraction_of_forward`` is the tally's rate over
  the forward pass's (target: at least 0.8); the forward pass's FLOP/s are given as a fraction
  of this machine's matmul peak, measured now.
* ``dissect``: images per second of ``cnnjax.units.dissect`` (FashionNet's ``conv5``) over a
  synthetic Broden-layout set of 28x28 images written here (two passes: thresholds, then the
  IoU tally; reading and decoding the PNGs included), against the forward pass.
* ``memory``: peak resident memory of a fresh process running ``top_images`` of FashionNet's
  ``conv5`` over folders of ``--sizes`` PNG files (written here): flat when streaming works.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from _common import device_info, emit, matmul_peak, program_flops, time_call
from PIL import Image

import cnnjax
from cnnjax.testing import write_broden
from cnnjax.units import dissect, top_images

CHUNK = 64


def forward_rate(model, layer: str, images: np.ndarray) -> tuple[float, float]:
    """Images per second of the jitted forward pass at batch CHUNK, and its FLOPs per image."""
    apply = jax.jit(lambda p, x: model.apply(p, x)[layer])
    x = jax.device_put(images[:CHUNK])
    r = time_call(apply, model.params, x)
    return CHUNK / r["steady_s"], program_flops(
        lambda p, x: model.apply(p, x)[layer], model.params, x
    ) / CHUNK


def tally_case(name: str, model, layer: str, images: np.ndarray, peak: float) -> None:
    fwd, flops = forward_rate(model, layer, images)
    r = time_call(top_images, model, images, layer, top_k=9, chunk_size=CHUNK, progress=False, repeats=3)
    rate = len(images) / r["steady_s"]
    emit({"case": "top_images", "model": name, "layer": layer, "units": model.spec.layer(layer).shape[-1],
          "images": len(images), **device_info(), **{k: v for k, v in r.items() if k != "out"},
          "images_per_s": round(rate, 1), "forward_images_per_s": round(fwd, 1),
          "fraction_of_forward": round(rate / fwd, 3),
          "forward_fraction_of_matmul_peak": round(fwd * flops / peak, 3)})  # fmt: skip


def memory_case(sizes: list[int]) -> None:
    code = (
        "import resource, sys, time, cnnjax, numpy as np\n"
        "from cnnjax.units import top_images\n"
        "m = cnnjax.load_model('fashionnet')\n"
        "top_images(m, np.zeros((64, 28, 28, 1), np.float32), 'conv5', progress=False)\n"  # compiled
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter()\n"
        "top_images(m, sys.argv[1], 'conv5', progress=False)\n"
        "print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t)\n"
    )
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        folder, written = Path(root), 0
        for size in sorted(sizes):
            while written < size:
                pixels = (rng.random((28, 28)) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{written:06d}.png")
                written += 1
            out = subprocess.run(
                [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
            )
            before_kb, rss_kb, seconds = out.stdout.split()
            emit({
                "case": "memory", "model": "fashionnet", "layer": "conv5", "images": size, **device_info(),
                "peak_rss_mb": round(int(rss_kb) / 1024, 1), "rss_before_mb": round(int(before_kb) / 1024, 1),
                "seconds": round(float(seconds), 2), "images_per_s": round(size / float(seconds), 1),
            })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    args = parser.parse_args()
    peak = matmul_peak()
    emit({"case": "matmul_peak", **device_info(), "gflops": round(peak / 1e9, 1)})

    rng = np.random.default_rng(0)
    fashion = cnnjax.load_model("fashionnet")
    tally_case("fashionnet", fashion, "conv5", rng.random((args.images, 28, 28, 1), np.float32), peak)
    effnet = cnnjax.load_model("efficientnet_lite0")
    tally_case("efficientnet_lite0", effnet, "head", rng.random((256, 224, 224, 3), np.float32), peak)

    with tempfile.TemporaryDirectory() as root:
        data = cnnjax.data.load_broden(write_broden(root, n=1024, size=28))
        fwd, _ = forward_rate(fashion, "conv5", rng.random((CHUNK, 28, 28, 1), np.float32))
        t = time.perf_counter()
        r = time_call(dissect, fashion, data, "conv5", chunk_size=CHUNK, progress=False, repeats=3)
        rate = len(data) / r["steady_s"]
        r = {k: v for k, v in r.items() if k != "out"}
        emit({
            "case": "dissect", "model": "fashionnet", "layer": "conv5", "images": len(data),
            "concepts": len(data.names), **device_info(), **r, "images_per_s": round(rate, 1),
            "forward_images_per_s": round(fwd, 1), "fraction_of_forward": round(rate / fwd, 3), "passes": 2,
            "fraction_of_forward_per_pass": round(2 * rate / fwd, 3),
            "wall_s": round(time.perf_counter() - t, 1),
        })  # fmt: skip
    memory_case(args.sizes)


if __name__ == "__main__":
    main()
