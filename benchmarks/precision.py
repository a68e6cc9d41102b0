"""Mixed precision: the same attack and class visualisation with the model in float32 and in
bfloat16 (``dtype=jnp.bfloat16``, :meth:`cnnjax.Model.astype`), timed in the same run, with the
quality figures the option must keep.

    python benchmarks/precision.py [--steps 10] [--repeats 3]

Cases (one JSON line per case and dtype, then one line of ratios per case):

* ``pgd``: untargeted PGD-10 at 2/255 on the sample photos with the default EfficientNet-Lite0;
  quality: the float32 model's top-1 of the adversarial images, its agreement with the float32
  attack's (``same_top1_as_float32``) and the success rate.
* ``class_images``: ``fooling_images`` (gradient) for the 10 classes of the bundled FashionNet;
  quality: how many the float32 model recognises as their class (``recognised``) and their
  median probability.

On a CPU bfloat16 is emulated (XLA converts to float32 around most operations), so it is
slower there: which is why it is off by default. The speed it buys on a GPU or TPU was not
measured here (no accelerator on this project's machine).
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
from _common import device_info, emit, time_call

import cnnjax
from cnnjax.attacks import fooling_images, pgd
from cnnjax.models import classify, load_model

DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def ratio(timing: dict) -> float:
    """bfloat16's steady seconds over float32's, measured in this run."""
    return round(timing["bfloat16"]["steady_s"] / timing["float32"]["steady_s"], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--class-steps", type=int, default=30, help="steps of the class images")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    info = device_info()

    model = load_model("efficientnet_lite0")
    photos = cnnjax.sample_photos()
    images = np.concatenate([photos[k] for k in photos])
    top1, timing = {}, {}
    for name, dtype in DTYPES.items():
        t = time_call(
            pgd, model, images, eps=2 / 255, steps=args.steps, key=0, dtype=dtype, repeats=args.repeats
        )
        top1[name] = np.asarray(classify(model, t["out"].images).classes[:, 0])
        timing[name] = t
        emit({**info, "case": "pgd", "dtype": name, "model": "efficientnet_lite0", "images": len(images),
              "steps": args.steps, **t, "images_per_s": round(len(images) / t["steady_s"], 3),
              "success_rate": float(np.mean(np.asarray(t["out"].success))),
              "same_top1_as_float32": float(np.mean(top1[name] == top1["float32"]))})  # fmt: skip
    emit({**info, "case": "pgd", "bfloat16_over_float32_steady": ratio(timing)})

    fashion = load_model("fashionnet")
    for name, dtype in DTYPES.items():
        t = time_call(fooling_images, fashion, list(range(10)), steps=args.class_steps, key=0, dtype=dtype,
                      repeats=args.repeats)  # fmt: skip
        probs, classes = classify(fashion, t["out"].images)
        timing[name] = t
        emit({**info, "case": "class_images", "dtype": name, "model": "fashionnet", "targets": 10,
              "steps": args.class_steps, **t,
              "recognised": int(np.sum(np.asarray(classes[:, 0]) == np.arange(10))),
              "median_probability": round(float(np.median(np.asarray(probs[:, 0]))), 4)})  # fmt: skip
    emit({**info, "case": "class_images", "bfloat16_over_float32_steady": ratio(timing)})


if __name__ == "__main__":
    main()
