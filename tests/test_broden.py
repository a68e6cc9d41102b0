"""cnnjax.data.load_broden and cnnjax.testing.write_broden: the Broden layout read back, the
synthetic set's ground truth recovered from its images, and every bad input refused with a
message naming the file. No JAX program runs here."""

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnjax.data import CATEGORIES, BrodenData, load_broden
from cnnjax.testing import write_broden

NAMES = ("-", "red", "green", "blue", "square", "disc", "stripes", "dots", "indoor", "outdoor")
COLORS = {1: (0.9, 0.1, 0.1), 2: (0.1, 0.9, 0.1), 3: (0.1, 0.1, 0.9)}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_broden(tmp_path_factory.mktemp("broden"))


@pytest.fixture
def copy(tmp_path) -> Path:
    """A fresh small set that a test may damage."""
    return write_broden(tmp_path / "broden", n=6, size=16)


def _edit_index(root: Path, edit) -> None:
    """Rewrite root/index.csv with ``edit(header, rows)`` applied (in place)."""
    with open(root / "index.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    edit(header, rows)
    with open(root / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def _write_mask(path: Path, ids: np.ndarray) -> None:
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def test_load_reads_the_index(root):
    data = load_broden(root)
    assert isinstance(data, BrodenData)
    assert len(data) == 24
    assert data.names == NAMES
    assert data.categories == ("color", "object", "scene", "texture")
    assert data.mask_size == (16, 16)
    assert data.maps_per_image == 4
    assert data.root == root.absolute()
    category = [data.categories[c] if c >= 0 else None for c in data.concept_category]
    assert category == [None, *["color"] * 3, *["object"] * 2, *["texture"] * 2, *["scene"] * 2]
    assert data.concept_category.dtype == np.int32
    assert data.image_files[5] == root.absolute() / "images" / "synthetic" / "0005.png"
    assert all(p.is_absolute() and p.is_file() for p in data.image_files)
    assert "images=24" in repr(data)


def test_labels_are_the_drawn_shapes_colours_and_textures(root):
    data = load_broden(root)
    labels, annotated = data.concept_maps(np.arange(len(data)))
    assert labels.shape == (24, 4, 16, 16) and labels.dtype == np.int32
    assert annotated.shape == (24, 4) and annotated.dtype == bool and annotated.all()
    textures = []
    for i, path in enumerate(data.image_files):
        image = np.asarray(Image.open(path), np.float32) / 255
        color, shape, scene, texture = labels[i]
        # The colour layer is the image's pure-colour pixels, sampled at the masks' pixels.
        sampled = image[1::2, 1::2]
        expected = np.zeros((16, 16), np.int32)
        for concept, rgb in COLORS.items():
            expected[np.all(np.abs(sampled - rgb) <= 0.035, axis=-1)] = concept
        np.testing.assert_array_equal(color, expected, err_msg=f"image {i}")
        assert 1 <= len(set(np.unique(color)) - {0}) <= 2  # one or two shapes, at least one seen
        # The object layer covers the same pixels, with shape ids.
        np.testing.assert_array_equal(shape > 0, color > 0)
        assert set(np.unique(shape)) <= {0, 4, 5}
        # Image-level labels fill their layers.
        assert np.all(scene == 8 + i % 2)
        assert np.all(texture == texture[0, 0]) and texture[0, 0] in (6, 7)
        textures.append(int(texture[0, 0]))
        background = np.all(np.abs(image - image.mean(-1, keepdims=True)) < 0.1, axis=-1)
        if texture[0, 0] == 6:  # stripes: two dark rows, two light rows
            dark = np.array([np.mean(image[y][background[y]]) < 0.5 for y in range(32)])
            assert any(np.array_equal(dark, (np.arange(32) + p) % 4 < 2) for p in range(4)), i
        else:  # dots: grey with some black pixels
            grey = image[background].mean(-1)
            assert 0.1 < np.mean(grey < 0.2) < 0.4 and np.mean(np.abs(grey - 0.5) < 0.1) > 0.5
    assert textures.count(6) == textures.count(7) == 12


def test_labels_of_some_images(root):
    data = load_broden(root)
    labels, annotated = data.concept_maps([3, 0, 3])
    every, _ = data.concept_maps(range(len(data)))
    np.testing.assert_array_equal(labels, every[[3, 0, 3]])
    assert annotated.shape == (3, 4)
    empty, none = data.concept_maps([])
    assert empty.shape == (0, 4, 16, 16) and none.shape == (0, 4)
    with pytest.raises(IndexError, match="24 is out of range for 24 images"):
        data.concept_maps([0, 24])
    with pytest.raises(ValueError, match="1-D sequence of ints"):
        data.concept_maps([0.5])


def test_write_broden_is_deterministic(tmp_path):
    a = write_broden(tmp_path / "a", n=4, size=16, seed=3)
    b = write_broden(tmp_path / "b", n=4, size=16, seed=3)
    c = write_broden(tmp_path / "c", n=4, size=16, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 4 * 3 + 6
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    with pytest.raises(ValueError, match="size must be an int >= 8"):
        write_broden(tmp_path / "d", size=4)


def test_split_keeps_its_rows(root):
    every = load_broden(root)
    val, train = load_broden(root, split="val"), load_broden(root, split="train")
    assert (len(train), len(val)) == (16, 8)
    assert [p.name for p in val.image_files[:3]] == ["0002.png", "0005.png", "0008.png"]
    assert set(train.image_files) | set(val.image_files) == set(every.image_files)
    labels, _ = val.concept_maps([0])
    np.testing.assert_array_equal(labels, every.concept_maps([2])[0])


def test_all_six_category_columns(copy):
    def add_columns(header, rows):
        header[8:8] = ["part", "material"]
        for row in rows:
            row[8:8] = ["", ""]

    _edit_index(copy, add_columns)
    data = load_broden(copy)
    assert data.categories == CATEGORIES
    assert data.names[int(np.flatnonzero(data.concept_category == CATEGORIES.index("scene"))[0])] == "indoor"
    labels, annotated = data.concept_maps(range(len(data)))
    assert annotated.tolist() == [[True, True, False, False, True, True]] * len(data)
    assert labels.shape == (6, 4, 8, 8)


def test_several_masks_and_labels_in_one_field(copy):
    def more(header, rows):
        rows[0][header.index("object")] += ";synthetic/0001_object.png"
        rows[0][header.index("scene")] += ";9"

    _edit_index(copy, more)
    data = load_broden(copy)
    assert data.maps_per_image == 6
    labels, _ = data.concept_maps([0, 1])
    np.testing.assert_array_equal(labels[0, 2], labels[1, 1])  # the second object mask
    assert np.all(labels[0, 3] == 8) and np.all(labels[0, 4] == 9)
    assert np.all(labels[1, 4:] == 0)  # layers image 1 does not have


def test_missing_csv_files(copy):
    (copy / "label.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"label\.csv does not exist"):
        load_broden(copy)
    (copy / "index.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"index\.csv does not exist"):
        load_broden(copy)


def test_missing_mask_or_image(copy):
    (copy / "images" / "synthetic" / "0003_object.png").unlink()
    with pytest.raises(ValueError, match=r"1 of the 18 files .* first is .*0003_object\.png \(line 5\)"):
        load_broden(copy)
    (copy / "images" / "synthetic" / "0001.png").unlink()
    with pytest.raises(ValueError, match=r"2 of the 18 files .* first is .*0001\.png \(line 3\)"):
        load_broden(copy)
    assert len(load_broden(copy, split="val")) == 2  # the rows left out are not checked


def test_mask_of_the_wrong_size(copy):
    path = copy / "images" / "synthetic" / "0002_color.png"
    _write_mask(path, np.zeros((8, 6), np.int64))
    data = load_broden(copy)  # sizes are read with the masks
    data.concept_maps([0, 1])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is 8x6 .* = 8x8"):
        data.concept_maps([1, 2])


def test_unknown_concept_id_in_a_mask(copy):
    path = copy / "images" / "synthetic" / "0004_object.png"
    ids = np.zeros((8, 8), np.int64)
    ids[2, 3], ids[5, 5] = 300, 12
    _write_mask(path, ids)
    data = load_broden(copy)
    with pytest.raises(ValueError, match=rf"unknown concept id 12 in {re.escape(str(path))}"):
        data.concept_maps([4])


def test_unknown_image_level_label(copy):
    def bad(header, rows):
        rows[2][header.index("scene")] = "42"

    _edit_index(copy, bad)
    with pytest.raises(ValueError, match=r"line 4: the scene label 42 is not a number in .*label\.csv"):
        load_broden(copy)


def test_mixed_mask_sizes(copy):
    def bad(header, rows):
        rows[3][header.index("sh")] = rows[3][header.index("sw")] = "4"

    _edit_index(copy, bad)
    with pytest.raises(ValueError, match=r"line 5 gives mask size sh, sw = 4, 4 but line 2 gives 8, 8"):
        load_broden(copy)


def test_empty_split_and_empty_index(copy):
    with pytest.raises(ValueError, match=r"no rows with split 'test'; its splits are 'train', 'val'"):
        load_broden(copy, split="test")
    _edit_index(copy, lambda header, rows: rows.clear())
    with pytest.raises(ValueError, match="the index is empty"):
        load_broden(copy)


def test_bad_headers_and_values(copy):
    _edit_index(copy, lambda header, rows: header.__setitem__(header.index("sw"), "width"))
    with pytest.raises(ValueError, match=r"index\.csv: the header has no column sw"):
        load_broden(copy)
    _edit_index(copy, lambda header, rows: header.__setitem__(header.index("width"), "sw"))

    def bad_size(header, rows):
        rows[1][header.index("ih")] = "big"

    _edit_index(copy, bad_size)
    with pytest.raises(ValueError, match=r"line 3: ih must be a positive integer, got 'big'"):
        load_broden(copy)


def test_category_and_label_files_are_checked(copy):
    with open(copy / "c_color.csv", "a") as f:
        f.write("4,11,purple,0,0\n")
    with pytest.raises(ValueError, match=r"c_color\.csv: line 5: number 11 is not a number in label\.csv"):
        load_broden(copy)
    (copy / "c_color.csv").unlink()
    with open(copy / "label.csv", "a") as f:
        f.write("3,blue,color(1),1,0.1,\n")
    with pytest.raises(ValueError, match=r"label\.csv: line 12: number 3 is defined twice"):
        load_broden(copy)


def test_label_numbers_may_skip(copy):
    """A label.csv without the row for 0 and with a gap: the gap has no name and is unknown."""
    lines = (copy / "label.csv").read_text().splitlines()
    lines = [lines[0], *lines[2:], "12,purple,color(0),0,0,"]
    (copy / "label.csv").write_text("\n".join(lines) + "\n")
    data = load_broden(copy)
    assert data.names[:2] == ("-", "red") and data.names[10:] == ("", "", "purple")
    assert data.concept_category[10] == -1 and data.concept_category[12] == 0
    ids = np.zeros((8, 8), np.int64)
    ids[0, 0] = 11
    _write_mask(copy / "images" / "synthetic" / "0000_color.png", ids)
    with pytest.raises(ValueError, match="unknown concept id 11 in"):
        data.concept_maps([0])
