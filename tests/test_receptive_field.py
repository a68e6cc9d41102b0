"""Receptive fields on small hand-built networks: theoretical (against hand-computed values and an
independent boolean composition), empirical by occlusion (a fixed-weight network whose support is
known) and effective (a linear network, closed form)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _arrays import normal, uniform

import cnnjax
from cnnjax import receptive_field as rf
from cnnjax.testing import tiny_cnn

DN = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(scope="module")
def tiny():
    return tiny_cnn()


def _conv(x, w, stride=1, padding="SAME", dilation=1):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, rhs_dilation=(dilation, dilation),
                                        dimension_numbers=DN)  # fmt: skip


def hand_net():
    """32x24 input (not square, to test each axis); per axis, by hand (k, s, p: window, stride,
    padding at the start):
    a: 3x3, s1, pad 1        size 3,  jump 1, padding 1
    b: 5x5, s2, VALID        size 3 + 4*1 = 7,   jump 2, padding 1 + 0*1 = 1
    c: max-pool 3, s2, pad 1 size 7 + 2*2 = 11,  jump 4, padding 1 + 1*2 = 3
    d: 3x3 dilated 2, pad 2  size 11 + 4*4 = 27, jump 4, padding 3 + 2*4 = 11
    """
    params = {"a": normal(0, (3, 3, 1, 4)), "b": normal(1, (5, 5, 4, 40)), "d": normal(2, (3, 3, 40, 6))}

    def forward(p, x, tap):
        h = tap("a", jax.nn.relu(_conv(x, p["a"], 1, ((1, 1), (1, 1)))))
        h = tap("b", jax.nn.relu(_conv(h, p["b"], 2, "VALID")))
        h = tap("c", jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                           ((0, 0), (1, 1), (1, 1), (0, 0))))  # fmt: skip
        h = tap("d", _conv(h, p["d"], 1, ((2, 2), (2, 2)), dilation=2))
        return jnp.mean(h, axis=(1, 2))

    return cnnjax.from_function(forward, params, name="hand", input_size=(32, 24), channels=1)


HAND = {"a": ((3, 1, 1)), "b": (7, 2, 1), "c": (11, 4, 3), "d": (27, 4, 11)}  # size, stride, padding


def _windows(n_in, k, s, lo_pad, dilation=1):
    """Independent reference: dependency matrix D[out, in] of one sliding window."""
    n_out = (n_in + 2 * lo_pad - dilation * (k - 1) - 1) // s + 1
    dep = np.zeros((n_out, n_in), bool)
    for y in range(n_out):
        for t in range(k):
            i = s * y - lo_pad + dilation * t
            if 0 <= i < n_in:
                dep[y, i] = True
    return dep


def _hand_reference(n):
    """Rows (or columns) each position of a, b, c, d depends on, by boolean matrix products."""
    out, dep = {}, np.eye(n, dtype=bool)
    for name, (k, s, pad, dil) in {
        "a": (3, 1, 1, 1),
        "b": (5, 2, 0, 1),
        "c": (3, 2, 1, 1),
        "d": (3, 1, 2, 2),
    }.items():
        local = _windows(dep.shape[0], k, s, pad, dil)
        dep = (local.astype(int) @ dep.astype(int)) > 0
        out[name] = dep
    return out


def test_theoretical_fields_of_a_hand_built_network():
    model = hand_net()
    fields = rf.theoretical(model)
    assert list(fields) == ["input", "a", "b", "c", "d"]
    refs = (_hand_reference(32), _hand_reference(24))
    for name, (size, stride, padding) in HAND.items():
        f = fields[name]
        assert f.size == (size, size) and f.stride == (stride, stride) and f.padding == (padding, padding), (
            name
        )
        for axis, intervals in ((0, f.rows), (1, f.cols)):
            dep = refs[axis][name]
            first = dep.argmax(axis=1)
            last = dep.shape[1] - 1 - dep[:, ::-1].argmax(axis=1)
            np.testing.assert_array_equal(
                intervals, np.stack([first, last], 1), err_msg=f"{name} axis {axis}"
            )
    ys, xs = fields["d"].centres
    np.testing.assert_array_equal(ys, -11 + 4 * np.arange(len(ys)) + 13)
    assert fields["d"].box(0, 0) == (0, 0, 15, 15)  # 27 pixels from -11, clipped at 0


def test_theoretical_fields_of_tiny_cnn_and_fashionnet_match_their_recurrence(tiny):
    tiny = rf.theoretical(tiny)
    assert {k: v.size[0] for k, v in tiny.items()} == {"input": 1, "conv1": 3, "conv2": 5, "conv3": 9}
    assert {k: v.stride[0] for k, v in tiny.items()} == {"input": 1, "conv1": 1, "conv2": 2, "conv3": 2}
    # XLA SAME with stride 2 on an even size pads (0, 1): conv2's field starts at conv1's -1.
    assert tiny["conv2"].padding == (1, 1) and tiny["conv3"].padding == (3, 3)
    fashion = rf.theoretical(cnnjax.load_model("fashionnet"))
    sizes = {"conv1": 3, "conv2": 5, "pool1": 6, "conv3": 10, "conv4": 14, "pool2": 16, "conv5": 24}
    assert {k: fashion[k].size[0] for k in sizes} == sizes  # max-pools included (probed with +inf)
    assert [fashion[k].stride[0] for k in sizes] == [1, 1, 2, 2, 2, 4, 4]


def test_a_layer_that_does_not_slide_is_refused():
    """A flipped layer depends on intervals that move backwards: not a receptive field."""

    def forward(p, x, tap):
        h = tap("a", jax.nn.relu(_conv(x, p, 1)))
        h = tap("flipped", h[:, ::-1])
        return jnp.mean(h, axis=(1, 2))

    model = cnnjax.from_function(forward, jnp.ones((3, 3, 1, 2)), name="flip", input_size=16, channels=1)
    with pytest.raises(ValueError, match="not one sliding window"):
        rf.theoretical(model)


@pytest.fixture(scope="module")
def support_net():
    return known_support_net()


def known_support_net():
    """One linear unit per position: a SAME 5x5 correlation with an asymmetric, known support."""
    k = np.zeros((5, 5, 1, 1), np.float32)
    support = [(0, 0), (0, 1), (1, 3), (2, 2), (3, 2), (4, 4)]
    for i, j in support:
        k[i, j] = 1.0 + i + j

    def forward(p, x, tap):
        h = tap("a", _conv(x, p, 1))
        return jnp.mean(h, axis=(1, 2))

    return cnnjax.from_function(forward, jnp.asarray(k), name="support", input_size=32, channels=1), support


def _images(n, seed=0):
    return uniform(seed, (n, 32, 32, 1))


def test_empirical_field_recovers_a_known_support(support_net):
    model, support = support_net
    # With 1x1 occluders on a stride-1 grid the discrepancy is |k_p (noise_p - x_p)|: non-zero
    # exactly on the support, which the re-centring puts around the canvas centre (31, 31).
    res = rf.empirical(model, "a", 0, _images(3), top_k=2, patch=1, stride=1)
    expected = np.zeros((63, 63), bool)
    for i, j in support:
        expected[31 + i - 2, 31 + j - 2] = True
    np.testing.assert_array_equal(res.maps[0] > 0, expected)
    assert res.images.shape == (1, 2) and res.copies[0] <= 2 * 25  # only the patches in the 5x5 field ran
    # With the published 11x11 patches on a stride-3 grid, each image's map is non-zero where
    # some grid patch covering the pixel overlaps the support (independent numpy reference).
    res = rf.empirical(model, "a", 0, _images(3), top_k=2, patch=11, stride=3)
    tops = np.arange(0, 32 - 11 + 1, 3)
    for (y, x), dmap in zip(res.peaks[0], res.discrepancy[0]):
        sup = np.zeros((32, 32), bool)
        for i, j in support:
            if 0 <= y + i - 2 < 32 and 0 <= x + j - 2 < 32:
                sup[y + i - 2, x + j - 2] = True
        want = np.zeros((32, 32), bool)
        for t in tops:
            for s in tops:
                if sup[t : t + 11, s : s + 11].any():
                    want[t : t + 11, s : s + 11] = True
        np.testing.assert_array_equal(dmap > 0, want)


def test_restricting_to_the_theoretical_field_changes_nothing(support_net):
    model, _ = support_net
    a = rf.empirical(model, "a", 0, _images(2, 1), top_k=2, patch=3, stride=2)
    b = rf.empirical(model, "a", 0, _images(2, 1), top_k=2, patch=3, stride=2, restrict=False)
    np.testing.assert_allclose(a.maps, b.maps, atol=1e-6)
    assert a.copies[0] < b.copies[0]


def test_empirical_several_units_at_once_equal_one_at_a_time(tiny):
    model = tiny
    images = uniform(3, (3, 32, 32, 3))
    both = rf.empirical(model, ["conv1", "conv3"], [2, None], images, top_k=2, patch=5, stride=4)
    alone = rf.empirical(model, "conv3", int(both.units[1]), images, top_k=2, patch=5, stride=4)
    np.testing.assert_allclose(both.maps[1], alone.maps[0], atol=1e-6)
    np.testing.assert_array_equal(both.images[1], alone.images[0])
    assert both.layers == ("conv1", "conv3") and both.units[0] == 2
    # None picks the most active channel over the images.
    acts = jax.jit(model.apply)(model.params, images)["conv3"]
    assert both.units[1] == int(np.argmax(np.asarray(acts).max(axis=(0, 1, 2))))
    # A 5x5 occluder changes a unit only if it overlaps the unit's field (3x3 for conv1, 9x9
    # for conv3): the maps are non-zero within the field widened by 4 pixels on each side.
    for field_map, side in zip(both.maps, (3 + 8, 9 + 8)):
        ys, xs = np.nonzero(field_map)
        assert ys.max() - ys.min() + 1 <= side and xs.max() - xs.min() + 1 <= side


def test_effective_field_of_a_linear_network_is_the_kernels_convolution():
    """Two all-ones 3x3 convolutions: the centre unit's gradient counts paths, [1 2 3 2 1]^2."""

    def forward(p, x, tap):
        h = tap("a", _conv(x, p, 1))
        h = tap("b", _conv(h, p, 1))
        return jnp.mean(h, axis=(1, 2))

    model = cnnjax.from_function(forward, jnp.ones((3, 3, 1, 1)), name="lin", input_size=16, channels=1)
    erf = rf.effective(model, "b", _images(2)[:, :16, :16])
    assert erf.positions.tolist() == [[8, 8]] and erf.layers == ("b",)
    want = np.zeros((16, 16))
    want[6:11, 6:11] = np.outer([1, 2, 3, 2, 1], [1, 2, 3, 2, 1])
    np.testing.assert_allclose(erf.maps[0], want, rtol=1e-6)
    assert erf.sizes[0] == pytest.approx(np.sqrt(np.sum(want >= 4.5)))
    both = rf.effective(model, ["a", "b"], _images(2)[:, :16, :16])
    np.testing.assert_allclose(both.maps[1], want, rtol=1e-6)
    assert np.count_nonzero(both.maps[0]) == 9


def test_field_size_is_the_side_of_the_half_maximum_area():
    m = np.zeros((20, 20))
    m[2:8, 3:9] = 1.0  # 36 pixels at the maximum
    m[10, 10] = 0.4  # below half
    assert rf.field_size(m) == 6.0
    assert rf.field_size(np.zeros((4, 4))) == 0.0


def test_bad_input_is_refused_before_work(tiny):
    model = tiny
    images = _images(2)
    images3 = jnp.repeat(images, 3, axis=-1)
    with pytest.raises(ValueError, match="no spatial extent"):
        rf.empirical(model, "pooled", 0, images3)
    with pytest.raises(ValueError, match="out of range"):
        rf.empirical(model, "conv3", 16, images3)
    with pytest.raises(ValueError, match="larger than the images"):
        rf.empirical(model, "conv3", 0, images3, patch=33)
    with pytest.raises(ValueError, match="top_k=5 but only 2"):
        rf.empirical(model, "conv3", 0, images3)
    with pytest.raises(ValueError, match="stride must be an integer >= 1"):
        rf.empirical(model, "conv3", 0, images3, top_k=1, stride=0)
    with pytest.raises(ValueError, match="outside layer"):
        rf.effective(model, "conv1", images3, position=(32, 0))
    with pytest.raises(ValueError, match="unknown layer"):
        rf.gradient_support(model, "conv9", [(0, 0)])
