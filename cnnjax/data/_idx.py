"""IDX files and the MNIST-like data sets (Fashion-MNIST, MNIST): found on disk or, only when
asked, downloaded from the official address and checked against known checksums."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cnnjax._src.atomic import atomic_write
from cnnjax.data._dataset import Dataset, make_dataset

__all__ = [
    "DataNotFoundError",
    "FASHION_MNIST_CHECKSUMS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_URL",
    "MNIST_CHECKSUMS",
    "MNIST_CLASSES",
    "MNIST_URL",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "write_idx",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(digit) for digit in range(10))

#: The official Fashion-MNIST address (Zalando's S3 website; it serves plain HTTP only, so the
#: files are checked against the SHA-256 digests below).
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: SHA-256 of the official ``.gz`` files. Their MD5s are the ones the Fashion-MNIST README
#: publishes (train-images 8d4fb7e6c68d591d4c3dfef9ec88bf0d, train-labels
#: 25c81989df183df01b3e8a0aad5dffbe, t10k-images bef4ecab320f06d8554ea6380940ec79, t10k-labels
#: bb300cfdad3c16e7a12a480ee83cd310). Both were checked on files rebuilt byte for byte from
#: Debian's copies, whose gzip headers differ (Debian drops the stored file name and the
#: time stamp), so Debian's ``.gz`` files have other digests but the same contents.
FASHION_MNIST_CHECKSUMS: Mapping[str, str] = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
#: The MNIST mirror that torchvision uses (Yann LeCun's original site no longer serves it).
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: MD5 of the original MNIST ``.gz`` files, as published by torchvision and others.
MNIST_CHECKSUMS: Mapping[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

# The four IDX files of an MNIST-like dataset, without the optional ".gz".
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Where operating-system packages install the files (`dpkg -c` on Debian's
# dataset-fashion-mnist 0.0~git20200523.55506a9-1 shows /usr/share/datasets/fashion-mnist/).
_SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (),
}
_ENV_VAR = "CNNJAX_DATA"

# IDX type code -> dtype (big-endian, as the format stores it).
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_TYPE_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
_GZIP_MAGIC = b"\x1f\x8b"


# --- IDX files -----------------------------------------------------------------------------


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a NumPy array.

    The format: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int,
    0x0D float, 0x0E double), the number of dimensions, each dimension as a big-endian
    uint32, then the values in row-major order, big-endian. Gzip compression is recognised by
    the gzip magic number, whatever the file is called.

    Args:
      path: the file.

    Returns:
      The array, in native byte order, with the stored dtype and shape.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: corrupt gzip data, a bad magic number or type code, or a file shorter or
        longer than its header says; the message names the file and what was expected.

    Example:
      >>> import os, tempfile
      >>> path = write_idx(os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz"),
      ...                  np.array([3, 1, 4], np.uint8))
      >>> labels = read_idx(path)
      >>> labels, labels.dtype
      (array([3, 1, 4], dtype=uint8), dtype('uint8'))
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an IDX file (4-byte header expected)")
    if raw[:2] != b"\x00\x00":
        raise ValueError(
            f"{path}: not an IDX file: it starts with bytes {raw[:2].hex()}, expected 0000 "
            "(the IDX magic number) or 1f8b (gzip)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X} ({n})" for c, n in _IDX_TYPE_NAMES.items())
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X}; expected one of {valid}")
    if ndim == 0:
        raise ValueError(f"{path}: the IDX header declares 0 dimensions; expected at least 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} header bytes, "
            f"the file has {len(raw)}"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "corrupt"
        raise ValueError(
            f"{path}: {what} IDX file: the header declares shape {shape} of "
            f"{_IDX_TYPE_NAMES[code]}, i.e. {expected} bytes of data, but {got} bytes follow it"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: Any, *, compress: bool | None = None) -> Path:
    """Write an array as an IDX file, atomically (the inverse of :func:`read_idx`).

    Args:
      path: the file to write; parent folders are created.
      array: a NumPy array of dtype uint8, int8, int16, int32, float32 or float64 with 1 to
        255 dimensions.
      compress: gzip the file; default: when ``path`` ends in ``.gz``.

    Returns:
      The ``Path`` written.

    Raises:
      ValueError: an unsupported dtype, no dimensions, or a dimension too large for IDX.

    Example:
      >>> import os, tempfile
      >>> path = write_idx(os.path.join(tempfile.mkdtemp(), "images-idx3-ubyte.gz"),
      ...                  np.zeros((2, 28, 28), np.uint8))
      >>> path.name, read_idx(path).shape
      ('images-idx3-ubyte.gz', (2, 28, 28))
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        valid = ", ".join(str(d.newbyteorder("=")) for d in _IDX_DTYPES.values())
        raise ValueError(f"IDX files hold {valid}; got dtype {array.dtype}")
    if not 1 <= array.ndim <= 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(f"IDX files hold 1 to 255 dimensions below 2**32 each, got shape {array.shape}")
    data = struct.pack(f">2xBB{array.ndim}I", code, array.ndim, *array.shape)
    data += np.ascontiguousarray(array, _IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, mtime=0)
    return atomic_write(path, lambda f: f.write(data))


# --- MNIST-like datasets -------------------------------------------------------------------


def load_fashion_mnist(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    base_url: str = FASHION_MNIST_URL,
    checksums: Mapping[str, str] = FASHION_MNIST_CHECKSUMS,
    progress: bool = True,
) -> tuple[Dataset, Dataset]:
    """Load Fashion-MNIST (Xiao, Rasul and Vollgraf 2017) as its official train and test sets.

    The four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each ``.gz`` or not) are looked for,
    in this order, in:

    1. ``path`` and ``path/fashion-mnist``, when ``path`` is given (and only there: an explicit
       folder is never silently replaced by another copy);
    2. ``$CNNJAX_DATA/fashion-mnist`` and ``$CNNJAX_DATA`` (several folders may be joined with
       ``os.pathsep``);
    3. ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist`` package
       installs them;
    4. the user cache, ``~/.cache/cnnjax/fashion-mnist`` (``$XDG_CACHE_HOME`` if set).

    If they are not found and ``download=True``, the missing files are downloaded from
    ``base_url`` into ``path`` (if given) or the cache, with a progress bar, each one checked
    against ``checksums`` before it is atomically moved into place. Without ``download=True``
    nothing is ever fetched.

    Args:
      path: a folder holding the four files.
      download: fetch the files if they are not found.
      base_url: the address the four ``.gz`` files are fetched from.
      checksums: file name (``*.gz``) -> hex digest of the downloaded file: 32 hex digits for
        MD5, 64 for SHA-256. The default holds the official files' SHA-256.
      progress: show a progress bar while downloading.

    Returns:
      ``(train, test)``: 60,000 and 10,000 examples of ``[28, 28, 1]`` images, class names
      ``FASHION_MNIST_CLASSES``.

    Raises:
      FileNotFoundError: the files are not found and ``download`` is false; the message lists
        every folder searched and the ways to fix it.
      ValueError: a corrupt file, a download whose checksum does not match (it is discarded),
        or files whose shapes or labels do not fit together.
      OSError: a download failed.

    Example:
      Any folder holding the four files works; here a stand-in with 6 and 2 blank images:

      >>> import os, tempfile
      >>> folder = tempfile.mkdtemp()
      >>> for part, n in (("train", 6), ("t10k", 2)):
      ...     images, labels = np.zeros((n, 28, 28), np.uint8), np.arange(n, dtype=np.uint8)
      ...     _ = write_idx(os.path.join(folder, f"{part}-images-idx3-ubyte.gz"), images)
      ...     _ = write_idx(os.path.join(folder, f"{part}-labels-idx1-ubyte.gz"), labels)
      >>> train, test = load_fashion_mnist(folder)
      >>> train.images.shape, len(test), test.class_names[0]
      ((6, 28, 28, 1), 2, 'T-shirt/top')
    """
    return _load_mnist_like(
        "fashion-mnist", "Fashion-MNIST", FASHION_MNIST_CLASSES, path, download, base_url,
        checksums, progress, "load_fashion_mnist",
    )  # fmt: skip


def load_mnist(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    base_url: str = MNIST_URL,
    checksums: Mapping[str, str] = MNIST_CHECKSUMS,
    progress: bool = True,
) -> tuple[Dataset, Dataset]:
    """Load MNIST handwritten digits (LeCun et al. 1998) as the official train and test sets.

    The files and the search order are those of :func:`load_fashion_mnist`, with ``mnist``
    in place of ``fashion-mnist`` (no operating-system package is searched).

    Args:
      path: a folder holding the four files.
      download: fetch the files if they are not found.
      base_url: the address the four ``.gz`` files are fetched from (default: the mirror
        torchvision uses).
      checksums: file name (``*.gz``) -> hex digest (MD5 or SHA-256) of the downloaded file.
      progress: show a progress bar while downloading.

    Returns:
      ``(train, test)``: 60,000 and 10,000 examples of ``[28, 28, 1]`` images, class names
      ``"0"`` to ``"9"``.

    Raises:
      FileNotFoundError: the files are not found and ``download`` is false.
      ValueError: a corrupt file or a download whose checksum does not match.
      OSError: a download failed.

    Example:
      >>> train, test = load_mnist(download=True)  # doctest: +SKIP
      >>> len(train), len(test)  # doctest: +SKIP
      (60000, 10000)
    """
    return _load_mnist_like(
        "mnist", "MNIST", MNIST_CLASSES, path, download, base_url, checksums, progress, "load_mnist"
    )


def _load_mnist_like(
    name: str,
    display: str,
    class_names: tuple[str, ...],
    path: str | os.PathLike[str] | None,
    download: bool,
    base_url: str,
    checksums: Mapping[str, str],
    progress: bool,
    function: str,
) -> tuple[Dataset, Dataset]:
    if path is not None:
        candidates = [Path(path), Path(path) / name]
    else:
        candidates = []
        for root in os.environ.get(_ENV_VAR, "").split(os.pathsep):
            if root:
                candidates += [Path(root) / name, Path(root)]
        candidates += [*_SYSTEM_DIRS.get(name, ()), _cache_dir(name)]

    searched = [] if path is not None or os.environ.get(_ENV_VAR) else [f"  ${_ENV_VAR} (not set)"]
    files = None
    for folder in candidates:
        files, reason = _find_idx_files(folder)
        if files is not None:
            break
        searched.append(f"  {folder} ({reason})")
    if files is None and download:
        target = Path(path) if path is not None else _cache_dir(name)
        _download_idx_files(target, base_url, checksums, progress)
        files, reason = _find_idx_files(target)
        if files is None:  # Not expected: every file was just written.
            raise FileNotFoundError(f"{display}: downloaded into {target} but {reason}")
    if files is None:
        wanted = ", ".join(f"{f}(.gz)" for f in _IDX_FILES)
        fixes = [
            f"pass {function}(path=...) the folder that holds them",
            f"set {_ENV_VAR} to a folder holding them (or a {name}/ sub-folder of it)",
        ]
        if name == "fashion-mnist":
            fixes.append(
                "on Debian and its derivatives: apt-get install dataset-fashion-mnist "
                "(installs them into /usr/share/datasets/fashion-mnist)"
            )
        fixes.append(
            f"or call {function}(download=True) to fetch them from {base_url} into "
            f"{Path(path) if path is not None else _cache_dir(name)}"
        )
        raise DataNotFoundError(
            f"{display} not found. Looked for {wanted} in:\n"
            + "\n".join(searched)
            + "\nTo fix it:\n"
            + "\n".join(f"  - {fix}" for fix in fixes),
            display=display,
            searched=[line.strip() for line in searched],
        )

    arrays = {stem: read_idx(file) for stem, file in files.items()}
    train = _idx_dataset(arrays, "train", files, class_names)
    test = _idx_dataset(arrays, "t10k", files, class_names)
    return train, test


class DataNotFoundError(FileNotFoundError):
    """A data set's files were found nowhere; ``searched`` lists where they were looked for."""

    def __init__(self, message: str, *, display: str, searched: list[str]):
        super().__init__(message)
        self.display, self.searched = display, searched


def _cache_dir(name: str) -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "cnnjax" / name


def _find_idx_files(folder: Path) -> tuple[dict[str, Path] | None, str]:
    """The four IDX files in ``folder`` (``.gz`` preferred), or ``None`` and why not."""
    if not folder.is_dir():
        return None, "no such folder" if not folder.exists() else "not a folder"
    found, missing = {}, []
    for stem in _IDX_FILES:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            missing.append(stem)
    if missing:
        return None, "missing " + ", ".join(missing)
    return found, ""


def _idx_dataset(
    arrays: dict[str, np.ndarray], prefix: str, files: dict[str, Path], class_names: tuple[str, ...]
) -> Dataset:
    images_key, labels_key = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images, labels = arrays[images_key], arrays[labels_key]
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{files[images_key]}: expected uint8 images [n, h, w], got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{files[labels_key]}: expected {images.shape[0]} uint8 labels to match "
            f"{files[images_key].name}, got {labels.dtype} {labels.shape}"
        )
    try:
        return make_dataset(images[..., None], labels, class_names)
    except ValueError as e:
        raise ValueError(f"{files[labels_key]}: {e}") from None


def _download_idx_files(target: Path, base_url: str, checksums: Mapping[str, str], progress: bool) -> None:
    """Download the missing ``.gz`` files into ``target``, each checked before it lands."""
    names = [f"{stem}.gz" for stem in _IDX_FILES]
    for filename in names:  # Check the whole table before fetching anything.
        _digest_algorithm(checksums.get(filename), filename)
    for stem, filename in zip(_IDX_FILES, names):
        if (target / filename).is_file() or (target / stem).is_file():
            continue  # Kept from an earlier, interrupted download or put there by the user.
        url = base_url.rstrip("/") + "/" + filename
        _download(url, target / filename, checksums[filename], progress)


def _digest_algorithm(digest: Any, filename: str) -> str:
    if isinstance(digest, str):
        try:
            bytes.fromhex(digest)
        except ValueError:
            pass
        else:
            if len(digest) == 32:
                return "md5"
            if len(digest) == 64:
                return "sha256"
    raise ValueError(
        f"checksums must map {filename!r} to a hex MD5 (32 digits) or SHA-256 (64 digits) "
        f"digest, got {digest!r}"
    )


def _download(url: str, dest: Path, expected: str, progress: bool) -> None:
    """Fetch ``url`` into ``dest`` atomically; a checksum mismatch leaves nothing behind."""
    from tqdm import tqdm

    algorithm = _digest_algorithm(expected, dest.name)

    def write(f: BinaryIO) -> None:
        digest = hashlib.new(algorithm)
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                disable=not progress, leave=False,
            ) as bar:  # fmt: skip
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != expected.lower():
            raise ValueError(
                f"{url}: {algorithm} checksum mismatch: got {digest.hexdigest()}, expected "
                f"{expected.lower()}; the download was discarded and {dest} was not written"
            )

    try:
        atomic_write(dest, write)
    except urllib.error.HTTPError as e:
        e.close()  # It holds the error response open.
        raise OSError(f"could not download {url}: {e}") from None
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise OSError(f"could not download {url}: {e}") from e
