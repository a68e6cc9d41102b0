"""Classification losses: values against independent NumPy formulas, gradients against finite
differences, and the training loss built on them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _arrays import normal
from jax.test_util import check_grads

import cnnjax
from cnnjax.losses import carlini_wagner_loss, complement_cross_entropy, margin, softmax_cross_entropy
from cnnjax.training import cross_entropy

LOGITS = normal(0, (5, 7)) * 3.0
LABELS = jnp.asarray([0, 3, 6, 2, 3])


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@jax.jit
def all_losses(z, y):
    """Every loss in one compiled program (eager calls would compile each operation)."""
    return {
        "ce": softmax_cross_entropy(z, y),
        "complement": complement_cross_entropy(z, y),
        "margin": margin(z, y),
        "cw": carlini_wagner_loss(z, y),
        "cw_kappa": carlini_wagner_loss(z, y, kappa=0.3),
        "cw_untargeted": carlini_wagner_loss(z, y, targeted=False, kappa=2.0),
    }


def test_values_match_numpy_formulas():
    z, y = np.asarray(LOGITS, np.float64), np.asarray(LABELS)
    out = all_losses(LOGITS, LABELS)
    p = _softmax(z)[np.arange(5), y]
    np.testing.assert_allclose(out["ce"], -np.log(p), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["complement"], -np.log1p(-p), rtol=1e-4, atol=1e-6)
    others = np.where(np.eye(7, dtype=bool)[y], -np.inf, z)
    m = z[np.arange(5), y] - others.max(-1)
    np.testing.assert_allclose(out["margin"], m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["cw"], np.maximum(-m, 0.0), atol=1e-6)
    np.testing.assert_allclose(out["cw_untargeted"], np.maximum(m, -2.0), atol=1e-6)


def test_margin_sign_is_top1_and_cw_loss_floor():
    z = np.zeros((5, 7), np.float32)
    z[:, :3] = [3.0, 1.0, 2.5]
    z[1, :3] = [0.0, 4.0, 1.0]
    out = all_losses(z, jnp.asarray([0, 0, 2, 1, 2]))
    np.testing.assert_allclose(out["margin"][:3], [0.5, -4.0, -0.5])
    # Targeted f6 is -kappa once the target leads by kappa, and the margin deficit before.
    np.testing.assert_allclose(out["cw_kappa"][:3], [-0.3, 4.0, 0.5])
    np.testing.assert_allclose(out["cw"][3:], [2.0, 0.5])


def test_gradients_match_finite_differences():
    """All four losses in one function (and one compiled program per derivative)."""

    def losses(z):
        return jnp.concatenate([
            softmax_cross_entropy(z, LABELS),
            complement_cross_entropy(z, LABELS),
            margin(z, LABELS),
            carlini_wagner_loss(z, LABELS, kappa=50.0),  # inside the linear part
            carlini_wagner_loss(z, LABELS, targeted=False, kappa=50.0),
        ])  # fmt: skip

    # Random logits: no ties, so the max in the margin is differentiable at this point.
    check_grads(jax.jit(losses), (LOGITS,), order=1, modes=("rev", "fwd"), eps=1e-3)


def test_training_cross_entropy_is_the_mean():
    expected = all_losses(LOGITS, LABELS)["ce"].mean()
    np.testing.assert_allclose(jax.jit(cross_entropy)(LOGITS, LABELS), expected, rtol=1e-6)


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
