"""Helpers for testing techniques: a tiny CNN, a compile counter and the technique contract.

Used by cnnjax's own test suite and usable by anyone testing code built on cnnjax: the
network is small enough that a technique's whole run compiles and executes in seconds on a
laptop CPU, :func:`count_compiles` proves that a second call does not recompile, and
:func:`check_technique_contract` checks what every technique promises.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import numpy_seed
from cnnjax._src.contract import Model
from cnnjax.models import from_function

__all__ = ["CompileCount", "check_technique_contract", "count_compiles", "tiny_cnn"]

TINY_LAYERS = ("input", "conv1", "conv2", "conv3", "pooled", "logits")


def _conv(x, w, b, stride):
    y = jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + b.reshape(1, 1, 1, -1)


def tiny_cnn(key=0, *, size: int = 32, channels: int = 3, num_classes: int = 10, width: int = 8) -> Model:
    """A random-weight CNN that ends in global average pooling and one linear layer.

    ``conv1`` (3x3, ``width`` channels, stride 1) - ReLU - ``conv2`` (3x3, ``2 * width``,
    stride 2) - ReLU - ``conv3`` (3x3, ``2 * width``, stride 1) - ReLU - ``pooled`` (global
    average) - ``logits`` (linear). Theoretical receptive fields: 3, 5 and 9 pixels; effective
    strides 1, 2 and 2. Activations are recorded after the ReLU.

    Args:
      key: an int seed or a JAX key for the weights (He-normal kernels, small random biases).
      size: the spec's input size (the network itself accepts any size >= 8).
      channels: input channels.
      num_classes: outputs.
      width: channels of ``conv1``.

    Returns:
      A :class:`~cnnjax.Model` (via :func:`cnnjax.from_function`); the same arguments give the
      same model object, so techniques compiled for it are reused.

    Example:
      >>> model = tiny_cnn()
      >>> model.spec.layer_names
      ('input', 'conv1', 'conv2', 'conv3', 'pooled', 'logits')
      >>> model.spec.layer("conv2").shape, model.spec.layer("conv2").stride
      ((16, 16, 16), 2)
      >>> tiny_cnn() is model
      True
    """
    seed = numpy_seed(key)
    return _tiny_cnn(seed if isinstance(seed, int) else tuple(seed), size, channels, num_classes, width)


@functools.cache
def _tiny_cnn(seed, size: int, channels: int, num_classes: int, width: int) -> Model:
    # NumPy draws the weights: eager jax.random calls would compile one program per shape.
    rng = np.random.default_rng(seed)
    widths = (channels, width, 2 * width, 2 * width)
    params = {}
    for i in range(3):
        cin, cout = widths[i], widths[i + 1]
        params[f"conv{i + 1}"] = {
            "w": jnp.asarray(
                (rng.normal(size=(3, 3, cin, cout)) * (2.0 / (9 * cin)) ** 0.5).astype(np.float32)
            ),
            "b": jnp.asarray((rng.normal(size=(cout,)) * 0.05).astype(np.float32)),
        }
    params["dense"] = {
        "w": jnp.asarray(
            (rng.normal(size=(widths[-1], num_classes)) * (1.0 / widths[-1]) ** 0.5).astype(np.float32)
        ),
        "b": jnp.asarray((rng.normal(size=(num_classes,)) * 0.05).astype(np.float32)),
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
    """The XLA backend compilations seen inside :func:`count_compiles`: ``n`` of them, and the
    name of each compiled program in ``names`` (``"jit(_run)"``, ``"jit(convert_element_type)"``
    for an eager operation...)."""

    def __init__(self):
        self.n = 0
        self.names: list[str] = []


_lock = threading.Lock()
_active: list[CompileCount] = []
_registered = False


def _listener(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        with _lock:
            for counter in _active:
                counter.n += 1
                counter.names.append(str(kwargs.get("fun_name", "?")))


@contextlib.contextmanager
def count_compiles() -> Iterator[CompileCount]:
    """Count XLA compilations (of anything, eager operations included) inside the block.

    Example:
      >>> double = jax.jit(lambda x: 2 * x)
      >>> a, b = np.ones(3, np.float32), np.full(3, 5.0, np.float32)  # NumPy: no device operation
      >>> _ = double(a)  # compiles
      >>> with count_compiles() as c:
      ...     _ = double(b)  # same shape, new values
      >>> c.n
      0
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


def _images(out):
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def check_technique_contract(run, targets_a, targets_b, *, independent=True, random=True, atol=1e-5):
    """Check the contract every technique passes: one compiled program, vmapped over targets.

    ``run(targets, key) -> images`` (or a tuple whose first element is the images), where
    ``targets`` is a pytree of arrays with a leading target axis. Checks that

    * the images are float32, finite, in [0, 1], one per target;
    * a second call with new targets of the same shapes compiles nothing;
    * the same key gives the same images, bit for bit;
    * (``independent``) changing one target leaves the other targets' images unchanged, so
      the batch really is a vmap over independent targets;
    * (``random``) another key gives other images.

    Returns:
      The images of the first call (NumPy).

    Example:
      A stand-in technique: one noisy image per target, the target shifting its brightness.

      >>> @jax.jit
      ... def run(targets, key):
      ...     noise = jax.random.normal(key, (len(targets), 8, 8, 3))
      ...     return jax.nn.sigmoid(noise + targets.reshape(-1, 1, 1, 1))
      >>> targets_a, targets_b = np.array([0.0, 1.0], np.float32), np.array([2.0, -1.0], np.float32)
      >>> check_technique_contract(run, targets_a, targets_b).shape
      (2, 8, 8, 3)
    """
    key0, key1 = jax.random.key(0), jax.random.key(1)
    n = len(jax.tree.leaves(targets_a)[0])
    a = _images(run(targets_a, key0))
    assert a.dtype == np.float32, a.dtype
    assert a.shape[0] == n, (a.shape, n)
    assert np.all(np.isfinite(a)), "non-finite images"
    assert a.min() >= 0.0 and a.max() <= 1.0, (a.min(), a.max())

    # New target values, same shapes: nothing compiles (inputs are built before counting).
    targets_b = jax.tree.map(jnp.asarray, targets_b)
    jax.block_until_ready(targets_b)
    with count_compiles() as compiles:
        b = _images(run(targets_b, key0))
    assert compiles.n == 0, f"a new target recompiled ({compiles.n} compilations)"
    assert not np.array_equal(a, b), "the targets do not change the result"

    again = _images(run(targets_a, key0))
    np.testing.assert_array_equal(a, again, err_msg="same key, different images")

    if random:
        other = _images(run(targets_a, key1))
        assert not np.array_equal(a, other), "the key does not change the result"

    if independent and n > 1:
        mixed = jax.tree.map(lambda x, y: jnp.asarray(x).at[0].set(jnp.asarray(y)[0]), targets_a, targets_b)
        m = _images(run(mixed, key0))
        np.testing.assert_allclose(m[1:], a[1:], atol=atol, err_msg="targets are coupled")
    return a
