"""The dense convolutions (patches, XLA's with canonical gradients) and the output-masked ReLU6
equal their XLA references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _arrays import normal, uniform

from cnnjax._src.conv import dense_conv, patch_conv
from cnnjax.models._efficientnet import _relu6


@pytest.mark.parametrize("stride, padding, hw", [(2, "SAME", 11), (2, "SAME", 12), (1, "SAME", 9),
                                                 (1, "VALID", 9), (2, ((1, 0), (0, 2)), 10)])  # fmt: skip
def test_patch_conv_equals_xla(stride, padding, hw):
    x, k = normal(0, (2, hw, hw, 3)), normal(1, (3, 3, 3, 5))

    def ref(x, k):
        return jax.lax.conv_general_dilated(x, k, (stride, stride), padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip

    # Jitted: op by op, every slice and product would compile a program of its own.
    y, y_ref = jax.jit(lambda x, k: (patch_conv(x, k, stride, padding), ref(x, k)))(x, k)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    g = normal(2, y.shape)
    grads, grads_ref = jax.jit(lambda x, k: (
        jax.grad(lambda x, k: jnp.vdot(patch_conv(x, k, stride, padding), g), (0, 1))(x, k),
        jax.grad(lambda x, k: jnp.vdot(ref(x, k), g), (0, 1))(x, k),
    ))(x, k)  # fmt: skip
    for a, b in zip(grads, grads_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding, kernel", [("SAME", (3, 3)), ("VALID", (3, 2)), (((0, 2), (1, 0)), (3, 3)),
                                             ("SAME", (5, 5)), ("SAME", (1, 1))])  # fmt: skip
def test_dense_conv_values_and_gradients_equal_xla(padding, kernel):
    x, k = normal(0, (3, 9, 7, 4)), normal(1, (*kernel, 4, 5))

    def ref(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    y, y_ref = jax.jit(lambda x, k: (dense_conv(x, k, padding), ref(x, k)))(x, k)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    g = normal(2, y.shape)

    def both_grads(conv):
        return jax.grad(lambda x, k: jnp.vdot(jnp.sin(conv(x, k)), g), (0, 1))

    # Inside a scan (the loop body where XLA's own gradients are slow) and vmapped over images.
    def scanned(x, k):
        return jax.lax.scan(lambda c, _: (c, both_grads(lambda x, k: dense_conv(x, k, padding))(x, k)),
                            0, None, length=2)[1]  # fmt: skip

    grads, grads_ref = jax.jit(lambda x, k: (scanned(x, k), both_grads(ref)(x, k)))(x, k)
    for a, b in zip(grads, grads_ref):
        np.testing.assert_allclose(a[1], b, rtol=1e-4, atol=1e-4)
    per_image = jax.jit(jax.vmap(lambda x: dense_conv(x[None], k, padding)[0]))(x)
    np.testing.assert_allclose(per_image, y_ref, rtol=1e-5, atol=1e-5)


def test_dense_conv_refuses_padding_beyond_the_kernel():
    with pytest.raises(ValueError, match="exceeds kernel size - 1"):
        dense_conv(jnp.zeros((1, 8, 8, 3)), jnp.zeros((3, 3, 3, 5)), ((3, 0), (0, 0)))
    with pytest.raises(ValueError, match=r"x must be \[n, h, w, 3\]"):
        dense_conv(jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 3, 5)))


def test_patch_conv_refuses_mismatched_channels():
    with pytest.raises(ValueError, match=r"x must be \[n, h, w, 3\]"):
        patch_conv(jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 3, 5)))


def test_relu6_gradient_equals_clip_gradient():
    x = uniform(1, (1000,), -3.0, 9.0)
    np.testing.assert_array_equal(_relu6(x), jnp.clip(x, 0.0, 6.0))
    g = jax.grad(lambda x: jnp.sum(_relu6(x) * jnp.arange(1000.0)))(x)
    g_ref = jax.grad(lambda x: jnp.sum(jnp.clip(x, 0.0, 6.0) * jnp.arange(1000.0)))(x)
    np.testing.assert_array_equal(g, g_ref)
    assert 0 < int(jnp.sum(g != 0)) < 1000
