"""Concept data in the Broden layout (Network Dissection, Bau et al. CVPR 2017): images with
per-pixel and per-image labels of colours, objects, parts, materials, scenes and textures."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["CATEGORIES", "BrodenData", "load_broden"]

#: Broden's six concept categories, in the order the index's columns and the concept maps use.
CATEGORIES = ("color", "object", "part", "material", "scene", "texture")

_SIZE_COLUMNS = ("ih", "iw", "sh", "sw")
_INT = re.compile(r"[+-]?\d+")


@dataclasses.dataclass(frozen=True, eq=False)
class BrodenData:
    """A Broden-layout concept data set: the checked index, read by :func:`load_broden`; the
    masks are read only when :meth:`concept_maps` asks for them.

    Attributes:
      root: the data set's folder (absolute).
      names: the concept names; the index is the concept id (label.csv's ``number``). Id 0 is
        ``"-"``, no concept; ids that label.csv skips are named ``""`` and never occur.
      concept_category: int32 ``[len(names)]``: each concept's category (the first one
        label.csv lists) as an index into ``categories``; -1 for id 0, for skipped ids and
        for categories that are not among ``categories``.
      categories: the categories that index.csv has a column for, in :data:`CATEGORIES` order.
      image_files: the images' absolute paths (``root/images/...``), in index order.
      mask_size: ``(sh, sw)``, the size of every mask (the same for every image).
      maps_per_image: the most concept maps any image has: one per mask file and one per image-level
        label; the first axis of :meth:`concept_maps` after the batch.

    Example:
      >>> import tempfile
      >>> from cnnjax.testing import write_broden
      >>> data = load_broden(write_broden(tempfile.mkdtemp(), n=4))
      >>> len(data), data.categories, data.mask_size, data.maps_per_image
      (4, ('color', 'object', 'scene', 'texture'), (16, 16), 4)
      >>> data.names[1], data.categories[data.concept_category[1]]
      ('red', 'color')
    """

    root: Path
    names: tuple[str, ...]
    concept_category: np.ndarray
    categories: tuple[str, ...]
    image_files: tuple[Path, ...]
    mask_size: tuple[int, int]
    maps_per_image: int
    # Per image, its concept maps in order: (index into categories, mask file or concept id).
    _entries: tuple[tuple[tuple[int, Path | int], ...], ...] = dataclasses.field(repr=False)
    # Which ids label.csv defines (id 0 always).
    _known: np.ndarray = dataclasses.field(repr=False)

    def __len__(self) -> int:
        return len(self.image_files)

    def __repr__(self) -> str:
        return (
            f"BrodenData(root={str(self.root)!r}, images={len(self)}, concepts={len(self.names)}, "
            f"categories={self.categories!r}, mask_size={self.mask_size!r}, "
            f"maps_per_image={self.maps_per_image})"
        )

    def images(self):
        """The data set's images as an :class:`~cnnjax.data.ImageCollection`, in index order (the
        mask files beside them left out)."""
        from cnnjax.data._collection import ImageCollection

        base = self.root / "images"
        return ImageCollection(tuple(str(p.relative_to(base)) for p in self.image_files), root=base)

    def concept_maps(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The label maps of some images, read from their mask files.

        Each image has one layer per mask file (its pixels' concept ids, ``R + 256 * G`` of the
        RGB PNG) and one per image-level label (scene, texture, or any number in a category
        field), which fills its whole layer. The layers are in :data:`CATEGORIES` order, then
        in the order index.csv lists them; layers an image does not have are 0.

        Args:
          indices: image indices (ints in ``[0, len(self))``), a sequence or a 1-D array.

        Returns:
          ``(maps, annotated)``: int32 ``[b, maps_per_image, sh, sw]`` concept ids (0: none) and bool
          ``[b, len(categories)]``, whether each image has any annotation of each category.

        Raises:
          IndexError: an index out of range.
          ValueError: ``indices`` are not integers; a mask that cannot be read, whose size
            is not ``mask_size`` or that holds an id label.csv does not define (each message
            names the file).

        Example:
          >>> import tempfile
          >>> from cnnjax.testing import write_broden
          >>> data = load_broden(write_broden(tempfile.mkdtemp(), n=4))
          >>> labels, annotated = data.concept_maps([0, 3])
          >>> labels.shape, labels.dtype, annotated.shape
          ((2, 4, 16, 16), dtype('int32'), (2, 4))
          >>> [data.names[i] for i in np.unique(labels[0, 2])]  # the scene layer: one label
          ['indoor']
        """
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise ValueError(f"indices must be a 1-D sequence of ints, got {idx.dtype} of shape {idx.shape}")
        bad = (idx < 0) | (idx >= len(self))
        if bad.any():
            raise IndexError(f"image index {int(idx[bad][0])} is out of range for {len(self)} images")
        sh, sw = self.mask_size
        labels = np.zeros((len(idx), self.maps_per_image, sh, sw), np.int32)
        annotated = np.zeros((len(idx), len(self.categories)), bool)
        for row, i in enumerate(idx.tolist()):
            for layer, (category, entry) in enumerate(self._entries[i]):
                annotated[row, category] = True
                labels[row, layer] = entry if isinstance(entry, int) else self._read_mask(entry)
        return labels, annotated

    def _read_mask(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        sh, sw = self.mask_size
        try:
            with Image.open(path) as image:
                w, h = image.size  # known before any pixel is decoded
                if (h, w) != (sh, sw):
                    raise ValueError(
                        f"mask {path} is {h}x{w} (height x width) but index.csv gives every mask as "
                        f"sh x sw = {sh}x{sw}"
                    )
                if image.mode not in ("RGB", "RGBA", "P"):
                    raise ValueError(
                        f"mask {path} has mode {image.mode}; expected an RGB PNG whose pixels hold "
                        "concept ids as R + 256 * G"
                    )
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise ValueError(f"cannot read mask {path}: {e}") from None
        ids = rgb[..., 0].astype(np.int32) + 256 * rgb[..., 1].astype(np.int32)
        known = self._known
        unknown = ids >= len(known)
        unknown[~unknown] = ~known[ids[~unknown]]
        if unknown.any():
            raise ValueError(
                f"unknown concept id {int(ids[unknown].min())} in {path}: label.csv has no such number"
            )
        return ids


def load_broden(root: str | os.PathLike[str], *, split: str | None = None) -> BrodenData:
    """Read and check a data set in the Broden layout; the masks are read by
    :meth:`BrodenData.concept_maps`.

    The layout (that of the released Broden data set):

    * ``root/index.csv``, header ``image,split,ih,iw,sh,sw`` and any of the category columns
      ``color,object,part,material,scene,texture``. ``image`` is a path relative to
      ``root/images/``; ``sh, sw`` is the size of the image's masks. A category field holds
      ``;``-separated entries, each a mask file name (relative to ``root/images/``) or an
      integer concept number (an image-level label, e.g. a scene).
    * ``root/label.csv``, header ``number,name,category,...``; ``category`` is like
      ``color(12);object(3)``, and a concept's category is the first one listed.
    * optionally ``root/c_<category>.csv`` (``code,number,name,...``): only checked, that
      every number in it is in label.csv.
    * mask PNGs, RGB: a pixel's concept id is ``R + 256 * G`` (0: none).

    Everything that can be checked without decoding a mask is checked here, on the rows that
    ``split`` keeps, so a long run fails before it starts: both CSV files and their headers,
    that every image and mask file exists, that every image-level label is in label.csv and
    that every row gives the same mask size. The masks' own sizes and ids are checked as
    :meth:`BrodenData.concept_maps` reads them.

    Args:
      root: the data set's folder.
      split: keep only the rows whose ``split`` column is this (e.g. ``"train"``, ``"val"``);
        None keeps every row.

    Returns:
      A :class:`BrodenData`, images in index order.

    Raises:
      FileNotFoundError: index.csv or label.csv is missing (the message names it).
      ValueError: a bad header or value (naming the file and line), missing image or mask
        files (naming the first one, its line, and how many are missing), an image-level label
        number that label.csv does not define, rows with different mask sizes, an empty index
        or a ``split`` that no row has.

    Example:
      >>> import tempfile
      >>> from cnnjax.testing import write_broden
      >>> root = write_broden(tempfile.mkdtemp(), n=6)  # every third image is in "val"
      >>> len(load_broden(root)), len(load_broden(root, split="val"))
      (6, 2)
      >>> load_broden(root).image_files[0].relative_to(root)
      PosixPath('images/synthetic/0000.png')
    """
    root = Path(root).absolute()
    index_path, label_path = root / "index.csv", root / "label.csv"
    for path in (index_path, label_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; a Broden-layout folder has index.csv and label.csv"
            )

    names, category_names, known = _read_label_csv(label_path)
    for category in CATEGORIES:
        _check_category_csv(root / f"c_{category}.csv", known)

    header, rows = _read_csv(index_path)
    missing_columns = [c for c in ("image", *_SIZE_COLUMNS) if c not in header]
    if missing_columns:
        raise ValueError(
            f"{index_path}: the header has no column {', '.join(missing_columns)}; expected "
            f"image,split,ih,iw,sh,sw and category columns ({','.join(CATEGORIES)}), got {','.join(header)}"
        )
    if not rows:
        raise ValueError(f"{index_path} has no rows: the index is empty")
    if split is not None:
        if "split" not in header:
            raise ValueError(f"{index_path} has no split column, so split={split!r} cannot be selected")
        splits = sorted({row["split"] for _, row in rows})
        rows = [(line, row) for line, row in rows if row["split"] == split]
        if not rows:
            raise ValueError(
                f"{index_path} has no rows with split {split!r}; its splits are "
                f"{', '.join(repr(s) for s in splits)}"
            )

    categories = tuple(c for c in CATEGORIES if c in header)
    images_dir = root / "images"
    image_files: list[Path] = []
    entries: list[tuple[tuple[int, Path | int], ...]] = []
    files: list[tuple[Path, int]] = []  # every file named, with its line
    mask_size: tuple[int, int] | None = None
    first_line = 0
    for line, row in rows:
        sizes = {c: _positive_int(row[c], c, index_path, line) for c in _SIZE_COLUMNS}
        size = (sizes["sh"], sizes["sw"])
        if mask_size is None:
            mask_size, first_line = size, line
        elif size != mask_size:
            raise ValueError(
                f"{index_path}: line {line} gives mask size sh, sw = {size[0]}, {size[1]} but line "
                f"{first_line} gives {mask_size[0]}, {mask_size[1]}; every mask must have one size"
            )
        if not row["image"]:
            raise ValueError(f"{index_path}: line {line} has an empty image field")
        image = images_dir / row["image"]
        image_files.append(image)
        files.append((image, line))
        layers: list[tuple[int, Path | int]] = []
        for c, category in enumerate(categories):
            for entry in (e.strip() for e in row[category].split(";")):
                if not entry:
                    continue
                if _INT.fullmatch(entry):
                    number = int(entry)
                    if not (0 <= number < len(known) and known[number]):
                        raise ValueError(
                            f"{index_path}: line {line}: the {category} label {number} is not a "
                            f"number in {label_path}"
                        )
                    layers.append((c, number))
                else:
                    mask = images_dir / entry
                    layers.append((c, mask))
                    files.append((mask, line))
        entries.append(tuple(layers))

    missing = [(path, line) for path, line in files if not path.is_file()]
    if missing:
        path, line = missing[0]
        raise ValueError(
            f"{len(missing)} of the {len(files)} files that {index_path} names are missing; the "
            f"first is {path} (line {line})"
        )

    concept_category = np.full(len(names), -1, np.int32)
    for i, category in enumerate(category_names):
        if category in categories:
            concept_category[i] = categories.index(category)
    concept_category.setflags(write=False)
    known.setflags(write=False)
    assert mask_size is not None
    return BrodenData(
        root=root,
        names=tuple(names),
        concept_category=concept_category,
        categories=categories,
        image_files=tuple(image_files),
        mask_size=mask_size,
        maps_per_image=max(len(e) for e in entries),
        _entries=tuple(entries),
        _known=known,
    )


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and the rows of a CSV file, each row with its line number (the header is
    line 1); short rows are padded with empty fields."""
    with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM is not part of the header
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        rows = []
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue  # a blank line
            if len(fields) > len(header):
                raise ValueError(
                    f"{path}: line {reader.line_num} has {len(fields)} fields but the header "
                    f"has {len(header)} columns"
                )
            fields += [""] * (len(header) - len(fields))
            rows.append((reader.line_num, dict(zip(header, fields))))
    return header, rows


def _positive_int(value: str, column: str, path: Path, line: int) -> int:
    if not _INT.fullmatch(value.strip()) or int(value) <= 0:
        raise ValueError(f"{path}: line {line}: {column} must be a positive integer, got {value!r}")
    return int(value)


def _read_label_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """label.csv: the names and first categories by id, and which ids it defines."""
    header, rows = _read_csv(path)
    absent = [c for c in ("number", "name", "category") if c not in header]
    if absent:
        raise ValueError(
            f"{path}: the header has no column {', '.join(absent)}; expected "
            f"number,name,category,frequency,coverage,syns, got {','.join(header)}"
        )
    by_number: dict[int, tuple[str, str]] = {}
    for line, row in rows:
        number = row["number"].strip()
        if not _INT.fullmatch(number) or int(number) < 0:
            raise ValueError(f"{path}: line {line}: number must be an integer >= 0, got {number!r}")
        if int(number) in by_number:
            raise ValueError(f"{path}: line {line}: number {int(number)} is defined twice")
        category = row["category"].split(";")[0].split("(")[0].strip()
        by_number[int(number)] = (row["name"], category)
    size = max(by_number, default=0) + 1
    names, categories = [""] * size, [""] * size
    known = np.zeros(size, bool)
    for number, (name, category) in by_number.items():
        names[number], categories[number], known[number] = name, category, True
    names[0], categories[0], known[0] = "-", "", True
    return names, categories, known


def _check_category_csv(path: Path, known: np.ndarray) -> None:
    """c_<category>.csv, if present: every number in it is defined by label.csv."""
    if not path.is_file():
        return
    header, rows = _read_csv(path)
    if "number" not in header:
        raise ValueError(
            f"{path}: the header has no column number; expected code,number,name,frequency,coverage"
        )
    for line, row in rows:
        number = row["number"].strip()
        if not _INT.fullmatch(number):
            raise ValueError(f"{path}: line {line}: number must be an integer, got {number!r}")
        if not (0 <= int(number) < len(known) and known[int(number)]):
            raise ValueError(f"{path}: line {line}: number {int(number)} is not a number in label.csv")
