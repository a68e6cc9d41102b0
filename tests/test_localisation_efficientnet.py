"""Localisation on the bundled EfficientNet-Lite0: derived receptive fields against the
architecture and the gradient's support, the CAM identity, and CAM peaks on the sample photos'
objects."""

import numpy as np
import pytest
from _arrays import uniform

import cnnjax
from cnnjax import receptive_field as rf
from cnnjax.models._efficientnet import EfficientNetLite0

# Ground-truth boxes (top, left, bottom, right; bottom/right exclusive) in the 224x224 crops of
# cnnjax.sample_photos(), measured by hand: each crop was drawn 3x enlarged with an 8-pixel grid
# and the object's extreme pixels read off. chelsea: the cat fills the whole crop (a close-up
# of its face), so its box is the image. coffee: the cup with the espresso, from the top of
# the rim (y 6) to the bottom of the cup's body (y 137), rim x 34..179 (handle and saucer
# excluded). astronaut: the top class is "football helmet": the black helmet she holds at
# the bottom right, y 154..223, x 122..223. rocket: the launcher's body (class "missile"),
# nose at y 58 down to the bottom edge, x 102..123 (the launch towers excluded).
BOXES = {
    "chelsea.png": (0, 0, 224, 224),
    "coffee.png": (6, 34, 138, 180),
    "astronaut.png": (154, 122, 224, 224),
    "rocket.jpg": (58, 102, 224, 124),
}


# On the demo's worker: the demo derives the same receptive fields and CAM head (cached per
# model) and runs the same forward pass on the photos.
pytestmark = pytest.mark.xdist_group("demo")


@pytest.fixture(scope="module")
def model():
    return cnnjax.load_model()


@pytest.fixture(scope="module")
def photos():
    p = cnnjax.sample_photos()
    return list(p), np.concatenate(list(p.values()))


def test_derived_fields_match_the_architecture_and_the_gradient_support(model):
    fields = rf.theoretical(model)
    hand = EfficientNetLite0.receptive_fields()  # the usual recurrence over the architecture
    assert set(fields) == set(hand)
    for name, field in fields.items():
        assert field.size == (hand[name], hand[name]), name
        assert field.stride[0] == (model.spec.layer(name).stride or 1), name
    # TF SAME puts a stride-2 layer's extra pixel at the bottom/right, so the head's position 0
    # is centred at pixel 31, not 15.5: 15 + 16 for the last stride-2 block.
    np.testing.assert_array_equal(fields["head"].centres[0], 31 + 32 * np.arange(7))
    # The input gradient of the sum of block_8's channels at a position is non-zero exactly on
    # the derived field: at (6, 6) the whole 211x211 square, at (0, 0) its clipped corner.
    images = uniform(0, (2, 224, 224, 3))
    positions = [(6, 6), (0, 0)]
    support = rf.gradient_support(model, "block_8", positions, images)
    for (y, x), s in zip(positions, support):
        ys, xs = np.nonzero(s)
        top, left, bottom, right = fields["block_8"].box(y, x)
        assert (ys.min(), xs.min(), ys.max(), xs.max()) == (top, left, bottom, right), (y, x)
        assert s.sum() >= 0.99 * (bottom - top + 1) * (right - left + 1)
    assert fields["block_8"].box(6, 6) == (6, 6, 216, 216)


def test_cam_identity_and_peaks_on_the_objects(model, photos):
    names, x = photos
    maps = cnnjax.cam(model, x)  # [4, 1000, 7, 7], one einsum
    head = cnnjax.saliency.cam_head(model)
    assert head.layer == "head" and maps.shape == (4, 1000, 7, 7)
    logits = np.asarray(model(x)["logits"])
    recon = np.asarray(maps).mean(axis=(2, 3)) + np.asarray(head.bias)[None]
    assert np.abs(recon - logits).max() <= 1e-5 * np.abs(logits).max()
    np.testing.assert_allclose(head.weights, model.params["fc"]["kernel"][...], atol=1e-5)

    top = logits.argmax(axis=1)
    at_centres = cnnjax.saliency.upsample_maps(
        maps[np.arange(4), top][:, None], (224, 224), rf.theoretical(model)["head"].centres
    )  # what upsample=True does
    boxes = np.array([BOXES[n] for n in names])
    assert cnnjax.saliency.pointing_game(at_centres, boxes).all()  # the usual 15-pixel tolerance
    strict = cnnjax.saliency.pointing_game(at_centres, boxes, tolerance=0)[:, 0]
    # The rocket's peak is 7 px left of the launcher (between it and the left tower).
    assert dict(zip(names, strict)) == {"chelsea.png": True, "coffee.png": True, "astronaut.png": True,
                                        "rocket.jpg": False}  # fmt: skip
    # Plain bilinear resizing ignores SAME padding's offset and moves every peak 15 px up-left:
    # the rocket's would miss by 22 px.
    naive = cnnjax.saliency.upsample_maps(maps[np.arange(4), top][:, None], (224, 224))
    assert not cnnjax.saliency.pointing_game(naive, boxes)[names.index("rocket.jpg"), 0]
