"""depthwise_conv: the shifted-multiply version equals XLA's grouped convolution."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _arrays import normal

from cnnjax._src.depthwise import depthwise_conv


@functools.cache
def _noise():
    """One batch of jax.random normals; tests slice it (numpy) to avoid a compile per shape."""
    return np.asarray(normal(0, (3, 4096)))


def _rand(shape, which):
    size = math.prod(shape)
    return jnp.asarray(_noise()[which, :size].reshape(shape))


def _data(n, h, w, c, k):
    return _rand((n, h, w, c), 0), _rand((k, k, 1, c), 1)


def _reference(x, kernel, stride, padding):
    """XLA's grouped convolution, padding passed straight to lax (it resolves "SAME" itself)."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1],
    )


def _assert_close(actual, expected):
    """float32 tolerance relative to the scale of ``expected``."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(
    "n, h, w, c, k, stride, padding",
    [
        (2, 9, 10, 4, 3, 1, "SAME"),  # odd and even sizes
        (2, 9, 9, 5, 3, 2, "SAME"),
        (2, 10, 10, 5, 3, 2, "SAME"),
        (4, 10, 9, 6, 5, 1, "SAME"),  # n=4: the kernel-gradient scan runs over 2 chunks
        (2, 9, 9, 8, 5, 2, "SAME"),
        (3, 10, 10, 8, 5, 2, "SAME"),
        (2, 9, 10, 4, 3, 1, "VALID"),
        (2, 10, 10, 4, 5, 2, "VALID"),
        (2, 9, 9, 4, 3, 2, ((1, 2), (0, 3))),
        (2, 10, 9, 4, 5, 1, ((2, 0), (1, 1))),
        (2, 7, 8, 3, 4, 3, "SAME"),  # even kernel, stride 3
        (2, 5, 5, 3, 1, 2, "SAME"),  # 1x1 kernel
    ],
)
def test_forward_and_gradients_match_xla(n, h, w, c, k, stride, padding):
    x, kernel = _data(n, h, w, c, k)
    conv = functools.partial(depthwise_conv, stride=stride, padding=padding)
    ct = _rand(jax.eval_shape(lambda: _reference(x, kernel, stride, padding)).shape, 2)

    @jax.jit
    def both(x, kernel, ct):
        def value_and_grads(f):
            loss = lambda x, k: jnp.vdot(f(x, k), ct)  # noqa: E731
            return (f(x, kernel), *jax.grad(loss, (0, 1))(x, kernel))

        ref = functools.partial(_reference, stride=stride, padding=padding)
        shift = functools.partial(conv, impl="shift")
        return value_and_grads(shift), value_and_grads(ref), conv(x, kernel, impl="xla")

    got, want, via_xla = both(x, kernel, ct)
    for name, a, b in zip(("y", "dx", "dkernel"), got, want):
        assert a.shape == b.shape, name
        _assert_close(a, b)
    _assert_close(via_xla, want[0])


def test_vmap_and_jit():
    xs, kernel = _data(3, 9, 9, 4, 3)
    xs = jnp.stack([xs, 2.0 * xs])  # [2, 3, 9, 9, 4]: vmap over the leading axis

    def per_example(impl):
        def f(x, k):
            loss = lambda x, k: jnp.sum(depthwise_conv(x, k, 2, impl=impl) ** 2)  # noqa: E731
            return depthwise_conv(x, k, 2, impl=impl), jax.grad(loss, (0, 1))(x, k)

        return jax.jit(jax.vmap(f, in_axes=(0, None)))

    got, want = per_example("shift")(xs, kernel), per_example("xla")(xs, kernel)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        _assert_close(a, b)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="auto picks 'shift' only on CPU")
def test_auto_uses_shift_on_cpu():
    x, kernel = _data(1, 6, 6, 2, 3)
    jaxpr = str(jax.make_jaxpr(lambda x, k: depthwise_conv(x, k))(x, kernel))
    assert "custom_vjp_call" in jaxpr and "conv_general_dilated" not in jaxpr


@pytest.mark.parametrize(
    "x_shape, k_shape, kwargs, match",
    [
        ((9, 9, 4), (3, 3, 1, 4), {}, "x must be rank 4"),
        ((1, 9, 9, 4), (3, 3, 4), {}, "kernel must be rank 4"),
        ((1, 9, 9, 4), (3, 3, 4, 4), {}, "input-feature dim 1"),
        ((1, 9, 9, 4), (3, 3, 1, 5), {}, "5 output channels but x has 4"),
        ((1, 9, 9, 4), (3, 3, 1, 4), {"stride": 0}, "stride must be an int >= 1"),
        ((1, 9, 9, 4), (3, 3, 1, 4), {"stride": 1.5}, "stride must be an int >= 1"),
        ((1, 9, 9, 4), (3, 3, 1, 4), {"padding": "FULL"}, "padding must be 'SAME', 'VALID'"),
        ((1, 9, 9, 4), (3, 3, 1, 4), {"padding": ((1, 1),)}, "padding must be"),
        ((1, 9, 9, 4), (3, 3, 1, 4), {"padding": ((-1, 1), (1, 1))}, "non-negative"),
        ((1, 2, 2, 4), (3, 3, 1, 4), {"padding": "VALID"}, "smaller than kernel"),
        ((1, 9, 9, 4), (3, 3, 1, 4), {"impl": "cuda"}, "impl must be one of"),
    ],
)
def test_bad_input_raises(x_shape, k_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        depthwise_conv(jnp.zeros(x_shape), jnp.zeros(k_shape), **kwargs)


def test_dtype_mismatch_raises():
    with pytest.raises(ValueError, match="float dtype"):
        depthwise_conv(jnp.zeros((1, 5, 5, 2)), jnp.zeros((3, 3, 1, 2), jnp.int32))
