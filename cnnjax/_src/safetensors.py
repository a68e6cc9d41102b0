"""The safetensors file layout, read and written with NumPy alone.

An 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and
byte range, then the raw little-endian bytes, so any safetensors reader can open the files.
Writing is deterministic (sorted names, fixed JSON formatting) so a conversion script rebuilds
a committed file bit for bit, and atomic (a temporary file, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnnjax._src.atomic import atomic_write_bytes

__all__ = ["encode_safetensors", "read_safetensors", "write_safetensors"]

_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1"}
_CODES = {np.dtype(v).str: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


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
