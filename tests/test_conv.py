"""The dense patch convolution and the output-masked ReLU6 equal their XLA references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _arrays import normal, uniform

from cnnjax._src.conv import patch_conv
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
