"""The test helpers themselves: the tiny CNN and the compile counter."""

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.testing import TINY_LAYERS, count_compiles, tiny_cnn


def test_tiny_cnn_layers_and_shapes():
    model = tiny_cnn(num_classes=7)
    assert model.spec.layer_names == TINY_LAYERS
    assert model.spec.layer("conv2").shape == (16, 16, 16) and model.spec.layer("conv2").stride == 2
    acts = jax.jit(model.apply)(model.params, jnp.full((2, 32, 32, 3), 0.5))
    assert acts["logits"].shape == (2, 7)
    # Global average pooling then a linear layer: the logits are the dense layer of "pooled".
    dense = model.params["dense"]
    np.testing.assert_allclose(
        acts["logits"], acts["pooled"] @ dense["w"] + dense["b"][None], rtol=1e-5, atol=1e-6
    )


def test_count_compiles_sees_new_shapes_only():
    f = jax.jit(lambda x: jnp.sin(x) * 2)
    a, b, c = jnp.ones(3), jnp.zeros(3), jnp.ones(4)
    f(a)
    with count_compiles() as same:
        f(b)
    with count_compiles() as new:
        f(c)
    assert same.n == 0 and new.n == 1
