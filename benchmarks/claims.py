"""The course notes' claims about training, measured: momentum on a narrow valley, mini-batch
against full-batch descent and an L2 / dropout ablation of FashionNet on Fashion-MNIST.

    python benchmarks/claims.py [--data PATH_TO_FASHION_MNIST]

JSON lines (each with device and CPU; compile seconds from JAX's compile events during the
call, kept apart from the run's seconds):

* ``momentum_paths``: plain gradient descent, the notes' momentum and heavy ball on
  f = (x^2 + 50 y^2) / 2 (learning rate 0.038, momentum 0.3 and 0.5, 40 steps): each method's
  distance travelled across the valley in units of the start's offset, its final loss and its
  per-coordinate convergence factors (``time_call``: first call, then the steady median).
* ``sgd_vs_full_batch``: a fresh FashionNet, ``--sgd-examples`` training images, ``--steps``
  plain steps of learning rate ``--sgd-learning-rate`` with mini-batches of ``--batch-size`` or
  the whole subset: the loss curves' noise (standard deviation of the step-to-step changes over
  the last half of the steps), the share of steps whose loss rose, the mean loss over the first
  and the last 20 steps and the final loss on the whole subset.
* ``regularisation_ablation``: FashionNet trained ``--epochs`` epochs on ``--train`` training
  images four ways (none, L2 ``--l2``, dropout ``--dropout-rate``, both) as one program vmapped
  over the settings, scored in evaluation mode on its training images and ``--val`` validation
  images: accuracy, loss and the gap (training minus validation accuracy) per setting, and the
  training throughput of the vmapped program (training examples of all four settings per second
  of ``run_s``, the final evaluation included).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from _common import compile_events, device_info, emit, time_call
from flax import nnx

from cnnjax import data
from cnnjax._src.contract import ValueMapping
from cnnjax.diagnose import momentum_paths, regularisation_ablation, sgd_vs_full_batch
from cnnjax.models import FashionNet, fashionnet_model


def _timed(fn, *args, **kwargs):
    """``(result, record)``: one call, its compile seconds (JAX's compile events) and the rest."""
    with compile_events() as events:
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*args, **kwargs))
        wall = time.perf_counter() - t
    compile_s = sum(seconds for _, seconds in events)
    return out, {
        "compile_s": round(compile_s, 2),
        "run_s": round(wall - compile_s, 2),
        "wall_s": round(wall, 2),
    }


def _named(names, values, digits: int = 4) -> dict:
    return {name: round(float(v), digits) for name, v in zip(names, np.asarray(values, np.float64))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder (default: the usual places)")
    parser.add_argument("--sgd-examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sgd-learning-rate", type=float, default=0.02)
    parser.add_argument("--train", type=int, default=1024)
    parser.add_argument("--val", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--dropout-rate", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=0.05, help="the ablation's")
    args = parser.parse_args()
    info = device_info()

    for momentum in (0.3, 0.5):
        r = time_call(momentum_paths, momentum=momentum, repeats=5, min_seconds=0.2)
        p = r["out"]
        emit({"case": "momentum_paths", **info, "condition": p.condition, "learning_rate": p.learning_rate,
              "momentum": p.momentum, "steps": int(p.paths.shape[1] - 1), "compile_s": r["compile_s"],
              "steady_s": round(r["steady_s"], 5), "pingpong": _named(p.methods, p.pingpong, 2),
              "final_loss": _named(p.methods, p.losses[:, -1], 5),
              "steep_factor": _named(p.methods, p.rates[:, 1], 3),
              "shallow_factor": _named(p.methods, p.rates[:, 0], 3)})  # fmt: skip

    train_all, _ = data.load_fashion_mnist(args.data, progress=False)
    train, val = data.split_train_val(train_all, 0.1, key=0)

    n = args.sgd_examples
    images, labels = train.images[:n], train.labels[:n]
    mean, std = data.channel_stats(images)
    mapping = ValueMapping(mean=tuple(map(float, mean)), std=tuple(map(float, std)))
    model = fashionnet_model(FashionNet(rngs=nnx.Rngs(0), value_mapping=mapping))
    s, timing = _timed(sgd_vs_full_batch, model, (images, labels), learning_rate=args.sgd_learning_rate,
                       steps=args.steps, batch_size=args.batch_size, key=0)  # fmt: skip
    k = min(20, args.steps)
    emit({"case": "sgd_vs_full_batch", **info, "model": "fashionnet", "examples": s.examples,
          "batch_size": s.batch_size, "steps": args.steps, "learning_rate": s.learning_rate, **timing,
          "noise": _named(s.methods, s.noise), "rises": _named(s.methods, s.rises, 3),
          f"first_{k}_mean": _named(s.methods, s.losses[:, :k].mean(axis=1)),
          f"last_{k}_mean": _named(s.methods, s.losses[:, -k:].mean(axis=1)),
          "final_loss": _named(s.methods, s.final_loss),
          "examples_per_step": {s.methods[0]: s.batch_size, s.methods[1]: s.examples}})  # fmt: skip

    a, timing = _timed(
        regularisation_ablation, (train.images[: args.train], train.labels[: args.train]),
        (val.images[: args.val], val.labels[: args.val]), l2=args.l2, dropout_rate=args.dropout_rate,
        learning_rate=args.learning_rate, epochs=args.epochs, batch_size=args.batch_size, key=0,
    )  # fmt: skip
    steps = args.epochs * (args.train // args.batch_size)
    settings = len(a.settings)
    emit({"case": "regularisation_ablation", **info, "model": "fashionnet", "train_examples": args.train,
          "val_examples": args.val, "epochs": a.epochs, "batch_size": args.batch_size, "steps": steps,
          "learning_rate": a.learning_rate, "optimizer": "heavy ball, momentum 0.9", **timing,
          "training_examples_per_s": round(settings * steps * args.batch_size / timing["run_s"], 1),
          "settings": {name: {"l2": round(float(a.l2[i]), 6),
                              "dropout_rate": round(float(a.dropout_rate[i]), 3),
                              "train_accuracy": round(float(a.train_accuracy[i]), 4),
                              "val_accuracy": round(float(a.val_accuracy[i]), 4),
                              "gap": round(float(a.gap[i]), 4),
                              "train_loss": round(float(a.train_loss[i]), 4),
                              "val_loss": round(float(a.val_loss[i]), 4)}
                       for i, name in enumerate(a.settings)}})  # fmt: skip


if __name__ == "__main__":
    main()
