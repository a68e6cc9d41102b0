"""Network Dissection on a synthetic Broden-layout set whose concepts are known, with a network
whose units are built to detect them; thresholds and IoUs against NumPy."""

import jax
import numpy as np
import pytest

from cnnjax.data import load_broden
from cnnjax.models import from_function
from cnnjax.report import type_chart
from cnnjax.testing import tiny_cnn, write_broden
from cnnjax.units import dissect, semantic_types


def _detectors(params, x, tap):
    h = jax.lax.conv_general_dilated(
        x, params["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    h = tap("features", jax.nn.relu(h))
    return h.mean((1, 2)) @ params["dense"]


def detector_net():
    """``features``: unit 0 red, 1 green, 2 blue (1x1 colour opponents), 3 horizontal stripes
    of period 4 (a vertical [1, 1, -1, -1] filter on the grey level)."""
    w = np.zeros((4, 1, 3, 4), np.float32)
    for unit in range(3):
        w[1, 0, :, unit] = -1.0
        w[1, 0, unit, unit] = 1.0
    w[:, 0, :, 3] = np.array([1, 1, -1, -1])[:, None] / 3
    params = {"w": w, "dense": np.eye(4, 2, dtype=np.float32)}
    return from_function(_detectors, params, name="detectors", input_size=32)


@pytest.fixture(scope="module")
def broden(tmp_path_factory):
    return load_broden(write_broden(tmp_path_factory.mktemp("broden"), n=24))


@pytest.fixture(scope="module")
def result(broden):
    return dissect(detector_net(), broden, "features", progress=False)


def test_units_built_as_detectors_get_their_concepts(broden, result):
    names = [result.concept_names[c] for c in result.concepts["features"]]
    assert names == ["red", "green", "blue", "stripes"], names
    assert result.concept_categories[result.concepts["features"][3]] == "texture"
    # The top 0.5% of a colour unit's activations is a sliver of its colour's pixels (IoU about
    # 0.01-0.02); thresholding at the top 5%, about the colours' share of the pixels, makes the
    # colour units detectors (IoU > 0.04) and leaves their labels as they were.
    wider = dissect(detector_net(), broden, "features", quantile=0.05, progress=False)
    assert [wider.concept_names[c] for c in wider.concepts["features"][:3]] == ["red", "green", "blue"]
    assert wider.detectors["features"][:3].all(), wider.best_iou["features"]
    assert semantic_types(wider)["features"]["simple elements and colours"] == 3


def test_thresholds_and_ious_equal_numpy(broden, result):
    model = detector_net()
    images = np.concatenate([np.asarray(load_image_batch(broden, model))])
    acts = np.asarray(model.apply(model.params, images)["features"])  # [n, 32, 32, 4]
    m = int(np.ceil(0.005 * acts[..., 0].size))
    exact = np.sort(acts.reshape(-1, 4), axis=0)[-m]
    np.testing.assert_allclose(result.thresholds["features"], exact, rtol=1e-6)
    # The 4x1 filter with SAME padding sees rows i-1..i+2: its fields' centres are at rows i + 0.5
    # and columns i. Mask pixel j (of 16) is centred at input pixel 2j + 0.5: exactly on row 2j's
    # centre, halfway between columns 2j and 2j + 1.
    up = acts[:, 0::2].reshape(len(acts), 16, 16, 2, 4).mean(axis=3)
    masks = up > exact
    maps, annotated = broden.concept_maps(range(len(broden)))
    for unit in range(4):
        for c in range(1, len(broden.names)):
            cat = broden.concept_category[c]
            has = annotated[:, cat]
            label = (maps == c).any(axis=1)  # [n, 16, 16]
            inter = (masks[..., unit] & label)[has].sum()
            union = (masks[..., unit] | label)[has].sum()
            expected = inter / union if union else 0.0
            assert result.iou["features"][unit, c] == pytest.approx(expected, abs=1e-6), (unit, c)


def load_image_batch(broden, model):
    return broden.images().read(range(len(broden)), model.spec, whole=True)


def test_the_histogram_threshold_is_within_its_stated_bound(broden, result):
    estimate = dissect(detector_net(), broden, "features", exact_limit=1, progress=False)
    error = np.abs(estimate.thresholds["features"] - result.thresholds["features"])
    assert (estimate.threshold_error["features"] > 0).all()
    assert (error <= estimate.threshold_error["features"] + 1e-6).all(), (error, estimate.threshold_error)
    assert (result.threshold_error["features"] == 0).all()


def test_several_layers_at_once_and_the_type_chart(broden):
    both = dissect(tiny_cnn(), broden, ["conv1", "conv3"], chunk_size=5, progress=False)
    one = dissect(tiny_cnn(), broden, "conv3", progress=False)
    np.testing.assert_allclose(both.iou["conv3"], one.iou["conv3"], atol=1e-6)
    chart = type_chart(semantic_types(both))
    assert chart.ndim == 3 and chart.shape[2] == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layers="pooled"), "no spatial extent"),
        (dict(layers="nope"), "unknown layer"),
        (dict(layers="conv3", quantile=0.0), "quantile"),
        (dict(layers="conv3", iou_threshold=float("nan")), "iou_threshold"),
    ],
)
def test_bad_input_is_refused(broden, kwargs, message):
    with pytest.raises(ValueError, match=message):
        dissect(tiny_cnn(), broden, progress=False, **kwargs)


def test_masks_of_another_aspect_are_refused(broden):
    wide = from_function(lambda p, x, tap: tap("f", x).mean((1, 2)), {}, name="wide", input_size=(32, 48))
    with pytest.raises(ValueError, match="not the same aspect"):
        dissect(wide, broden, "f", progress=False)


def test_fashionnet_is_dissected_end_to_end(tmp_path):
    from cnnjax.models import load_model

    model = load_model("fashionnet")  # greyscale 28x28: the RGB concept images are made grey
    data = load_broden(write_broden(tmp_path, n=12, size=28))
    result = dissect(model, data, ["conv1", "conv5"], progress=False)
    assert result.iou["conv5"].shape == (128, len(data.names)) and result.count == 12
    assert np.isfinite(result.thresholds["conv1"]).all()
    assert ((result.best_iou["conv5"] >= 0) & (result.best_iou["conv5"] <= 1)).all()


def test_the_dissect_command_writes_its_report(tmp_path, capsys):
    import json

    from cnnjax.cli import main

    concepts = write_broden(tmp_path / "broden", n=12, size=28)
    out = tmp_path / "out"
    argv = ["dissect", "--model", "fashionnet", "--layers", "conv1", "--concepts", str(concepts),
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    written = json.loads((out / "dissect.json").read_text())
    assert len(written["units"]) == 32 and written["images"] == 12
    assert {p.name for p in out.iterdir()} == {"index.html", "dissect.json", "dissect.csv", "types.png"}
    header = (out / "dissect.csv").read_text().splitlines()[0]
    assert header == "layer,unit,concept,category,type,iou,detector,threshold"
