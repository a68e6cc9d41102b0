"""FashionNet: a small CNN for 28x28 greyscale images that ends in global average pooling.

    conv3x3(32)-ReLU-conv3x3(32)-ReLU-maxpool2
    conv3x3(64)-ReLU-conv3x3(64)-ReLU-maxpool2
    conv3x3(128)-ReLU - global average pooling - dropout 0.5 - dense(10)

Global average pooling followed by one linear layer is what class activation maps need
(Zhou et al. 2016). Named activations: ``input``, ``conv1`` ... ``conv5`` (after ReLU),
``pool1``, ``pool2``, ``pooled`` (128), ``logits`` (10).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax._src.contract import Model, ValueMapping
from cnnjax._src.conv import dense_conv, patch_conv
from cnnjax.models._adapters import Tape, from_nnx, record

__all__ = ["FashionNet", "FASHION_CLASSES", "dropout", "fashionnet_model", "max_pool_2x2"]

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip


def dropout(key: jax.Array | None, h: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout with an explicit key; the identity when ``key`` is None (evaluation)."""
    if key is None or rate == 0.0:
        return h
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    return jnp.where(keep, h / (1.0 - rate), 0.0)


class Conv3x3(nnx.Module):
    """A 3x3, stride 1, SAME convolution with bias.

    :func:`~cnnjax.models.dense_conv` (XLA's convolution with gradients that stay fast inside
    ``fit``'s ``lax.scan``) from 8 input channels up, patches times a matrix below (the first
    layer's single channel). Whole training step at batch 128 against patches everywhere (AMD
    EPYC, 2026-12-03): 0.1638 s against 0.2518 s jitted, 0.1284 s against 0.1639 s per step in
    a scan; with ``dense_conv`` in the first layer too, 0.1732 s and 0.1485 s.
    """

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        fan_in = 9 * cin
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (3, 3, cin, cout)) * (2.0 / fan_in) ** 0.5)
        self.bias = nnx.Param(jnp.zeros((cout,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        y = patch_conv(x, kernel, 1, "SAME") if kernel.shape[2] < 8 else dense_conv(x, kernel, "SAME")
        return y + self.bias[...].reshape(1, 1, 1, -1)


def _windows(h: jax.Array) -> jax.Array:
    """The 2x2 windows of stride 2 (VALID: an odd last row or column dropped) as ``[n, h/2, w/2,
    4, c]``, each window's elements in row-major order."""
    n, height, width, c = h.shape
    h = h[:, : height // 2 * 2, : width // 2 * 2].reshape(n, height // 2, 2, width // 2, 2, c)
    return h.transpose(0, 1, 3, 2, 4, 5).reshape(n, height // 2, width // 2, 4, c)


def max_pool_2x2(h: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2 (VALID), as ``nnx.max_pool(h, (2, 2), strides=(2, 2))``.

    Flax's ``reduce_window`` differentiates into XLA's select-and-scatter, slow on CPU (the first
    pool's forward and gradient alone took 53 ms at batch 128, against about 0.27 s for a whole
    FashionNet training step). Here each window's first maximum in row-major order is picked by
    a mask (constant under differentiation) and the window summed through it: the same value,
    and the gradient goes through an elementwise mask to that first maximum, as
    select-and-scatter's does (ties are common: a blank background gives equal activations).
    Plain differentiable operations, not a custom VJP, so that XLA shares the forward pass of a
    differentiated step with an undifferentiated one of the same batch (the instruments' dead
    units). Measured on the whole training step (AMD EPYC, 2 cores, alternating with Flax's
    pool, two rounds): 0.2724 and 0.2719 s against 0.301 and 0.3232 s for the jitted step,
    0.1764 and 0.1716 s against 0.212 and 0.1784 s per step inside ``fit``'s ``lax.scan``. The
    cost: the forward pass alone is slower than Flax's (8.52 against 1.24 ms for the first pool
    at batch 128; a custom JVP or VJP kept it at Flax's speed, but XLA then computed the
    instruments' forward pass a second time).
    """
    windows = _windows(h)
    top = jnp.max(windows, axis=3, keepdims=True)
    first = jnp.argmax(windows == top, axis=3)[:, :, :, None]  # [n, h/2, w/2, 1, c]
    pick = jax.lax.stop_gradient(first == jnp.arange(4).reshape(1, 1, 1, 4, 1))
    return jnp.sum(jnp.where(pick, windows, 0.0), axis=3)


class FashionNet(nnx.Module):
    """The FashionNet CNN as a Flax NNX module.

    ``forward(x, tap, dropout_key=None)`` is the network on inputs already normalised (the
    spec's value mapping); dropout is active only when a key is given.
    ``__call__(images, *, perturb=None)`` takes [0, 1] images ``[n, 28, 28, 1]`` and returns the
    named activations (evaluation mode).

    Args:
      rngs: random initialisation.
      value_mapping: the normalisation of [0, 1] inputs (training-set mean and std).
      num_classes: outputs (10).
      channels: input channels (1).
      dropout_rate: before the classifier (0.5).
      widths: channels of the five convolutions (a narrower network for comparisons).
    """

    def __init__(self, *, rngs: nnx.Rngs, value_mapping: ValueMapping = ValueMapping(),
                 num_classes: int = 10, channels: int = 1, dropout_rate: float = 0.5,
                 widths: tuple[int, int, int, int, int] = (32, 32, 64, 64, 128)):  # fmt: skip
        if len(widths) != 5:
            raise ValueError(f"widths: FashionNet has 5 convolutions, got {len(widths)} widths")
        chain = (channels, *widths)
        self.convs = nnx.List([Conv3x3(a, b, rngs=rngs) for a, b in zip(chain, chain[1:])])
        self.dense = nnx.Linear(widths[-1], num_classes, rngs=rngs)
        self.value_mapping = value_mapping
        self.dropout_rate = dropout_rate

    def forward(self, x: jax.Array, tap: Tape, dropout_key: jax.Array | None = None) -> jax.Array:
        h = x
        # Named scopes name each layer's operations in compiled programs and profiles
        # ("jvp(conv2)" forward, "transpose(jvp(conv2))" its gradients).
        for i, conv in enumerate(self.convs):
            with jax.named_scope(f"conv{i + 1}"):
                h = tap(f"conv{i + 1}", jax.nn.relu(conv(h)))
            if i in (1, 3):
                with jax.named_scope(f"pool{(i + 1) // 2}"):
                    h = tap(f"pool{(i + 1) // 2}", max_pool_2x2(h))
        with jax.named_scope("head"):
            h = tap("pooled", jnp.mean(h, axis=(1, 2)))
            return self.dense(dropout(dropout_key, h, self.dropout_rate))

    def __call__(self, images: jax.Array, *, perturb=None):
        return record(self.forward, images, self.value_mapping, perturb)


def fashionnet_model(module: FashionNet) -> Model:
    """Wrap a FashionNet module (its value mapping included) as a :class:`~cnnjax.Model`."""
    return from_nnx(module, name="fashionnet", input_size=28, channels=1,
                    value_mapping=module.value_mapping, class_names=FASHION_CLASSES)  # fmt: skip
