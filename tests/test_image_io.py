"""Tests for cnnjax._src.image_io: every test image is written here with Pillow/numpy."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from cnnjax._src.image_io import image_grid, load_image, load_images, save_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _save(path, image, **kwargs):
    image.save(path, **kwargs)
    return path


def _noise(h=64, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _assert_rgb(batch, rgb, atol=1e-6):
    np.testing.assert_allclose(batch, np.broadcast_to(np.float32(rgb) / 255, batch.shape), atol=atol)


# --- modes ---------------------------------------------------------------------------


def test_rgb_values_shape_dtype(tmp_path):
    pixels = _noise(5, 7)
    batch = load_image(_save(tmp_path / "a.png", Image.fromarray(pixels)))
    assert batch.shape == (1, 5, 7, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], pixels.astype(np.float32) / 255)


def test_greyscale_l_and_1bit(tmp_path):
    _assert_rgb(load_image(_save(tmp_path / "l.png", Image.new("L", (3, 2), 128))), (128,) * 3)
    bits = Image.new("1", (4, 1), 0)
    bits.putpixel((1, 0), 1)
    batch = load_image(_save(tmp_path / "1.png", bits))
    np.testing.assert_array_equal(batch[0, 0, :, 0], [0, 1, 0, 0])


@pytest.mark.parametrize("mode, value", [("RGBA", (10, 20, 30, 0)), ("LA", (10, 0))])
def test_transparent_pixels_become_white(tmp_path, mode, value):
    _assert_rgb(load_image(_save(tmp_path / "t.png", Image.new(mode, (2, 2), value))), WHITE)


def test_alpha_composited_over_white(tmp_path):
    image = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    image.putpixel((1, 0), (0, 0, 0, 128))
    batch = load_image(_save(tmp_path / "a.png", image))
    _assert_rgb(batch[:, :, :1], RED)
    _assert_rgb(batch[:, :, 1:], (127,) * 3, atol=1 / 255)


def test_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *GREEN] + [0] * (256 - 2) * 3)
    image.putpixel((1, 0), 1)
    batch = load_image(_save(tmp_path / "p.png", image))
    _assert_rgb(batch[:, :, :1], RED)
    _assert_rgb(batch[:, :, 1:], GREEN)
    batch = load_image(_save(tmp_path / "pt.png", image, transparency=1))
    _assert_rgb(batch[:, :, :1], RED)
    _assert_rgb(batch[:, :, 1:], WHITE)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16bit_full_precision(tmp_path, mode):
    values = np.array([[1000, 65535]], np.uint16)
    image = Image.frombytes("I;16B", (2, 1), values.astype(">u2").tobytes())
    image = image if mode == "I;16B" else Image.fromarray(values).convert(mode)
    assert image.mode == mode
    batch = load_image(_save(tmp_path / "g.tif", image))
    np.testing.assert_allclose(batch[0, 0, :, 0], [1000 / 65535, 1.0], atol=1e-6)
    assert np.all(batch[..., 0] == batch[..., 2])


def test_16bit_png_resize_keeps_precision(tmp_path):
    image = Image.fromarray(np.full((8, 12), 1000, np.uint16))
    batch = load_image(_save(tmp_path / "g.png", image), 4)
    assert batch.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(batch, 1000 / 65535, atol=1e-6)  # 8 bits would give 1/255 steps.


def test_float_mode_is_clipped(tmp_path):
    image = Image.fromarray(np.array([[0.25, 1.5, -0.5]], np.float32))
    batch = load_image(_save(tmp_path / "f.tif", image))
    np.testing.assert_allclose(batch[0, 0, :, 1], [0.25, 1.0, 0.0])


def test_cmyk(tmp_path):
    batch = load_image(_save(tmp_path / "c.tif", Image.new("CMYK", (2, 2), (0, 255, 0, 0))))
    _assert_rgb(batch, (255, 0, 255))


def test_exif_orientation_6_is_applied(tmp_path):
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[...] = BLUE
    pixels[:16, :16] = RED  # The stored top-left corner.
    exif = Image.Exif()
    exif[0x0112] = 6  # Display rotated 90 degrees clockwise.
    path = _save(tmp_path / "r.jpg", Image.fromarray(pixels), exif=exif, quality=95)
    batch = load_image(path)
    assert batch.shape == (1, 48, 32, 3)
    _assert_rgb(batch[:, 4:12, 20:28], RED, atol=0.1)  # Now the top-right corner.
    _assert_rgb(batch[:, 4:12, 4:12], BLUE, atol=0.1)


@pytest.mark.parametrize("suffix", [".gif", ".tif"])
def test_multi_frame_takes_first(tmp_path, suffix):
    frames = [Image.new("RGB", (4, 4), RED), Image.new("RGB", (4, 4), GREEN)]
    path = _save(tmp_path / f"m{suffix}", frames[0], save_all=True, append_images=frames[1:])
    with Image.open(path) as image:
        assert image.n_frames == 2
    _assert_rgb(load_image(path), RED)


# --- resize and crop -----------------------------------------------------------------


def _marked(h, w):
    """A white image with a 12x12 red block at its centre."""
    pixels = np.full((h, w, 3), 255, np.uint8)
    pixels[h // 2 - 6 : h // 2 + 6, w // 2 - 6 : w // 2 + 6] = RED
    return Image.fromarray(pixels)


@pytest.mark.parametrize("h, w", [(40, 60), (60, 40)])
def test_square_crop_keeps_centre(tmp_path, h, w):
    path = _save(tmp_path / "c.png", _marked(h, w))
    batch = load_image(path, 20)
    assert batch.shape == (1, 20, 20, 3)
    _assert_rgb(batch[:, 10:11, 10:11], RED, atol=0.1)  # Halved: a 6x6 block at the centre.
    _assert_rgb(batch[:, :3, :3], WHITE, atol=1e-6)
    assert load_image(path, 20, resize=30).shape == (1, 20, 20, 3)


def test_imagenet_transform_matches_manual_pillow(tmp_path):
    image = Image.fromarray(_noise(300, 400))
    batch = load_image(_save(tmp_path / "n.png", image), 224, resize=256)
    expected = image.resize((341, 256), Image.Resampling.BICUBIC).crop((58, 16, 282, 240))
    np.testing.assert_array_equal(batch[0], np.asarray(expected, np.float32) / 255)


def test_tuple_size_covers_then_crops(tmp_path):
    path = _save(tmp_path / "c.png", _marked(40, 60))
    batch = load_image(path, (10, 30))
    assert batch.shape == (1, 10, 30, 3)
    _assert_rgb(batch[:, 5:6, 15:16], RED, atol=0.1)
    assert load_image(path, (20, 30), resize=25).shape == (1, 20, 30, 3)


def test_load_images_batch(tmp_path):
    paths = [_save(tmp_path / f"{i}.png", _marked(30 + 10 * i, 40)) for i in range(3)]
    batch = load_images(paths, 16)
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.float32
    _assert_rgb(batch[:, 8:9, 8:9], RED, atol=0.1)
    assert load_images([], (4, 5)).shape == (0, 4, 5, 3)
    with pytest.raises(TypeError, match="sequence"):
        load_images(paths[0], 16)


@pytest.mark.parametrize(
    "size, resize",
    [
        (0, None),
        (-3, None),
        (2.5, None),
        ("8", None),
        (True, None),
        ((4, 0), None),
        ((1, 2, 3), None),
        (8, 0),
        (8, 4),
        (None, 8),
    ],
)
def test_bad_size(tmp_path, size, resize):
    path = _save(tmp_path / "a.png", _marked(20, 20))
    with pytest.raises(ValueError):
        load_image(path, size, resize=resize)


# --- save ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".PNG", ".bmp"])
def test_save_load_round_trip(tmp_path, suffix):
    images = np.random.default_rng(1).random((1, 9, 11, 3), dtype=np.float32)
    path = save_image(tmp_path / "sub" / "dir" / f"x{suffix}", images)
    assert path == tmp_path / "sub" / "dir" / f"x{suffix}"
    np.testing.assert_allclose(load_image(path), images, atol=0.5 / 255 + 1e-6, rtol=0)


@pytest.mark.parametrize("suffix", [".jpg", ".JPEG", ".webp"])
def test_save_lossy_formats(tmp_path, suffix):
    images = np.full((16, 16, 3), [0.2, 0.5, 0.8], np.float32)
    batch = load_image(save_image(tmp_path / f"x{suffix}", images))
    np.testing.assert_allclose(batch[0], images, atol=3 / 255)


def test_save_jpeg_composites_alpha_and_accepts_uint8(tmp_path):
    rgba = np.zeros((16, 16, 4), np.float32)  # Fully transparent black.
    _assert_rgb(load_image(save_image(tmp_path / "x.jpeg", rgba)), WHITE, atol=2 / 255)
    grey = np.full((8, 8), 77, np.uint8)
    _assert_rgb(load_image(save_image(tmp_path / "g.png", grey)), (77,) * 3)


def test_save_accepts_jax_and_small_excursions(tmp_path):
    jnp = pytest.importorskip("jax.numpy")
    images = jnp.full((4, 5, 1), 1.0005, jnp.float32)
    _assert_rgb(load_image(save_image(tmp_path / "j.png", images)), WHITE)


def test_grid(tmp_path):
    images = np.zeros((5, 8, 6, 3), np.float32)
    grid = image_grid(images)
    assert grid.shape == (2 * 8 + 2, 3 * 6 + 2 * 2, 3) and grid.dtype == np.float32
    assert grid[8:10].min() == 1.0 and grid[:8, 6:8].min() == 1.0  # White gutters.
    assert grid[10:, 14:].min() == 1.0 and grid[:8, :6].max() == 0.0  # Empty cell; a tile.
    assert image_grid(images, cols=5, pad=0).shape == (8, 30, 3)
    batch = load_image(save_image(tmp_path / "g.png", images))
    np.testing.assert_array_equal(batch[0], grid)


# --- errors --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


def test_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory, expected an image file"):
        load_image(tmp_path)


def test_empty_file(tmp_path):
    (path := tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.png is empty \(0 bytes\)"):
        load_image(path)


def test_text_file_named_png(tmp_path):
    (path := tmp_path / "text.png").write_text("not an image\n")
    with pytest.raises(ValueError, match="text.png is not an image Pillow can read"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(tmp_path, fmt):
    buffer = io.BytesIO()
    Image.fromarray(_noise()).save(buffer, fmt)
    (path := tmp_path / f"half.{fmt.lower()}").write_bytes(buffer.getvalue()[: buffer.tell() // 2])
    with pytest.raises(ValueError, match=f"half.{fmt.lower()} is truncated or corrupted"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decompression_bomb(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", 20_000, 20_000) + data[24:29]  # 400M pixels; rest of IHDR kept.
    data[16:33] = ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (path := tmp_path / "bomb.png").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bomb.png.*400000000 pixels"):
        load_image(path)


@pytest.mark.parametrize(
    "images, error, match",
    [
        (np.array([[0.5, np.nan]], np.float32), ValueError, "NaN"),
        (np.array([[0.5, np.inf]], np.float32), ValueError, "NaN or infinite"),
        (np.array([[-0.5, 2.0]], np.float32), ValueError, r"\[-0.5, 2\]"),
        (np.zeros((4, 4, 2), np.float32), ValueError, "c in"),
        (np.zeros((4,), np.float32), ValueError, "shape"),
        (np.zeros((4, 4), np.int32), TypeError, "int32"),
    ],
)
def test_save_rejects_bad_arrays(tmp_path, images, error, match):
    with pytest.raises(error, match=match):
        save_image(tmp_path / "x.png", images)
    assert list(tmp_path.iterdir()) == []


def test_save_unknown_suffix(tmp_path):
    for name in ["x.tiff", "x"]:
        with pytest.raises(ValueError, match="unsupported suffix"):
            save_image(tmp_path / name, np.zeros((2, 2)))
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_existing_file(tmp_path, monkeypatch):
    path = save_image(tmp_path / "good.png", np.zeros((3, 3, 3)))
    good = path.read_bytes()
    with pytest.raises(ValueError):
        save_image(path, np.full((3, 3, 3), np.nan))

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(path, np.ones((3, 3, 3)))
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["good.png"]
