"""Mixed precision (issue 15): a model computing in bfloat16 gives attacks and class
visualisations of the same quality as float32, judged by the float32 model."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import data
from cnnjax.attacks import fooling_images, pgd
from cnnjax.models import classify, load_model
from cnnjax.testing import tiny_cnn

REAL_FASHION_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def test_a_bfloat16_model_computes_in_bfloat16_and_answers_in_float32():
    model = tiny_cnn()
    low = model.astype(jnp.bfloat16)
    assert model.astype(None) is model and model.astype("float32") is model
    assert {leaf.dtype for leaf in jax.tree.leaves(low.params)} == {jnp.dtype(jnp.bfloat16)}
    images = np.random.default_rng(0).random((4, 32, 32, 3), np.float32)
    ref, got = model.apply(model.params, images), low.apply(low.params, images)
    for layer in ("conv2", "logits"):
        assert got[layer].dtype == jnp.float32
        scale = float(jnp.abs(ref[layer]).max())
        err = float(jnp.abs(got[layer] - ref[layer]).max())
        # bfloat16 keeps 8 significant bits: errors of a few 2^-8 of the scale, not zero.
        assert 0 < err < 0.05 * scale, (layer, err, scale)
    for bad in ("int8", "float64", jnp.complex64, "half-ish"):
        with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16"):
            pgd(model, images, eps=2 / 255, dtype=bad)


def test_bfloat16_fooling_images_are_recognised_by_the_float32_fashionnet():
    model = load_model("fashionnet")
    fool = fooling_images(model, list(range(10)), steps=20, dtype=jnp.bfloat16)
    assert fool.images.dtype == jnp.float32
    probs, classes = classify(model, fool.images)
    np.testing.assert_array_equal(np.asarray(classes[:, 0]), np.arange(10))
    assert float(jnp.median(probs[:, 0])) > 0.8
    # The confidence the bfloat16 run reports is the float32 model's, to bfloat16's precision.
    np.testing.assert_allclose(np.asarray(fool.confidence), np.asarray(probs[:, 0]), atol=0.03)


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="Fashion-MNIST files not beside the repository")
def test_bfloat16_pgd_reaches_the_same_top1_as_float32_on_real_images():
    model = load_model("fashionnet")
    test = data.load_fashion_mnist(REAL_FASHION_MNIST, progress=False)[1]
    images, labels = test.images[:32], test.labels[:32]
    full, low = (
        pgd(model, images, labels, eps=8 / 255, steps=5, key=0, dtype=d) for d in (None, jnp.bfloat16)
    )
    top1 = [np.asarray(classify(model, r.images).classes[:, 0]) for r in (full, low)]
    assert np.mean(top1[0] != labels) > 0.3  # the attack works at all
    assert np.mean(top1[0] == top1[1]) >= 0.9, (top1, labels)
