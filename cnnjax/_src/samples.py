"""The sample photos shipped with cnnjax (scikit-image's, public domain / CC0; see
``cnnjax/assets/photos/LICENSE.md``)."""

from __future__ import annotations

from importlib import resources

import numpy as np

from cnnjax._src.image_io import load_image

__all__ = ["SAMPLE_PHOTOS", "SAMPLE_STYLES", "sample_photos", "sample_styles"]

#: File names of the bundled photos: a tabby cat, an espresso, an astronaut with a helmet,
#: a rocket launch.
SAMPLE_PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")


#: Style images for style transfer: a stained tissue section (immunohistochemistry) and the
#: Hubble eXtreme Deep Field, from scikit-image (see ``cnnjax/assets/styles/LICENSE.md``).
SAMPLE_STYLES = ("ihc.png", "hubble_deep_field.jpg")


def sample_photos(size: int | None = 224, resize: int | None = 256) -> dict[str, np.ndarray]:
    """The bundled sample photos by file name, each float32 ``[1, h, w, 3]`` in [0, 1].

    Args:
      size: centre-crop size (None: the photos at their own size).
      resize: shorter side before the crop (the ImageNet evaluation transform is 256 -> 224).

    Example:
      >>> photos = sample_photos()
      >>> sorted(photos)
      ['astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg']
      >>> photos["chelsea.png"].shape
      (1, 224, 224, 3)
    """
    folder = resources.files("cnnjax").joinpath("assets/photos")
    photos = {}
    for name in SAMPLE_PHOTOS:
        with resources.as_file(folder.joinpath(name)) as path:
            photos[name] = load_image(path, size, resize=resize if size else None)
    return photos


def sample_styles(size: int | None = 224) -> dict[str, np.ndarray]:
    """The bundled style images by file name, each float32 ``[1, size, size, 3]`` in [0, 1]
    (None: their own 256x256)."""
    folder = resources.files("cnnjax").joinpath("assets/styles")
    styles = {}
    for name in SAMPLE_STYLES:
        with resources.as_file(folder.joinpath(name)) as path:
            styles[name] = load_image(path, size)
    return styles
