"""Unit segmentation: activations placed at their receptive fields' centres, thresholded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnjax


def bright_square_detector():
    """Unit 0: ReLU(3x3 mean - 0.5), stride 2; unit 1: its negative (dark detector)."""
    k = np.zeros((3, 3, 1, 2), np.float32)
    k[..., 0, 0], k[..., 0, 1] = 1 / 9, -1 / 9

    def forward(p, x, tap):
        y = jax.lax.conv_general_dilated(x, p, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = tap("units", jax.nn.relu(y + jnp.asarray([-0.5, 0.5])[None, None, None]))
        return jnp.mean(h, axis=(1, 2))

    return cnnjax.from_function(forward, jnp.asarray(k), name="square", input_size=32, channels=1)


def test_segments_recover_a_bright_square():
    model = bright_square_detector()
    x = np.zeros((1, 32, 32, 1), np.float32)
    x[0, 8:24, 12:28] = 1.0
    seg = cnnjax.units.unit_segmentation(model, x, "units", [0, 1])
    assert seg.masks.shape == (1, 2, 32, 32) and seg.masks.dtype == jnp.bool_
    truth = x[0, ..., 0] > 0
    for unit, target in ((0, truth), (1, ~truth)):
        m = np.asarray(seg.masks[0, unit])
        iou = (m & target).sum() / (m | target).sum()
        assert iou > 0.8, (unit, iou)
    # Each activation sits at its field's centre: pixels 1, 3, 5, ... (SAME pads bottom/right).
    acts = np.asarray(jax.jit(model.apply)(model.params, x)["units"])
    np.testing.assert_allclose(seg.maps[0, :, 1::2, 1::2], np.moveaxis(acts[0], -1, 0), atol=1e-6)
    # Several units at once equal one at a time.
    alone = cnnjax.units.unit_segmentation(model, x, "units", 1)
    np.testing.assert_array_equal(alone.masks[:, 0], seg.masks[:, 1])


def test_bad_units_are_refused():
    model = bright_square_detector()
    x = np.zeros((1, 32, 32, 1), np.float32)
    with pytest.raises(ValueError, match="out of range"):
        cnnjax.units.unit_segmentation(model, x, "units", [0, 2])
    with pytest.raises(ValueError, match="threshold"):
        cnnjax.units.unit_segmentation(model, x, "units", [0], threshold=0.0)
