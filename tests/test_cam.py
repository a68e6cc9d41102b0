"""The CAM family on tiny networks: the CAM identity, Grad-CAM = CAM on a GAP network, closed forms
of Grad-CAM++ and Layer-CAM there, Score-CAM against a loop over channels, upsampling, the
technique contract, differentiability and refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _arrays import normal, uniform

import cnnjax
from cnnjax import receptive_field as rf
from cnnjax.testing import check_technique_contract, count_compiles, tiny_cnn


@pytest.fixture(scope="module")
def tiny():
    return tiny_cnn(num_classes=6)


@pytest.fixture(scope="module")
def images():
    return uniform(3, (2, 32, 32, 3))


@pytest.fixture(scope="module")
def features(tiny, images):
    acts = jax.jit(tiny.apply)(tiny.params, images)
    return np.asarray(acts["conv3"], np.float64), np.asarray(acts["logits"], np.float64)


def test_cam_head_is_found_from_the_model_and_the_identity_holds(tiny, images, features):
    head = cnnjax.saliency.cam_head(tiny)
    # Read off the model's behaviour, yet equal to the dense layer's parameters.
    np.testing.assert_allclose(head.weights, tiny.params["dense"]["w"], atol=1e-6)
    np.testing.assert_allclose(head.bias, tiny.params["dense"]["b"], atol=1e-6)
    maps = cnnjax.cam(tiny, images)  # all classes, one einsum
    assert maps.shape == (2, 6, 16, 16) and maps.dtype == jnp.float32
    f, logits = features
    np.testing.assert_allclose(
        maps, np.einsum("nhwk,kc->nchw", f, np.asarray(head.weights)), rtol=1e-5, atol=1e-6
    )
    # S_c = mean_{x,y} M_c(x, y) + b_c, to 1e-5.
    np.testing.assert_allclose(np.asarray(maps).mean((2, 3)) + np.asarray(head.bias)[None], logits, atol=1e-5)
    picked = cnnjax.cam(tiny, images, [4, 1])
    np.testing.assert_allclose(picked, np.asarray(maps)[:, [4, 1]], atol=1e-6)


def test_grad_cam_equals_cam_up_to_a_positive_scale_on_a_gap_network(tiny, images):
    maps = np.asarray(cnnjax.cam(tiny, images))
    g = np.asarray(cnnjax.grad_cam(tiny, images))
    np.testing.assert_allclose(g, np.maximum(maps, 0) / (16 * 16), rtol=1e-4, atol=1e-7)
    assert g.max() > 0


def test_grad_cam_plus_plus_and_layer_cam_closed_forms_on_a_gap_network(tiny, images, features):
    """dS_c/dA_k(i, j) = w_kc / (hw) everywhere, so the published formulas reduce to sums."""
    f, _ = features
    w = np.asarray(tiny.params["dense"]["w"], np.float64)
    hw = f.shape[1] * f.shape[2]
    c = np.array([[0, 5], [3, 3]])
    pp = np.asarray(cnnjax.saliency.grad_cam_plus_plus(tiny, images, c))
    lc = np.asarray(cnnjax.saliency.layer_cam(tiny, images, c))
    for n in range(2):
        for t in range(2):
            g = w[:, c[n, t]] / hw  # [k]
            denom = 2 * g**2 + f[n].sum((0, 1)) * g**3
            alpha = np.where(denom != 0, g**2 / np.where(denom != 0, denom, 1), 0)
            weights = hw * alpha * np.maximum(g, 0)
            np.testing.assert_allclose(pp[n, t], np.maximum(f[n] @ weights, 0), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(lc[n, t], np.maximum(f[n] @ np.maximum(g, 0), 0), rtol=1e-4, atol=1e-7)


def test_score_cam_against_a_loop_over_channels(tiny, images, features):
    f, _ = features
    field = rf.theoretical(tiny)["conv3"]
    ys, xs = field.centres
    forward = jax.jit(lambda x: jax.nn.softmax(tiny(x)["logits"], axis=-1))
    classes = np.array([[2], [4]])
    got = np.asarray(cnnjax.saliency.score_cam(tiny, images, classes, chunk_size=5))
    for n in range(2):
        weights = np.zeros(f.shape[-1])
        for k in range(f.shape[-1]):
            # Upsampled with numpy's own interpolation between the fields' centres.
            up = np.stack([np.interp(np.arange(32), xs, row) for row in f[n, :, :, k]])
            up = np.stack([np.interp(np.arange(32), ys, col) for col in up.T], axis=1)
            if up.max() == up.min():
                continue
            mask = ((up - up.min()) / (up.max() - up.min()))[None, :, :, None]
            weights[k] = forward(jnp.asarray(images[n : n + 1] * mask, jnp.float32))[0, classes[n, 0]]
        np.testing.assert_allclose(got[n, 0], np.maximum(f[n] @ weights, 0), rtol=1e-4, atol=1e-6)


def test_upsampling_is_bilinear_or_at_the_fields_centres(tiny, images):
    m = normal(0, (2, 3, 7, 5))
    resized = jax.image.resize(m, (2, 3, 28, 20), "linear")
    np.testing.assert_allclose(cnnjax.saliency.upsample_maps(m, (28, 20)), resized,
                               atol=1e-5)  # fmt: skip
    # At the fields' centres, each activation lands exactly on its centre pixel (stride 2,
    # centres 1, 3, 5, ...: XLA's SAME pads the extra pixel at the bottom/right).
    maps = np.asarray(cnnjax.cam(tiny, images, 0))
    up = np.asarray(cnnjax.cam(tiny, images, 0, upsample=True))
    assert up.shape == (2, 1, 32, 32)
    np.testing.assert_allclose(up[:, :, 1::2, 1::2], maps, rtol=1e-5, atol=1e-6)


def test_classes_and_per_image_targets(tiny, images):
    all_maps = np.asarray(cnnjax.grad_cam(tiny, images))
    per_image = np.asarray(cnnjax.grad_cam(tiny, images, np.array([[5], [2]])))
    np.testing.assert_allclose(per_image[:, 0], all_maps[[0, 1], [5, 2]], atol=1e-7)
    one = np.asarray(cnnjax.grad_cam(tiny, images, "class_3"))
    np.testing.assert_allclose(one[:, 0], all_maps[:, 3], atol=1e-7)


def test_grad_cam_passes_the_technique_contract(tiny, images):
    """Targets are classes: vmapped in one compiled call, no recompile, independent targets."""
    x = images[:1]

    def run(classes, key):
        maps = np.asarray(cnnjax.grad_cam(tiny, x, np.asarray(classes)[None]))[0]
        return maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)

    check_technique_contract(run, jnp.array([0, 1, 2]), jnp.array([3, 4, 5]), random=False)
    cnnjax.saliency.layer_cam(tiny, x, [0, 1, 2])
    cnnjax.cam(tiny, x, [0, 1, 2])  # its first call finds the model's head (cached per model)
    with count_compiles() as compiles:
        cnnjax.saliency.layer_cam(tiny, x, [5, 4, 3])
        cnnjax.cam(tiny, x, [5, 4, 3])
    assert compiles.n == 0  # other classes: nothing compiled (this test alone failed before:
    # it counted cam's head search when no earlier test in its worker had run cam)


def test_maps_are_differentiable_jax_arrays(tiny, images):
    x = 0.25 + 0.5 * images[:1]  # finite differences stay inside [0, 1]
    direction = normal(9, x.shape)
    direction = direction / jnp.linalg.norm(direction)  # small per-pixel steps: no ReLU kink crossed

    def total(img):
        return jnp.sum(cnnjax.grad_cam(tiny, img, [1, 4]) ** 2)

    grad = jax.grad(total)(x)
    assert isinstance(grad, jax.Array) and bool(jnp.all(jnp.isfinite(grad)))
    eps = 1e-2
    fd = (total(x + eps * direction) - total(x - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(grad, direction)), float(fd), rtol=2e-2)
    # A CAM sums to hw (S_c - b_c), so its gradient is hw times the logit's.
    g_cam = jax.grad(lambda img: jnp.sum(cnnjax.cam(tiny, img, 2)))(x)
    g_logit = jax.grad(lambda img: tiny(img)["logits"][0, 2])(x)
    np.testing.assert_allclose(g_cam, 256 * g_logit, rtol=1e-4, atol=1e-6)


def _not_gap_model(kind):
    """A network whose logits are not an affine function of a global average."""
    w = normal(0, (3, 3, 3, 4)) * 0.3
    dense = normal(1, (4 * 8 * 8 if kind == "flatten" else 4, 5))

    def forward(p, x, tap):
        h = tap(
            "conv",
            jax.nn.relu(
                jax.lax.conv_general_dilated(
                    x, p[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                )
            ),
        )
        if kind == "flatten":
            return h.reshape(h.shape[0], -1) @ p[1]
        if kind == "max":
            return jnp.max(h, axis=(1, 2)) @ p[1]
        return jax.nn.relu(jnp.mean(h, axis=(1, 2)) @ p[1])  # a non-linearity after the linear layer

    return cnnjax.from_function(forward, (w, dense), name=f"no_gap_{kind}", input_size=8)


@pytest.mark.parametrize("kind", ["flatten", "max", "relu"])
def test_cam_refuses_models_without_global_average_pooling(kind):
    model = _not_gap_model(kind)
    x = uniform(0, (1, 8, 8, 3))
    with pytest.raises(ValueError, match="global average pooling.*Grad-CAM applies"):
        cnnjax.cam(model, x)
    if kind == "flatten":
        assert cnnjax.grad_cam(model, x, 0).shape == (1, 1, 8, 8)  # which works


def test_bad_input_is_refused(tiny, images):
    with pytest.raises(ValueError, match="out of range"):
        cnnjax.cam(tiny, images, 6)
    with pytest.raises(ValueError, match="out of range"):
        cnnjax.grad_cam(tiny, images, np.array([[0], [7]]))
    with pytest.raises(ValueError, match="unknown class 'giraffe'"):
        cnnjax.saliency.layer_cam(tiny, images, "giraffe")
    with pytest.raises(ValueError, match="one row per image"):
        cnnjax.grad_cam(tiny, images, np.zeros((3, 1), int))
    with pytest.raises(ValueError, match="no spatial extent"):
        cnnjax.grad_cam(tiny, images, 0, layer="pooled")
    with pytest.raises(ValueError, match="no spatial extent"):
        cnnjax.cam(tiny, images, layer="logits")
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        cnnjax.saliency.score_cam(tiny, images * 2, 0)
