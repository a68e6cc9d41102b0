"""Image folders: one sub-folder of images per class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnjax._src.image_io import load_images
from cnnjax.data._dataset import Dataset, make_dataset

__all__ = ["load_image_folder"]


def load_image_folder(
    root: str | os.PathLike[str], size: int | tuple[int, int], *, resize: int | None = None
) -> Dataset:
    """Load a folder with one sub-folder of images per class, as RGB images of one size.

    The sorted sub-folder names are the class names (label 0 is the first). In each class
    folder every file Pillow recognises by its suffix is loaded (sorted by name) with
    :func:`cnnjax.load_images`, resized and centre-cropped to ``size``. Hidden
    files and folders (names starting with ``.``), other files, files directly in ``root`` and
    deeper sub-folders are skipped.

    Args:
      root: the folder, laid out as ``root/<class>/<image>``.
      size: the image size, an int ``s`` (``s x s``) or ``(h, w)``.
      resize: the shorter side after resizing, before the crop (see ``load_image``).

    Returns:
      A ``Dataset`` of ``[n, h, w, 3]`` images, in class order then file-name order.

    Raises:
      FileNotFoundError: ``root`` does not exist.
      NotADirectoryError: ``root`` is a file.
      ValueError: ``root`` has no class sub-folders, a class folder has no images, or an image
        cannot be read.

    Example:
      >>> import os, tempfile
      >>> from cnnjax import save_image
      >>> root, rng = tempfile.mkdtemp(), np.random.default_rng(0)
      >>> for path in ("cat/1.jpg", "cat/2.png", "dog/1.jpg"):  # root/<class>/<image>
      ...     _ = save_image(os.path.join(root, path), rng.random((80, 100, 3)))
      >>> ds = load_image_folder(root, 64)
      >>> ds.class_names, ds.labels, ds.images.shape
      (('cat', 'dog'), array([0, 0, 1], dtype=int32), (3, 64, 64, 3))
    """
    from PIL import Image

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; expected a folder with one sub-folder per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(
            f"{root} has no class sub-folders; expected one folder of images per class, "
            "e.g. root/cat/1.jpg and root/dog/1.jpg"
        )
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(class_dirs):
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
        )
        if not files:
            raise ValueError(
                f"class folder {folder} has no images (files ending in e.g. .png, .jpg, .jpeg, .bmp)"
            )
        paths += files
        labels += [label] * len(files)
    images = load_images(paths, size, resize=resize)
    return make_dataset(images, np.asarray(labels, np.int32), [p.name for p in class_dirs])
