"""The contract types: objective algebra, pytree behaviour, ModelSpec lookups, input checks."""

import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _arrays import normal, uniform
from PIL import Image

import cnnjax
from cnnjax import LayerSpec, ModelSpec, Objective, ValueMapping
from cnnjax.objectives import pytree_dataclass, static_field


@pytree_dataclass
class ChannelMean(Objective):
    """Test objective: the spatial mean of one channel of one layer."""

    layer: str = static_field()
    channel: jax.Array = 0

    def layers(self):
        return (self.layer,)

    def __call__(self, acts):
        return jnp.mean(acts[self.layer][..., self.channel], axis=(1, 2))


ACTS = {"a": normal(0, (3, 4, 4, 5)), "b": jnp.ones((3, 2, 2, 2))}


def test_algebra_matches_arithmetic():
    a, b, c = ChannelMean("a", 1), ChannelMean("a", 2), ChannelMean("b", 0)
    va, vb, vc = a(ACTS), b(ACTS), c(ACTS)
    np.testing.assert_allclose((a + b)(ACTS), va + vb, rtol=1e-6)
    np.testing.assert_allclose((a - b)(ACTS), va - vb, rtol=1e-6)
    np.testing.assert_allclose((2.5 * a)(ACTS), 2.5 * va, rtol=1e-6)
    np.testing.assert_allclose((a * 2.5)(ACTS), 2.5 * va, rtol=1e-6)
    np.testing.assert_allclose((-a)(ACTS), -va, rtol=1e-6)
    np.testing.assert_allclose(sum([a, b, c])(ACTS), va + vb + vc, rtol=1e-6)
    np.testing.assert_allclose((a - 0.5 * (b + c))(ACTS), va - 0.5 * (vb + vc), rtol=1e-6)
    assert (a + b - c).layers() == ("a", "b")
    assert (a + b)(ACTS).shape == (3,)


def test_algebra_refuses_nonsense():
    a = ChannelMean("a", 1)
    with pytest.raises(TypeError):
        a * a
    with pytest.raises(ValueError, match="scalar"):
        a * jnp.ones(3)
    with pytest.raises(TypeError):
        a + 1.0


def test_objectives_are_pytrees_and_vmap_over_targets():
    """Channel indices and scales are leaves: a batch of objectives is one vmapped program."""
    objs = [2.0 * ChannelMean("a", i) for i in range(5)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *objs)
    assert len(jax.tree.leaves(objs[0])) == 2  # scale and channel; the layer name is static

    @jax.jit
    @chex.assert_max_traces(n=1)
    def scores(batch, acts):
        return jax.vmap(lambda o: o(acts))(batch)

    out = scores(stacked, ACTS)
    expected = np.stack([o(ACTS) for o in objs])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # New targets with the same structure do not retrace.
    scores(jax.tree.map(lambda x: x[::-1], stacked), ACTS)


def test_objective_gradient_rises_under_ascent():
    obj = ChannelMean("a", 3) - 0.5 * ChannelMean("a", 0)
    x = ACTS["a"]
    g = jax.grad(lambda x: obj({"a": x}).sum())(x)
    before = obj({"a": x}).sum()
    after = obj({"a": x + 0.1 * g}).sum()
    assert after > before


SPEC = ModelSpec(
    name="toy",
    input_size=(16, 16),
    layers=(
        LayerSpec("input", (16, 16, 3), 1, 1),
        LayerSpec("conv", (8, 8, 4), 2, 3),
        LayerSpec("logits", (3,)),
    ),  # fmt: skip
    class_names=("tabby, tabby cat", "tiger cat", "espresso"),
)


def test_class_lookup():
    assert SPEC.class_index(1) == 1
    assert SPEC.class_index(np.int64(2)) == 2
    assert SPEC.class_index("2") == 2
    assert SPEC.class_index("tabby cat") == 0
    assert SPEC.class_index("Tabby") == 0
    assert SPEC.class_index("tabby, tabby cat") == 0
    assert SPEC.class_name(0) == "tabby"
    with pytest.raises(ValueError, match=r"out of range.*0\.\.2"):
        SPEC.class_index(3)
    with pytest.raises(ValueError, match=r"out of range"):
        SPEC.class_index(-1)
    with pytest.raises(ValueError, match=r"did you mean 'espresso'"):
        SPEC.class_index("expresso")
    with pytest.raises(ValueError, match="int index or a str"):
        SPEC.class_index(1.5)


def test_unknown_layer_lists_valid_layers():
    assert SPEC.layer("conv").stride == 2
    assert SPEC.layer("conv").channels == 4 and SPEC.layer("conv").spatial
    with pytest.raises(ValueError, match=r"unknown layer 'cnv'.*Did you mean 'conv'.*input, conv, logits"):
        SPEC.layer("cnv")


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((16, 16, 3), np.float32), r"NHWC.*add a batch axis"),
        (np.zeros((1, 16, 16, 3), np.uint8), r"floating point.*/ 255"),
        (np.zeros((1, 16, 16, 1), np.float32), "3 channels"),
        (np.full((1, 16, 16, 3), 2.0, np.float32), r"values in \[0, 1\], got \[2, 2\]"),
        (np.full((1, 16, 16, 3), np.nan, np.float32), "768 non-finite"),
        (np.zeros((1, 4, 4, 3), np.float32), "smallest accepted size"),
        (np.zeros((0, 16, 16, 3), np.float32), "empty batch"),
        ([[1.0]], "must be an array"),
    ],
)
def test_check_images_refuses_bad_input(images, message):
    with pytest.raises(ValueError, match=message):
        SPEC.check_images(images)


def test_check_images_exact_size_and_passthrough():
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    out = SPEC.check_images(x, exact_size=True)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, x)
    with pytest.raises(ValueError, match="must be 16x16, got 20x16"):
        SPEC.check_images(np.zeros((1, 20, 16, 3), np.float32), exact_size=True)


def test_value_mapping_round_trip():
    m = ValueMapping(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0), bgr=True)
    x = uniform(3, (2, 5, 5, 3))
    y = m(x)
    np.testing.assert_allclose(y[..., 0], (x[..., 2] - 0.1) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(m.invert(y), x, rtol=1e-5, atol=1e-6)


def test_public_api_imports():
    for name in cnnjax.__all__:
        assert getattr(cnnjax, name) is not None, name
    for name in cnnjax.models.__all__:
        assert getattr(cnnjax.models, name) is not None, name
    for name in cnnjax.training.__all__:
        assert getattr(cnnjax.training, name) is not None, name
    assert callable(cnnjax.load_model) and callable(cnnjax.load_image) and callable(cnnjax.save_image)


def test_core_does_not_import_flax():
    """docs/design.md: the core never imports Flax; only the adapters and bundled modules do, lazily."""
    code = "import sys, cnnjax; assert 'flax' not in sys.modules, [m for m in sys.modules if 'flax' in m]"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_command_imports_only_what_it_uses(tmp_path):
    """``import cnnjax`` imports its packages on first use, so ``cnnjax classify`` loads neither
    the report, the attacks, synthesis nor training (issue 14: the latency of one image)."""
    photo = tmp_path / "grey.png"
    Image.new("RGB", (40, 30), (120, 120, 120)).save(photo)
    code = (
        "import sys, cnnjax; from cnnjax.cli import main; "
        f"assert main(['classify', '--model', 'fashionnet', {str(photo)!r}]) == 0; "
        "print(' '.join(m for m in sys.modules if m.startswith('cnnjax.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = set(out.split("\n")[-2].split())
    assert "cnnjax.models" in loaded
    heavy = {"cnnjax.report", "cnnjax.attacks", "cnnjax.synthesis", "cnnjax.training", "cnnjax.units"}
    assert not heavy & loaded, heavy & loaded
