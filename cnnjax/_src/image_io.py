"""Image loading and saving in the library's batch format.

Every image batch in cnnjax is float32, NHWC, RGB, with values in [0, 1]. This module
converts between that format and image files, using numpy and Pillow only (no jax at
import; jax functions accept the numpy arrays returned here, and ``save_image`` accepts
jax arrays).
"""

from __future__ import annotations

import errno
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from cnnjax._src.atomic import atomic_write
from cnnjax._src.checks import check_float, check_int, check_positive_int

__all__ = ["MAX_PIXELS", "SAVE_SUFFIXES", "image_grid", "load_image", "load_images", "save_image"]

# Single-channel modes loaded at full precision (through mode "F"), with the value that
# maps to 1.0. Float "F" images are taken to be in [0, 1] already.
_FULL_PRECISION_SCALE = {
    "I;16": 65535.0,
    "I;16L": 65535.0,
    "I;16B": 65535.0,
    "I;16N": 65535.0,
    "I": 65535.0,
    "F": 1.0,
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
#: The file extensions ``save_image`` writes.
SAVE_SUFFIXES = tuple(_SAVE_FORMATS)
_SAVE_OPTIONS: dict[str, dict[str, Any]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
_RANGE_TOLERANCE = 1e-3


#: The most pixels (width x height) an image file may have: 64 megapixels, e.g. 8000 x 8000. A
#: 13000 x 13000 PNG of half a megabyte decodes to 2 GB of pixels; such files are refused before
#: decoding unless the caller raises the limit (``max_pixels=``, ``--max-pixels``).
MAX_PIXELS = 64_000_000


def load_image(
    path: str | os.PathLike[str],
    size: int | tuple[int, int] | None = None,
    *,
    resize: int | None = None,
    min_side: int = 1,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Load one image file as a float32 RGB batch of one, values in [0, 1].

    Any image Pillow can read is accepted. The EXIF orientation is applied; multi-frame
    files (GIF, TIFF, ...) give their first frame. Greyscale, palette and CMYK images
    become RGB (CMYK by Pillow's plain conversion, ignoring ICC profiles). Transparent
    images (RGBA, LA, palette or greyscale with transparency) are composited over
    white. 16-bit and 32-bit integer greyscale is divided by 65535 and float ("F")
    greyscale is taken as already in [0, 1]; both keep their full precision, resizing
    included, and are clipped to [0, 1].

    Args:
      path: the image file.
      size: ``None`` to keep the image's own size; an int ``s`` to resize (bicubic,
        keeping the aspect ratio) so the shorter side is ``resize`` (default ``s``) and
        centre-crop to ``s x s``; or a tuple ``(h, w)`` to resize so the shorter side is
        ``resize`` (default: the smallest size that covers ``h x w``) and centre-crop to
        ``h x w``. ``load_image(p, 224, resize=256)`` is the standard ImageNet
        evaluation transform.
      resize: the shorter side after resizing, before the crop; needs ``size``.
      min_side: the smallest accepted height and width of the file's image (a model's
        ``spec.min_input_size``: a 1x1 image upscaled to 224 pixels is not a photo).
      max_pixels: the most pixels the file's image may have (:data:`MAX_PIXELS`).

    Returns:
      A float32 numpy array of shape ``[1, h, w, 3]`` with values in [0, 1].

    Raises:
      FileNotFoundError: ``path`` does not exist.
      IsADirectoryError: ``path`` is a directory.
      ValueError: ``size`` or ``resize`` is invalid or ``resize`` leaves the image
        smaller than the crop; or the file is empty, is not an image Pillow can read,
        is truncated or corrupted, or has too many pixels to decode safely.

    Example:
      >>> import os, tempfile
      >>> photo = np.random.default_rng(0).random((300, 400, 3))  # h x w, in [0, 1]
      >>> path = save_image(os.path.join(tempfile.mkdtemp(), "photo.png"), photo)
      >>> batch = load_image(path, 224, resize=256)
      >>> batch.shape, batch.dtype
      ((1, 224, 224, 3), dtype('float32'))
      >>> load_image(path).shape  # its own size
      (1, 300, 400, 3)
    """
    target = _parse_size(size)
    if resize is not None:
        resize = _positive_int(resize, "resize")
        if target is None:
            raise ValueError("resize needs size: pass the crop size as well, e.g. size=224")
    min_side = _positive_int(min_side, "min_side")
    max_pixels = _positive_int(max_pixels, "max_pixels")
    path = _check_image_file(path)
    with open(path, "rb") as f:  # File-system errors surface here, unchanged.
        try:  # Decodes the first frame; a copy even without an EXIF orientation.
            with warnings.catch_warnings():  # the limit below says it better than Pillow's warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image_file = Image.open(f)
            with image_file:
                _check_pixels(path, image_file.size, min_side, max_pixels)
                image = ImageOps.exif_transpose(image_file)
        except Image.UnidentifiedImageError as e:
            raise ValueError(f"{path} is not an image Pillow can read") from e
        except Image.DecompressionBombError as e:
            raise ValueError(f"{path} has too many pixels to decode safely: {e}") from e
        except (OSError, SyntaxError, EOFError) as e:
            raise ValueError(f"{path} is truncated or corrupted: {e}") from e

    scale = _FULL_PRECISION_SCALE.get(image.mode)
    image = image.convert("F") if scale else _to_rgb(image)
    if target is not None:
        (width, height), (top, left) = _resize_and_crop(image.size, target, resize, path)
        if (width, height) != image.size:
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        image = image.crop((left, top, left + target[1], top + target[0]))
    if scale:  # Bicubic overshoot is clipped too.
        grey = np.clip(np.asarray(image, dtype=np.float32) / np.float32(scale), 0.0, 1.0)
        pixels = np.repeat(grey[..., None], 3, axis=-1)
    else:
        pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return pixels[None]


def _check_pixels(path, size: tuple[int, int], min_side: int, max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ValueError(
            f"{path} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels), more than the limit of "
            f"{max_pixels / 1e6:g} megapixels; raise it (max_pixels=, --max-pixels) if this is intended"
        )
    if min(w, h) < min_side:
        raise ValueError(f"{path} is {w}x{h} pixels; images must be at least {min_side}x{min_side} here")


def load_images(
    paths: Sequence[str | os.PathLike[str]],
    size: int | tuple[int, int],
    *,
    resize: int | None = None,
    min_side: int = 1,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Load image files as one float32 RGB batch, each resized and centre-cropped.

    Each file is loaded as by ``load_image(path, size, resize=resize)``; ``size`` is
    required because a batch needs one shape.

    Args:
      paths: the image files, in batch order.
      size: the crop size, an int ``s`` (``s x s``) or a tuple ``(h, w)``.
      resize: the shorter side after resizing, before the crop (default: see
        ``load_image``).
      min_side, max_pixels: as for ``load_image``.

    Returns:
      A float32 numpy array of shape ``[len(paths), h, w, 3]`` with values in [0, 1].

    Raises:
      TypeError: ``paths`` is a single path rather than a sequence of paths.
      FileNotFoundError, IsADirectoryError, ValueError: as for ``load_image``.

    Example:
      >>> import os, tempfile
      >>> folder, rng = tempfile.mkdtemp(), np.random.default_rng(0)
      >>> paths = [save_image(os.path.join(folder, name), rng.random((300, 400, 3)))
      ...          for name in ("a.jpg", "b.png")]
      >>> load_images(paths, 224, resize=256).shape
      (2, 224, 224, 3)
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(f"paths must be a sequence of paths, got the single path {paths!r}")
    h, w = _parse_size(size)
    paths = list(paths)
    batch = np.empty((len(paths), h, w, 3), np.float32)
    for i, path in enumerate(paths):
        batch[i] = load_image(path, (h, w), resize=resize, min_side=min_side, max_pixels=max_pixels)[0]
    return batch


def image_grid(images: Any, cols: int | None = None, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile a batch of images into one image, row by row.

    Args:
      images: a numpy or jax array ``[n, h, w, c]`` or ``[n, h, w]``: floats in [0, 1]
        (see ``save_image`` for the accepted range) or uint8 in [0, 255].
      cols: the number of columns; default ``ceil(sqrt(n))``, a near-square grid.
      pad: the gutter width in pixels between tiles (none around the outside).
      pad_value: the gutter and empty-cell value in [0, 1]; 1.0 is white.

    Returns:
      A float32 array ``[rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c]``
      with values in [0, 1], where ``rows = ceil(n / cols)``.

    Raises:
      TypeError: ``images`` is neither floating point nor uint8.
      ValueError: a bad shape, ``cols``, ``pad`` or ``pad_value``, or values out of range.

    Example:
      >>> image_grid(np.zeros((5, 8, 8, 3), np.float32)).shape
      (18, 28, 3)
    """
    images = _as_unit_float(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or 0 in images.shape:
        raise ValueError(f"images must be a non-empty [n, h, w, c] array, got {images.shape}")
    n, h, w, c = images.shape
    cols = min(n, math.ceil(math.sqrt(n)) if cols is None else _positive_int(cols, "cols"))
    pad = check_int(pad, "pad", lo=0)
    pad_value = check_float(pad_value, "pad_value", lo=0.0, hi=1.0)
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), pad_value, np.float32)
    for i, image in enumerate(images):
        top, left = (i // cols) * (h + pad), (i % cols) * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def save_image(path: str | os.PathLike[str], images: Any) -> Path:
    """Write an image or a batch of images to a file, atomically.

    The format follows the suffix: .png, .jpg/.jpeg (quality 95; alpha is composited
    over white), .webp (quality 95) or .bmp, in any letter case. A batch of more than
    one image is written as one near-square grid with a 2-pixel white gutter (see
    ``image_grid``). The file is written to a temporary file in the same directory and
    then renamed over ``path``, so a failure never leaves a partial file or damages an
    existing one; missing parent directories are created.

    Args:
      path: the file to write.
      images: a numpy or jax array ``[h, w]``, ``[h, w, c]`` or ``[n, h, w, c]`` with
        ``c`` in {1, 3, 4} (grey, RGB, RGBA). Floats must be finite and in [0, 1]
        (excursions of up to 1e-3 are clipped); uint8 is written as-is.

    Returns:
      The ``Path`` written.

    Raises:
      TypeError: ``images`` is neither floating point nor uint8.
      ValueError: an unsupported suffix, a bad shape, or non-finite or out-of-range
        values.

    Example:
      >>> import os, tempfile
      >>> path = save_image(os.path.join(tempfile.mkdtemp(), "out", "grid.png"),
      ...                   np.zeros((4, 32, 32, 3), np.float32))
      >>> path.name, load_image(path).shape  # a 2 x 2 grid with a 2-pixel gutter
      ('grid.png', (1, 66, 66, 3))
    """
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported suffix {path.suffix!r}; use one of {sorted(_SAVE_FORMATS)}")
    pixels = _as_unit_float(images)
    if pixels.ndim == 4 and pixels.shape[0] == 1:
        pixels = pixels[0]
    elif pixels.ndim == 4:
        pixels = image_grid(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4))):
        raise ValueError(
            f"images must be [h, w], [h, w, c] or [n, h, w, c] with c in (1, 3, 4), "
            f"got shape {np.shape(images)}"
        )
    if 0 in pixels.shape:
        raise ValueError(f"images must not be empty, got shape {np.shape(images)}")
    if fmt == "JPEG" and pixels.ndim == 3 and pixels.shape[-1] == 4:
        alpha = pixels[..., 3:]
        pixels = pixels[..., :3] * alpha + (1.0 - alpha)
    image = Image.fromarray(np.rint(pixels * 255.0).astype(np.uint8))

    return atomic_write(path, lambda f: image.save(f, format=fmt, **_SAVE_OPTIONS.get(fmt, {})))


def _check_image_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected an image file", str(path))
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such image file", str(path))
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes)")
    return path


def _positive_int(value: Any, name: str) -> int:
    return check_positive_int(value, name)


def _parse_size(size: Any) -> tuple[int, int] | None:
    """``None``, an int or an ``(h, w)`` pair -> ``None`` or ``(h, w)``."""
    if size is None:
        return None
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return _positive_int(size[0], "size[0]"), _positive_int(size[1], "size[1]")
    if isinstance(size, (tuple, list)):
        raise ValueError(f"size must be an int or an (h, w) pair, got {size!r}")
    side = _positive_int(size, "size")
    return side, side


def _resize_and_crop(
    image_size: tuple[int, int], target: tuple[int, int], resize: int | None, path: Path
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The ``(width, height)`` to resize to and the ``(top, left)`` of the crop after."""
    w0, h0 = image_size
    h, w = target
    if resize is not None:  # Shorter side exactly `resize`; the longer side as torchvision.
        short = min(w0, h0)
        width, height = resize * w0 // short, resize * h0 // short
    elif h * w0 >= w * h0:  # The height is the binding constraint.
        width, height = max(w, round(w0 * h / h0)), h
    else:
        width, height = w, max(h, round(h0 * w / w0))
    if width < w or height < h:
        raise ValueError(
            f"{path}: resize={resize} gives {width}x{height} (w x h), smaller than the {w}x{h} crop"
        )
    return (width, height), (round((height - h) / 2), round((width - w) / 2))


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, composited over white if the image has transparency."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _as_unit_float(images: Any) -> np.ndarray:
    """A float (checked, clipped) or uint8 array -> float32 in [0, 1]."""
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if array.dtype.kind not in "fb" and array.dtype.name != "bfloat16":
        raise TypeError(f"images must be floats in [0, 1] or uint8, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if array.size and not np.all(np.isfinite(array)):
        raise ValueError("images contain NaN or infinite values; expected floats in [0, 1]")
    if array.size:
        low, high = float(array.min()), float(array.max())
        if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
            raise ValueError(f"images must be in [0, 1], found values in [{low:.4g}, {high:.4g}]")
    return np.clip(array, 0.0, 1.0)
