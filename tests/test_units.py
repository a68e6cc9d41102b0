"""Top images per unit: checked against a brute-force ranking of the whole collection in one
pass; streamed, chunked, resumed and read from folders without changing the answer."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from cnnjax.data import ImageCollection, image_collection
from cnnjax.testing import count_compiles, tiny_cnn
from cnnjax.units import _top, class_selectivity, top_images, top_segments, unit_segmentation

TINY = tiny_cnn()
IMAGES = np.random.default_rng(0).random((37, 32, 32, 3), np.float32)


def brute_force(model, images, layer, top_k, reduce="max"):
    a = np.asarray(model.apply(model.params, images)[layer])  # [n, h, w, u]
    n, h, w, u = a.shape
    flat = a.reshape(n, h * w, u)
    score = flat.max(axis=1) if reduce == "max" else flat.mean(axis=1)  # [n, u]
    order = np.argsort(-score, axis=0, kind="stable")[:top_k].T  # [u, k]
    peak = flat.argmax(axis=1)  # [n, u]
    units = np.arange(u)[:, None]
    positions = np.stack([peak[order, units] // w, peak[order, units] % w], axis=-1)
    return np.take_along_axis(score.T, order, axis=1), order, positions


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_top_images_equal_a_brute_force_ranking(reduce):
    top = top_images(TINY, IMAGES, ["conv2", "conv3"], top_k=5, reduce=reduce, chunk_size=8, progress=False)
    assert top.layers == ("conv2", "conv3") and top.count == 37
    for layer in top.layers:
        scores, indices, positions = brute_force(TINY, IMAGES, layer, 5, reduce)
        np.testing.assert_allclose(top.scores[layer], scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(top.indices[layer], indices)
        if reduce == "max":
            np.testing.assert_array_equal(top.positions[layer], positions)


def test_one_program_per_layer_set_and_chunking_never_changes_the_result():
    kw = dict(top_k=4, chunk_size=8, progress=False)
    top_images(TINY, IMAGES[:9], "conv3", **kw)  # compiled (or cached) here
    with count_compiles() as counted:
        a = top_images(TINY, IMAGES, "conv3", **kw)  # 5 chunks, one program
    assert counted.n == 0, counted.names
    b = top_images(TINY, IMAGES, "conv3", top_k=4, chunk_size=37, progress=False)
    np.testing.assert_array_equal(a.indices["conv3"], b.indices["conv3"])
    np.testing.assert_allclose(a.scores["conv3"], b.scores["conv3"], rtol=1e-6)


@dataclasses.dataclass(frozen=True, eq=False)
class Counting(ImageCollection):
    """An array collection that records its reads and stops (as Ctrl-C or a kill would) at
    read number ``limit + 1``."""

    limit: int = 10**9
    reads: list = dataclasses.field(default_factory=list)

    def read(self, indices, spec):
        if len(self.reads) == self.limit:
            raise KeyboardInterrupt
        self.reads.append(list(indices))
        return super().read(indices, spec)


def counting(images, **kwargs):
    base = image_collection(images)
    return Counting(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, **kwargs)


def test_an_interrupted_tally_resumes_without_counting_an_image_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(_top, "SAVE_SECONDS", 0.0)  # save after every chunk
    kw = dict(top_k=6, chunk_size=8, checkpoint_dir=tmp_path, progress=False)
    whole = top_images(TINY, IMAGES, "conv3", top_k=6, chunk_size=8, progress=False)
    with pytest.raises(KeyboardInterrupt):
        top_images(TINY, counting(IMAGES, limit=3), "conv3", **kw)  # stops reading the 4th chunk
    rest = counting(IMAGES)
    resumed = top_images(TINY, rest, "conv3", **kw)
    # Two chunks were saved (the third was read, not yet saved): the resumed run reads the
    # images from 16 on, each once, and ends where the uninterrupted run did.
    read = [i for chunk in rest.reads for i in chunk]
    assert read == list(range(16, 37)), read
    np.testing.assert_array_equal(resumed.indices["conv3"], whole.indices["conv3"])
    np.testing.assert_allclose(resumed.scores["conv3"], whole.scores["conv3"], rtol=1e-6)
    assert all(len(set(row)) == len(row) for row in resumed.indices["conv3"].tolist())
    # Other settings on the same checkpoint are refused, naming the difference.
    with pytest.raises(ValueError, match="top_k 6 -> 5"):
        top_images(TINY, IMAGES, "conv3", top_k=5, checkpoint_dir=tmp_path, progress=False)


def test_a_folder_of_any_sizes_streams_as_the_model_sees_it(tmp_path):
    rng = np.random.default_rng(1)
    files = []
    for i in range(11):
        h, w = rng.integers(32, 80, 2)
        path = tmp_path / ("a" if i % 2 else "b") / f"{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
        files.append(path)
    (tmp_path / "notes.txt").write_text("not an image")
    collection = image_collection(tmp_path)
    assert len(collection) == 11 and collection.names[0] == "a/01.png"
    loaded = collection.read(range(11), TINY.spec)
    top = top_images(TINY, collection, "conv3", top_k=3, chunk_size=4, progress=False)
    _, indices, _ = brute_force(TINY, loaded, "conv3", 3)
    np.testing.assert_array_equal(top.indices["conv3"], indices)


def test_segments_are_each_units_own_segmentation_of_its_top_images():
    top = top_images(TINY, IMAGES, "conv3", top_k=4, progress=False)
    seg = top_segments(TINY, IMAGES, top, "conv3", [2, 9], crop_size=8)
    for row, unit in enumerate([2, 9]):
        images = IMAGES[top.indices["conv3"][unit]]
        np.testing.assert_array_equal(seg.images[row], images)
        alone = unit_segmentation(TINY, images, "conv3", [unit])
        np.testing.assert_array_equal(seg.masks[row], np.asarray(alone.masks)[:, 0])
        for k in range(4):  # the box holds the segment exactly
            top_, left, bottom, right = seg.boxes[row, k]
            inside = np.zeros_like(seg.masks[row, k])
            inside[top_:bottom, left:right] = True
            assert seg.masks[row, k].any() and not (seg.masks[row, k] & ~inside).any()
            assert seg.masks[row, k, top_].any() and seg.masks[row, k, bottom - 1].any()
    assert seg.crops.shape == (2, 4, 8, 8, 3)


def test_class_selectivity_counts_detectors():
    top = top_images(TINY, IMAGES, "conv3", top_k=4, progress=False)
    labels = np.arange(37) % 3
    sel = class_selectivity(top, labels)
    for unit in range(16):
        classes = labels[top.indices["conv3"][unit]]
        share = np.bincount(classes, minlength=3).max() / 4
        assert sel.purity["conv3"][unit] == pytest.approx(share)
    assert sel.detectors["conv3"] == int(np.sum(sel.purity["conv3"] >= 0.9))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: top_images(TINY, t / "empty", "conv3"), "holds no image files"),
        (lambda t: top_images(TINY, t / "bad", "conv3"), "broken.png cannot be read"),
        (lambda t: top_images(TINY, t / "nowhere", "conv3"), "does not exist"),
        (lambda t: top_images(TINY, IMAGES[:3], "conv3", top_k=4), r"top_k must be an integer in \[1, 3\]"),
        (lambda t: top_images(TINY, IMAGES, "pooled"), "no spatial extent"),
        (lambda t: top_images(TINY, IMAGES, "conv9"), "unknown layer"),
        (lambda t: top_images(TINY, IMAGES, "conv3", reduce="median"), "reduce must be"),
        (lambda t: top_images(TINY, IMAGES * 2, "conv3"), r"values in \[0, 1\]"),
        (lambda t: top_images(TINY, IMAGES[0], "conv3"), r"\[n, h, w, 1 or 3\]"),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path, call, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "bad" / "good.png")
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        call(tmp_path)


def test_greyscale_collections_feed_rgb_models_and_the_reverse():
    grey = IMAGES.mean(axis=-1, keepdims=True)
    top = top_images(TINY, grey, "conv3", top_k=3, progress=False)
    _, indices, _ = brute_force(TINY, np.repeat(grey, 3, axis=-1), "conv3", 3)
    np.testing.assert_array_equal(top.indices["conv3"], indices)
    one = tiny_cnn(channels=1)
    assert image_collection(IMAGES).read([0], one.spec).shape == (1, 32, 32, 1)


def test_the_units_command_writes_a_gallery_that_matches_the_tally(tmp_path, capsys):
    import json

    from cnnjax.cli import main
    from cnnjax.models import load_model

    rng = np.random.default_rng(2)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(12):
        Image.fromarray((rng.random((30, 30)) * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    out = tmp_path / "gallery"
    argv = ["units", "--model", "fashionnet", "--layer", "conv5", "--data", str(folder), "--top-k", "3",
            "--units", "0", "7", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} >= {"index.html", "conv5.html", "conv5", "top_images.json"}
    assert sorted(p.name for p in (out / "conv5").iterdir()) == ["unit_0000.png", "unit_0007.png"]
    written = json.loads((out / "top_images.json").read_text())
    model = load_model("fashionnet")
    top = top_images(model, image_collection(folder), "conv5", top_k=3, progress=False)
    unit7 = written["layers"]["conv5"][1]
    assert unit7["unit"] == 7
    assert [image["index"] for image in unit7["images"]] == top.indices["conv5"][7].tolist()
    assert [image["name"] for image in unit7["images"]] == [f"{i:02d}.png" for i in top.indices["conv5"][7]]
    # Results are not replaced unless asked.
    assert main(argv) == 1 and "--overwrite" in capsys.readouterr().err
