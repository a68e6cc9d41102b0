"""The bundled FashionNet: its weights load and check, its recorded accuracy is real."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _arrays import uniform

import cnnjax
from cnnjax import data
from cnnjax.models._weights import weights_dir
from cnnjax.training import evaluate

REAL_FASHION_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


@pytest.fixture(scope="module")
def model():
    return cnnjax.load_model("fashionnet")


@pytest.fixture(scope="module")
def manifest():
    return json.loads((weights_dir() / "fashionnet.json").read_text())


def test_architecture_and_manifest(model, manifest):
    spec = model.spec
    assert spec.input_size == (28, 28) and spec.channels == 1 and spec.num_classes == 10
    assert spec.layer_names == ("input", "conv1", "conv2", "pool1", "conv3", "conv4", "pool2", "conv5",
                                "pooled", "logits")  # fmt: skip
    assert spec.layer("conv5").shape == (7, 7, 128) and spec.layer("pooled").shape == (128,)
    assert spec.class_name(9) == "Ankle boot"
    assert manifest["test_accuracy"] >= 0.92  # the target; published simple CNNs reach 0.91-0.93
    t = manifest["training"]
    assert {"config", "epochs_run", "best_epoch", "history"} <= set(t)
    assert t["config"]["seed"] == 0 and len(t["history"]) == t["epochs_run"]
    assert manifest["spec"]["value_mapping"]["computed_on"] == "the training split only"


def test_global_average_pooling_then_linear(model):
    """The logits are a linear function of the pooled conv5 features (what CAM needs)."""
    x = uniform(0, (3, 28, 28, 1))
    acts = model(x)
    pooled = acts["conv5"].mean(axis=(1, 2))
    np.testing.assert_allclose(acts["pooled"], pooled, rtol=1e-5, atol=1e-6)
    dense = model.params["dense"]
    logits = pooled @ dense["kernel"][...] + dense["bias"][...][None]
    np.testing.assert_allclose(acts["logits"], logits, rtol=1e-4, atol=1e-4)


def test_dropout_only_in_training_mode(model):
    x = uniform(1, (4, 28, 28, 1))
    a = model.train_apply(model.params, x, jax.random.key(0))
    b = model.train_apply(model.params, x, jax.random.key(1))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(model(x)["logits"], model(x)["logits"])


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="Fashion-MNIST files not beside the repository")
def test_recorded_test_accuracy_is_reproduced(model, manifest):
    _, test = data.load_fashion_mnist(REAL_FASHION_MNIST)
    loss, acc = evaluate(model, model.params, jnp.asarray(test.images), test.labels)
    assert abs(acc - manifest["test_accuracy"]) < 1e-4
    assert abs(loss - manifest["test_loss"]) < 1e-3


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="Fashion-MNIST files not beside the repository")
def test_class_detectors_emerge_with_depth(model):
    # Zhou et al.'s emergence claim in miniature: the deeper the layer, the more of its units'
    # top 9 test images are of one class. Measured 2026-12-03 on the first 5,000 test images: class
    # detectors (at least 90% one class) 0, 0, 4, 3, 51 of 32, 32, 64, 64, 128 units; mean share
    # 0.41, 0.44, 0.55, 0.60, 0.80 (on all 10,000, in twice the time: 0, 0, 3, 6, 47 detectors;
    # shares 0.41, 0.48, 0.56, 0.63, 0.81).
    from cnnjax.units import class_selectivity, top_images

    _, test = data.load_fashion_mnist(REAL_FASHION_MNIST)
    test = test.take(np.arange(5000))
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5"]
    sel = class_selectivity(top_images(model, test, layers, top_k=9, progress=False), test.labels)
    shares = [float(sel.purity[layer].mean()) for layer in layers]
    assert all(a < b for a, b in zip(shares, shares[1:])), shares
    assert sel.detectors["conv1"] == 0 and sel.detectors["conv5"] >= 30, sel.detectors


def test_fast_layers_and_training_steps_equal_reference_layers(model, monkeypatch):
    """FashionNet's max-pooling (a maximum over the reshaped windows with its own gradient, cheaper
    on CPU) against Flax's ``reduce_window`` one: the same values, the same gradients (ties
    included: the first maximum of a window takes it). Then a few training steps of the recipe
    on images with a blank background with its layers (``dense_conv``, ``max_pool_2x2``) and
    with the reference ones (patches for every convolution, Flax's pool): the same parameters
    (issue 17: results kept). ``dense_conv``'s own gradients: tests/test_conv.py."""
    import optax
    from flax import nnx

    from cnnjax.models import _fashionnet
    from cnnjax.training import TrainState, make_train_step
    from cnnjax.transforms import augmentation

    def flax_pool(h):
        return nnx.max_pool(h, window_shape=(2, 2), strides=(2, 2))

    h = jnp.asarray(uniform(2, (3, 7, 9, 4))).at[:, :4, :4].set(0.5)  # odd sizes (the last row and column
    # are dropped) and tied windows
    np.testing.assert_array_equal(_fashionnet.max_pool_2x2(h), flax_pool(h))
    cot = uniform(3, (3, 3, 4, 4))
    grads = [jax.vjp(pool, h)[1](cot)[0] for pool in (_fashionnet.max_pool_2x2, flax_pool)]
    np.testing.assert_array_equal(*grads)

    def train(steps=3):
        optimizer = optax.sgd(0.05, momentum=0.9)
        step = jax.jit(
            make_train_step(model, optimizer, l2=5e-5, augment=augmentation(flip=True, crop_pad=2))
        )
        state = TrainState(model.params, optimizer.init(model.params))
        x = jnp.pad(uniform(4, (16, 16, 16, 1)), ((0, 0), (6, 6), (6, 6), (0, 0)))  # blank borders
        y = jnp.arange(16) % 10
        for i in range(steps):
            state, _ = step(state, x, y, jax.random.key(i))
        return state.params

    ours = train()
    monkeypatch.setattr(_fashionnet, "max_pool_2x2", flax_pool)
    monkeypatch.setattr(
        _fashionnet, "dense_conv", lambda x, k, padding: _fashionnet.patch_conv(x, k, 1, padding)
    )
    theirs = train()
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours, theirs)
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), ours, model.params))
    assert max(changed) > 1e-3  # the steps did train
