"""Classification losses: values against independent NumPy formulas, gradients against finite
differences, and the training loss built on them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import cnnjax
from cnnjax.losses import carlini_wagner_loss, complement_cross_entropy, margin, softmax_cross_entropy
from cnnjax.training import cross_entropy

LOGITS = jax.random.normal(jax.random.key(0), (5, 7)) * 3.0
LABELS = jnp.asarray([0, 3, 6, 2, 3])


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_values_match_numpy_formulas():
    z, y = np.asarray(LOGITS, np.float64), np.asarray(LABELS)
    p = _softmax(z)[np.arange(5), y]
    np.testing.assert_allclose(softmax_cross_entropy(LOGITS, LABELS), -np.log(p), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(complement_cross_entropy(LOGITS, LABELS), -np.log1p(-p), rtol=1e-4, atol=1e-6)
    others = np.where(np.eye(7, dtype=bool)[y], -np.inf, z)
    m = z[np.arange(5), y] - others.max(-1)
    np.testing.assert_allclose(margin(LOGITS, LABELS), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carlini_wagner_loss(LOGITS, LABELS), np.maximum(-m, 0.0), atol=1e-6)
    np.testing.assert_allclose(carlini_wagner_loss(LOGITS, LABELS, targeted=False, kappa=2.0),
                               np.maximum(m, -2.0), atol=1e-6)  # fmt: skip


def test_margin_sign_is_top1_and_cw_loss_floor():
    z = jnp.asarray([[3.0, 1.0, 2.5], [0.0, 4.0, 1.0]])
    np.testing.assert_allclose(margin(z, jnp.asarray([0, 0])), [0.5, -4.0])
    # Targeted f6 is -kappa once the target leads by kappa, and the margin deficit before.
    np.testing.assert_allclose(carlini_wagner_loss(z, jnp.asarray([0, 1]), kappa=0.3), [-0.3, -0.3])
    np.testing.assert_allclose(carlini_wagner_loss(z, jnp.asarray([2, 2])), [0.5, 3.0])


@pytest.mark.parametrize(
    "fn",
    [
        softmax_cross_entropy,
        complement_cross_entropy,
        margin,
        lambda z, y: carlini_wagner_loss(z, y, kappa=50.0),  # inside the linear part
        lambda z, y: carlini_wagner_loss(z, y, targeted=False, kappa=50.0),
    ],
)
def test_gradients_match_finite_differences(fn):
    # Random logits: no ties, so the max in the margin is differentiable at this point.
    check_grads(lambda z: fn(z, LABELS), (LOGITS,), order=1, modes=("rev", "fwd"), eps=1e-3)


def test_training_cross_entropy_is_the_mean():
    expected = softmax_cross_entropy(LOGITS, LABELS).mean()
    np.testing.assert_allclose(cross_entropy(LOGITS, LABELS), expected, rtol=1e-6)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="labels must have the shape of logits"):
        softmax_cross_entropy(LOGITS, LABELS[:3])
    with pytest.raises(ValueError, match="labels must have the shape of logits"):
        margin(LOGITS, LABELS[:, None])


def test_public_names_import():
    for name in cnnjax.losses.__all__:
        assert callable(getattr(cnnjax.losses, name)), name
    for name in cnnjax.attacks.__all__:
        assert getattr(cnnjax.attacks, name) is not None, name
