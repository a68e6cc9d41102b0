"""Helpers for testing techniques: a tiny CNN and a compile counter.

Used by cnnjax's own test suite and usable by anyone testing code built on cnnjax: the
network is small enough that a technique's whole run compiles and executes in seconds on a
laptop CPU, and :func:`count_compiles` proves that a second call does not recompile.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.contract import Model

__all__ = ["tiny_cnn", "count_compiles", "CompileCount"]

TINY_LAYERS = ("input", "conv1", "conv2", "conv3", "pooled", "logits")


def _conv(x, w, b, stride):
    y = jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + b.reshape(1, 1, 1, -1)


def tiny_cnn(
    seed: int = 0, *, size: int = 32, channels: int = 3, num_classes: int = 10, width: int = 8
) -> Model:
    """A random-weight CNN that ends in global average pooling and one linear layer.

    ``conv1`` (3x3, ``width`` channels, stride 1) - ReLU - ``conv2`` (3x3, ``2 * width``,
    stride 2) - ReLU - ``conv3`` (3x3, ``2 * width``, stride 1) - ReLU - ``pooled`` (global
    average) - ``logits`` (linear). Theoretical receptive fields: 3, 5 and 9 pixels; effective
    strides 1, 2 and 2. Activations are recorded after the ReLU.

    Args:
      seed: seeds the weights (He-normal kernels, small random biases).
      size: the spec's input size (the network itself accepts any size >= 8).
      channels: input channels.
      num_classes: outputs.
      width: channels of ``conv1``.

    Returns:
      A :class:`~cnnjax.Model` (via :func:`cnnjax.from_function`).
    """
    from cnnjax.models.adapters import from_function

    # NumPy draws the weights: eager jax.random calls would compile one program per shape.
    rng = np.random.default_rng(seed)
    widths = (channels, width, 2 * width, 2 * width)
    params = {}
    for i in range(3):
        cin, cout = widths[i], widths[i + 1]
        params[f"conv{i + 1}"] = {
            "w": jnp.asarray(rng.normal(size=(3, 3, cin, cout)) * (2.0 / (9 * cin)) ** 0.5, jnp.float32),
            "b": jnp.asarray(rng.normal(size=(cout,)) * 0.05, jnp.float32),
        }
    params["dense"] = {
        "w": jnp.asarray(rng.normal(size=(widths[-1], num_classes)) * (1.0 / widths[-1]) ** 0.5, jnp.float32),
        "b": jnp.asarray(rng.normal(size=(num_classes,)) * 0.05, jnp.float32),
    }

    def forward(p, x, tap):
        h = x
        for i, stride in enumerate((1, 2, 1)):
            c = p[f"conv{i + 1}"]
            h = tap(f"conv{i + 1}", jax.nn.relu(_conv(h, c["w"], c["b"], stride)))
        h = tap("pooled", jnp.mean(h, axis=(1, 2)))
        return h @ p["dense"]["w"] + p["dense"]["b"][None]

    return from_function(
        forward,
        params,
        name="tiny_cnn",
        input_size=size,
        channels=channels,
        receptive_fields={"input": 1, "conv1": 3, "conv2": 5, "conv3": 9},
    )


class CompileCount:
    """The number of XLA backend compilations seen inside :func:`count_compiles`."""

    def __init__(self):
        self.n = 0


_lock = threading.Lock()
_active: list[CompileCount] = []
_registered = False


def _listener(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        with _lock:
            for counter in _active:
                counter.n += 1


@contextlib.contextmanager
def count_compiles() -> Iterator[CompileCount]:
    """Count XLA compilations (of anything, eager operations included) inside the block.

    Example::

      run(targets_a)                       # compiles
      with count_compiles() as c:
          run(targets_b)                   # same shapes, new values
      assert c.n == 0
    """
    global _registered
    with _lock:
        if not _registered:
            jax.monitoring.register_event_duration_secs_listener(_listener)
            _registered = True
        counter = CompileCount()
        _active.append(counter)
    try:
        yield counter
    finally:
        with _lock:
            _active.remove(counter)
