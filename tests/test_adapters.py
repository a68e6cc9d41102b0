"""One small CNN written three ways (plain function, NNX module, Linen module) gives the same
activations and the same activation gradients through the contract."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _arrays import normal, uniform
from flax import nnx

import cnnjax
from cnnjax import ValueMapping

MAPPING = ValueMapping(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
LAYERS = ("input", "conv1", "conv2", "dense", "logits")


def make_weights(seed):
    return {
        "conv1": {"kernel": normal(seed, (3, 3, 3, 8), 0.3), "bias": jnp.full((8,), 0.1)},
        "conv2": {"kernel": normal(seed + 1, (3, 3, 8, 16), 0.2), "bias": jnp.full((16,), -0.05)},
        "dense": {"kernel": normal(seed + 2, (16, 5), 0.3), "bias": jnp.arange(5.0) * 0.01},
    }


def conv(x, p, stride):
    y = jax.lax.conv_general_dilated(x, p["kernel"], (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    return y + p["bias"].reshape(1, 1, 1, -1)


# -- 1. plain function ------------------------------------------------------------------------
def fn(params, x, tap):
    h = tap("conv1", conv(x, params["conv1"], 1))
    h = tap("conv2", conv(jax.nn.relu(h), params["conv2"], 2))
    h = jax.nn.relu(h).mean(axis=(1, 2))
    return tap("dense", h @ params["dense"]["kernel"] + params["dense"]["bias"][None])


# -- 2. NNX module (tap form) -----------------------------------------------------------------
class NnxCNN(nnx.Module):
    def __init__(self, w, *, rngs):
        self.conv1 = nnx.Conv(3, 8, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.dense = nnx.Linear(16, 5, rngs=rngs)
        for name in ("conv1", "conv2", "dense"):
            getattr(self, name).kernel[...] = w[name]["kernel"]
            getattr(self, name).bias[...] = w[name]["bias"]

    def __call__(self, x, tap):
        h = tap("conv1", self.conv1(x))
        h = tap("conv2", self.conv2(jax.nn.relu(h)))
        return tap("dense", self.dense(jax.nn.relu(h).mean(axis=(1, 2))))


# -- 3. Linen module (unmodified: no tap, no perturb) ------------------------------------------
class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Conv(8, (3, 3), padding="SAME", name="conv1")(x)
        h = nn.Conv(16, (3, 3), strides=2, padding="SAME", name="conv2")(nn.relu(h))
        return nn.Dense(5, name="dense")(nn.relu(h).mean(axis=(1, 2)))


def three_models():
    w = make_weights(0)
    kw = dict(name="tiny", input_size=12, value_mapping=MAPPING)
    return {
        "function": cnnjax.from_function(fn, w, **kw),
        "nnx": cnnjax.from_nnx(NnxCNN(w, rngs=nnx.Rngs(0)), **kw),
        "linen": cnnjax.from_linen(LinenCNN(), {"params": w}, **kw),
    }


@pytest.fixture(scope="module")
def models():
    return three_models()


@pytest.fixture(scope="module")
def images():
    return uniform(1, (2, 12, 12, 3))


def test_specs_agree(models):
    for kind, model in models.items():
        assert model.spec.layer_names == LAYERS, kind
        assert model.spec.layer("conv2").shape == (6, 6, 16)
        assert model.spec.layer("conv2").stride == 2
        assert model.spec.layer("dense").shape == (5,)
        assert model.spec.num_classes == 5


def test_activations_agree(models, images):
    ref = models["function"](images)
    # The value mapping is applied once, by the adapter: conv1 sees (x - mean) / std.
    expected_conv1 = conv((images - jnp.array([[[MAPPING.mean]]])) / jnp.array([[[MAPPING.std]]]),
                          make_weights(0)["conv1"], 1)  # fmt: skip
    np.testing.assert_allclose(ref["conv1"], expected_conv1, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ref["input"], images)
    for kind in ("nnx", "linen"):
        acts = models[kind](images)
        for name in LAYERS:
            np.testing.assert_allclose(acts[name], ref[name], rtol=1e-5, atol=1e-5, err_msg=f"{kind} {name}")


@pytest.mark.parametrize("layer", ["input", "conv1", "conv2", "dense"])
def test_activation_gradients_agree(models, images, layer):
    """d(logit 3)/d(activation) through ``perturb`` is the same for all three models."""
    grads = {}
    for kind, model in models.items():
        shape = model(images)[layer].shape

        def score(delta, model=model):
            return model(images, perturb={layer: delta})["logits"][:, 3].sum()

        grads[kind] = jax.grad(score)(jnp.zeros(shape))
    assert float(jnp.abs(grads["function"]).max()) > 0
    for kind in ("nnx", "linen"):
        np.testing.assert_allclose(grads[kind], grads["function"], rtol=1e-4, atol=1e-6, err_msg=kind)


def test_perturbation_is_added_downstream(models, images):
    """A perturbation changes the layer's recorded value and everything after it."""
    for kind, model in models.items():
        base = model(images)
        delta = jnp.full(base["conv2"].shape, 0.5)
        out = model(images, perturb={"conv2": delta})
        np.testing.assert_allclose(out["conv2"], base["conv2"] + 0.5, rtol=1e-5, atol=1e-5, err_msg=kind)
        np.testing.assert_allclose(out["conv1"], base["conv1"], err_msg=kind)
        assert not np.allclose(out["logits"], base["logits"]), kind


def test_input_gradient_matches_finite_differences(models, images):
    model = models["nnx"]
    f = lambda x: model(x)["logits"][0, 1]  # noqa: E731
    g = jax.grad(f)(images)
    direction = normal(2, images.shape)
    direction /= np.linalg.norm(direction)  # a unit step: small enough to cross no ReLU kink
    eps = 1e-3
    fd = (f(images + eps * direction) - f(images - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(g, direction), fd, rtol=2e-2)


def test_apply_is_pure_and_jittable(models, images):
    for kind, model in models.items():
        jitted = jax.jit(model.apply)
        assert tuple(jitted(model.params, images)) == LAYERS, "forward order survives jit"
        np.testing.assert_allclose(jitted(model.params, images)["logits"], model(images)["logits"],
                                   rtol=1e-5, atol=1e-6, err_msg=kind)  # fmt: skip
        # Gradient with respect to the parameters flows through every adapter.
        g = jax.grad(lambda p, m=model: m.apply(p, images)["logits"].sum())(model.params)
        assert any(float(jnp.abs(leaf).sum()) > 0 for leaf in jax.tree.leaves(g)), kind


def test_unknown_perturb_layer_lists_valid_layers(models, images):
    for model in models.values():
        with pytest.raises(ValueError, match=r"unknown layer 'conv3'.*Valid layers: input, conv1, conv2"):
            model(images, perturb={"conv3": jnp.zeros(())})


def test_wrong_perturbation_shape(models, images):
    with pytest.raises(ValueError, match="does not broadcast"):
        models["function"](images, perturb={"conv1": jnp.zeros((3, 7))})


def test_nnx_adapter_needs_tap_form():
    class Plain(nnx.Module):
        def __call__(self, x):
            return x

    with pytest.raises(ValueError, match=r"must take \(x, tap\)"):
        cnnjax.from_nnx(Plain(), name="plain", input_size=8)
    with pytest.raises(ValueError, match="expects a flax.nnx.Module"):
        cnnjax.from_nnx(lambda x, tap: x, name="x", input_size=8)
    with pytest.raises(ValueError, match="expects a flax.linen.Module"):
        cnnjax.from_linen(object(), {}, name="x", input_size=8)
