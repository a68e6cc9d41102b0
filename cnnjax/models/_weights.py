"""Bundled weights: finding them, checking them, and the file format they are stored in.

Weights are stored in the safetensors layout (an 8-byte little-endian header length, a JSON
header naming each tensor's dtype, shape and byte range, then the raw little-endian bytes), so
any safetensors reader can open them; this module reads and writes the format with NumPy alone.
Writing is deterministic (sorted names, fixed JSON formatting) so a conversion script rebuilds
the committed file bit for bit, and atomic (a temporary file, then ``os.replace``).

Each weights file ``NAME.safetensors`` has a manifest ``NAME.json`` beside it with its sha256;
:func:`load_checked` refuses a missing, truncated or corrupted file with an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnnjax._src.atomic import atomic_write_bytes

__all__ = [
    "weights_dir",
    "read_manifest",
    "load_checked",
    "verified_file",
    "read_safetensors",
    "write_safetensors",
    "sha256_file",
]

_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1"}
_CODES = {np.dtype(v).str: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def weights_dir() -> Path:
    """Where bundled weights live: ``$CNNJAX_WEIGHTS``, else the installed package's
    ``cnnjax/weights``, else the repository's ``weights/`` beside the package."""
    env = os.environ.get("CNNJAX_WEIGHTS")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "weights", package.parent / "weights"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no weights directory found (looked in {package / 'weights'} and "
        f"{package.parent / 'weights'}); set CNNJAX_WEIGHTS to the folder holding the .safetensors "
        "files"
    )


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def encode_safetensors(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Encode tensors in the safetensors layout, deterministically (sorted by name)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        code = _CODES.get(arr.dtype.newbyteorder("<").str if arr.dtype.byteorder == ">" else arr.dtype.str)
        if code is None:
            raise ValueError(f"tensor {name!r}: unsupported dtype {arr.dtype}")
        raw = arr.astype(_DTYPES[code], copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), sort_keys=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def write_safetensors(path, tensors, metadata=None) -> Path:
    """Atomically write ``tensors`` (name -> array) to ``path`` in the safetensors layout."""
    return atomic_write_bytes(path, encode_safetensors(tensors, metadata))


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file into ``(tensors, metadata)``; malformed files are a ValueError."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (only {len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > min(_MAX_HEADER, len(data) - 8):
        raise ValueError(f"{path}: corrupted or truncated safetensors header (length {n})")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupted safetensors header ({e})") from None
    body = memoryview(data)[8 + n :]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            begin, end = info["data_offsets"]
            shape = tuple(int(s) for s in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: malformed entry for tensor {name!r}") from None
        if not 0 <= begin <= end <= len(body) or end - begin != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"{path}: tensor {name!r} reaches past the end of the file (truncated?)")
        array = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape)
        tensors[name] = array.astype(dtype.newbyteorder("="))
    return tensors, metadata


def read_manifest(name: str, directory: str | os.PathLike | None = None) -> tuple[dict, Path]:
    """Read ``NAME.json`` from the weights directory; return it and the directory."""
    directory = Path(directory) if directory is not None else weights_dir()
    path = directory / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"weights manifest {path} is missing")
    try:
        return json.loads(path.read_text()), directory
    except json.JSONDecodeError as e:
        raise ValueError(f"weights manifest {path} is corrupted ({e})") from None


def verified_file(name: str, directory: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """The path of ``NAME.safetensors`` and its manifest, after checking size and sha256.

    Raises:
      FileNotFoundError: the file or its manifest is missing.
      ValueError: the file is truncated or its checksum differs from the manifest's.
    """
    manifest, directory = read_manifest(name, directory)
    path = directory / manifest["file"]
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} is missing (see {directory / (name + '.json')})")
    size = path.stat().st_size
    if size != manifest["bytes"]:
        raise ValueError(
            f"weights file {path} has {size} bytes, expected {manifest['bytes']}: it is truncated "
            "or corrupted; restore it from the repository"
        )
    digest = sha256_file(path)
    if digest != manifest["sha256"]:
        raise ValueError(
            f"weights file {path} is corrupted: sha256 {digest} differs from the manifest's "
            f"{manifest['sha256']}; restore it from the repository"
        )
    return path, manifest


def load_checked(name: str, directory: str | os.PathLike | None = None):
    """Load bundled weights ``NAME.safetensors`` after checking its size and sha256
    (:func:`verified_file`).

    Returns:
      ``(tensors, manifest)``.
    """
    path, manifest = verified_file(name, directory)
    tensors, _ = read_safetensors(path)
    return tensors, manifest
