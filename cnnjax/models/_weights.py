"""Bundled weights: finding them and checking them.

Weights are stored in the safetensors layout (``cnnjax._src.safetensors``). Each weights file
``NAME.safetensors`` has a manifest ``NAME.json`` beside it with its sha256;
:func:`verified_file` refuses a missing, truncated or corrupted file with an error naming it,
and :func:`read_finite` a file holding NaN or infinity.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from cnnjax._src.safetensors import read_safetensors

__all__ = ["weights_dir", "read_manifest", "read_finite", "verified_file", "sha256_file"]


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


def read_manifest(name: str, directory: str | os.PathLike | None = None) -> tuple[dict, Path]:
    """Read ``NAME.json`` from the weights directory; return it and the directory."""
    directory = Path(directory) if directory is not None else weights_dir()
    path = directory / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"weights manifest {path} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"weights manifest {path} is corrupted ({e})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"weights manifest {path} is not a JSON object")
    for key, kind in (("file", str), ("bytes", int), ("sha256", str)):
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"weights manifest {path} lacks a valid {key!r} entry (a {kind.__name__})")
    return manifest, directory


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


def read_finite(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file, refused if a floating-point one holds NaN or infinity."""
    tensors, _ = read_safetensors(path)
    for tensor_name, value in tensors.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ValueError(
                f"weights file {path}: tensor {tensor_name!r} holds {int(np.sum(~np.isfinite(value)))} "
                "non-finite values (NaN or infinity); the model is not loaded"
            )
    return tensors
