"""Render every channel of a layer and attack a data set with PGD, across several processes.

Start one copy per process (per host), each with its process index; on one machine, two
processes with four simulated CPU devices each:

    for p in 0 1; do
      JAX_NUM_CPU_DEVICES=4 python examples/multihost.py --process-id $p --processes 2 \\
          --coordinator localhost:12355 --out multihost-run &
    done; wait

Every process runs the same sharded programs over a mesh of all the processes' devices and
writes only its own rows (``shard-<p>-of-<P>.npz``); process 0 writes ``index.json`` once every
shard is on disk. ``cnnjax.distributed.read_shards("multihost-run/channels")`` puts a result
together. On a GPU or TPU cluster drop the CPU flags: ``jax.distributed.initialize()`` finds
the coordinator from the cluster's environment.
"""

from __future__ import annotations

import argparse
import os


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--coordinator", required=True, help="host:port of process 0")
    parser.add_argument("--out", required=True, help="folder for the shards and the index")
    parser.add_argument(
        "--model", default="fashionnet", help="a bundled model, or 'tiny' (a random tiny_cnn)"
    )
    parser.add_argument("--layer", default=None, help="the layer whose channels are rendered")
    parser.add_argument("--units", type=int, default=None, help="the first N channels (default: all)")
    parser.add_argument("--steps", type=int, default=64, help="optimiser steps of each rendering")
    parser.add_argument("--images", type=int, default=256, help="images of the test set to attack")
    parser.add_argument("--eps", type=float, nargs="+", default=[2 / 255, 8 / 255])
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder (fashionnet)")
    args = parser.parse_args(argv)

    import jax

    if os.environ.get("JAX_PLATFORMS", "cpu") == "cpu" or jax.default_backend() == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPUs talk over Gloo
    jax.distributed.initialize(
        coordinator_address=args.coordinator, num_processes=args.processes, process_id=args.process_id
    )
    import numpy as np

    from cnnjax import objectives
    from cnnjax.attacks import pgd
    from cnnjax.distributed import write_shards
    from cnnjax.synthesis import visualize

    if args.model == "tiny":
        from cnnjax.testing import tiny_cnn

        model, layer = tiny_cnn(), args.layer or "conv3"
        images = np.random.default_rng(0).random((args.images, 32, 32, 3), np.float32)
        labels = None
    else:
        from cnnjax.data import load_fashion_mnist
        from cnnjax.models import load_model

        model, layer = load_model(args.model), args.layer or "conv3"
        test = load_fashion_mnist(args.data, progress=False)[1]
        images, labels = test.images[: args.images], test.labels[: args.images]
    channels = model.spec.layer(layer).shape[-1] if args.units is None else args.units
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    with jax.set_mesh(mesh):
        rendered = visualize(model, [objectives.channel(layer, c) for c in range(channels)], preset="plain",
                             size=model.spec.input_size[0], steps=args.steps, key=0)  # fmt: skip
        write_shards(f"{args.out}/channels", {"images": rendered.images, "scores": rendered.scores[:, 0]})
        attacked = pgd(model, images, labels, eps=args.eps, steps=10, key=0)
        write_shards(
            f"{args.out}/pgd",
            {"images": attacked.images, "success": attacked.success, "predictions": attacked.predictions},
            axis=1,  # [eps, n, ...]
        )
    if jax.process_index() == 0:
        print(f"{channels} channels of {layer} and {len(images)} images x {len(args.eps)} eps on "
              f"{jax.device_count()} devices in {jax.process_count()} processes: {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
