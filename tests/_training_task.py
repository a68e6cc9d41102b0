"""A tiny, fully determined classification task and CNN for the training tests.

Run as a script, it trains with checkpoints: ``python _training_task.py CKPT_DIR OUT.npz``.
"""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

import cnnjax


def make_task(n=1200, size=12, seed=0):
    """Four classes: a bright 4x4 square in one of the four quadrants, on noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n).astype(np.int32)
    images = rng.uniform(0.0, 0.4, (n, size, size, 1)).astype(np.float32)
    half = size // 2
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        y0 = r * half + rng.integers(0, half - 4 + 1)
        x0 = q * half + rng.integers(0, half - 4 + 1)
        images[i, y0 : y0 + 4, x0 : x0 + 4, 0] = rng.uniform(0.7, 1.0)
    return images, labels


@functools.cache  # one model object: every test reuses its compiled programs
def tiny_cnn(seed=0):
    # NumPy draws the weights: eager jax.random calls would compile a program per shape.
    rng = np.random.default_rng(seed)
    params = {
        "conv": {
            "w": jnp.asarray(rng.normal(0, 0.3, (3, 3, 1, 8)).astype(np.float32)),
            "bias": jnp.zeros((8,)),
        },
        "dense": {"w": jnp.asarray(rng.normal(0, 0.3, (4, 4)).astype(np.float32)), "bias": jnp.zeros((4,))},
    }

    def forward(p, x, tap):
        h = jax.lax.conv_general_dilated(x, p["conv"]["w"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
        h = tap("conv", jax.nn.relu(h + p["conv"]["bias"].reshape(1, 1, 1, -1)))
        # The strongest response in each quadrant says where the square is.
        s = h.mean(-1)
        h = jnp.stack([s[:, :6, :6].max((1, 2)), s[:, :6, 6:].max((1, 2)),
                       s[:, 6:, :6].max((1, 2)), s[:, 6:, 6:].max((1, 2))], -1)  # fmt: skip
        h = tap("pooled", h)
        return h @ p["dense"]["w"] + p["dense"]["bias"][None]

    return cnnjax.from_function(forward, params, name="tiny", input_size=12, channels=1,
                                class_names=("tl", "tr", "bl", "br"))  # fmt: skip


def splits():
    images, labels = make_task()
    return (images[:800], labels[:800]), (images[800:1000], labels[800:1000]), (images[1000:], labels[1000:])


def run(checkpoint_dir, out_path):
    from cnnjax.training import fit, momentum_sgd

    train, val, _ = splits()
    result = fit(tiny_cnn(), train, val, optimizer=momentum_sgd, learning_rate=0.05, epochs=2, batch_size=8,
                 key=3, checkpoint_dir=checkpoint_dir, steps_per_checkpoint=5, progress=False,
                 patience=None)  # fmt: skip
    leaves = [np.asarray(x) for x in jax.tree.leaves(result.last_params)]
    np.savez(out_path, *leaves)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
