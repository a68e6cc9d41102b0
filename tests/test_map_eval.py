"""Deletion / insertion AUC against an independent NumPy loop on a linear model, and the pointing
game's closed forms."""

import jax.numpy as jnp
import numpy as np
import pytest
from _arrays import normal, uniform

import cnnjax

W = np.asarray(normal(0, (8, 8)), np.float32)


def linear_model():
    """logit_0 = sum_p w_p x_p - 1, logit_1 = 0: p_0 = sigmoid(w . x - 1)."""

    def forward(p, x, tap):
        s = jnp.sum(tap("conv", x)[..., 0] * p[None], axis=(1, 2)) - 1.0
        return jnp.stack([s, jnp.zeros_like(s)], axis=1)

    return cnnjax.from_function(forward, jnp.asarray(W), name="linear", input_size=8, channels=1)


def _prob(x):
    return 1.0 / (1.0 + np.exp(-(np.sum(W * x) - 1.0)))


def _blur(x, sigma=5.0, size=11):
    r = size // 2
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(x, r, mode="edge")
    rows = np.stack([np.convolve(row, k, mode="valid") for row in p])
    return np.stack([np.convolve(col, k, mode="valid") for col in rows.T], axis=1)


def _reference(x, m, steps, insert):
    order = np.argsort(-m.ravel(), kind="stable")
    start = _blur(x) if insert else np.zeros_like(x)
    curve = []
    for t in range(steps + 1):
        count = int(np.round(t / steps * x.size))
        mask = np.zeros(x.size, bool)
        mask[order[:count]] = True
        mask = mask.reshape(x.shape)
        curve.append(_prob(np.where(mask, x, start) if insert else np.where(mask, start, x)))
    curve = np.asarray(curve)
    return np.trapezoid(curve, np.linspace(0, 1, steps + 1)), curve


def test_deletion_and_insertion_equal_a_numpy_loop_and_rank_maps():
    model = linear_model()
    x = np.asarray(uniform(1, (1, 8, 8, 1)))
    good = W * x[0, ..., 0]  # each pixel's contribution to the logit
    maps = np.stack([good, -good])[None]  # [1, 2, 8, 8]: the truth and its reverse
    for metric, insert in ((cnnjax.saliency.deletion, False), (cnnjax.saliency.insertion, True)):
        res = metric(model, x, maps, [0, 0], steps=16)
        assert res.curves.shape == (1, 2, 17) and res.fractions.shape == (17,)
        for t in range(2):
            auc, curve = _reference(x[0, ..., 0], maps[0, t], 16, insert)
            np.testing.assert_allclose(res.curves[0, t], curve, rtol=1e-5)
            np.testing.assert_allclose(res.auc[0, t], auc, rtol=1e-5)
        # The true contributions delete faster and insert faster than their reverse.
        assert (res.auc[0, 0] < res.auc[0, 1]) if not insert else (res.auc[0, 0] > res.auc[0, 1])


def test_pointing_game_hits_within_15_pixels():
    maps = np.zeros((4, 1, 100, 100), np.float32)
    for i, (y, x) in enumerate([(50, 50), (50, 75), (50, 76), (86, 86)]):
        maps[i, 0, y, x] = 1.0
    boxes = np.array([[40, 40, 61, 61]] * 4)  # rows/cols 40..60 inclusive
    # Inside; 15 px right of the box; 16 px right; sqrt(25^2 + 25^2) away diagonally.
    np.testing.assert_array_equal(
        cnnjax.saliency.pointing_game(maps, boxes)[:, 0], [True, True, False, False]
    )
    masks = np.zeros((4, 100, 100), bool)
    masks[:, 40:61, 40:61] = True
    np.testing.assert_array_equal(
        cnnjax.saliency.pointing_game(maps, masks=masks)[:, 0], [True, True, False, False]
    )
    assert cnnjax.saliency.pointing_game(maps[:, 0], boxes, tolerance=30).tolist() == [
        True,
        True,
        True,
        False,
    ]


def test_bad_input_is_refused():
    model = linear_model()
    x = np.full((1, 8, 8, 1), 0.5, np.float32)
    with pytest.raises(ValueError, match=r"maps must be \[images, targets, 8, 8\]"):
        cnnjax.saliency.deletion(model, x, np.zeros((1, 1, 4, 4)), 0)
    with pytest.raises(ValueError, match="out of range"):
        cnnjax.saliency.insertion(model, x, np.zeros((1, 1, 8, 8)), 2)
    with pytest.raises(ValueError, match="steps must be"):
        cnnjax.saliency.deletion(model, x, np.zeros((1, 1, 8, 8)), 0, steps=0)
    with pytest.raises(ValueError, match="exactly one of boxes and masks"):
        cnnjax.saliency.pointing_game(np.zeros((1, 1, 8, 8)))
