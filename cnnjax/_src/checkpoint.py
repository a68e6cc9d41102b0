"""Checkpoints (training, the top-images tally...): a pytree and a JSON-able record, written
atomically and checksummed.

A checkpoint is one file in the safetensors layout (``cnnjax._src.safetensors``): the
pytree's leaves as tensors ``leaf_00000 ...``, and in the metadata the record (epoch, step,
history...), the tree structure and a sha256 over the tensor bytes. Writing goes through a
temporary file and ``os.replace``, so a crash leaves the previous checkpoint intact; reading
refuses a truncated or altered file with an error naming it, instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cnnjax._src.atomic import atomic_write_bytes
from cnnjax._src.safetensors import encode_safetensors, read_safetensors

__all__ = ["save_checkpoint", "load_checkpoint", "check_same_settings"]


def _digest(leaves: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for leaf in leaves:
        h.update(np.asarray(leaf, order="C").tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, tree: Any, record: dict) -> Path:
    """Atomically write ``tree`` (any pytree of arrays) and ``record`` (JSON-able) to ``path``."""
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [np.asarray(jax.device_get(x)) for x in leaves]
    tensors = {f"leaf_{i:05d}": x for i, x in enumerate(leaves)}
    metadata = {
        "record": json.dumps(record),
        "treedef": str(treedef),
        "sha256": _digest(leaves),
    }
    return atomic_write_bytes(path, encode_safetensors(tensors, metadata))


def load_checkpoint(path: str | os.PathLike, like: Any, *, settings: dict | None = None) -> tuple[Any, dict]:
    """Read a checkpoint written by :func:`save_checkpoint` into the structure of ``like``.

    With ``settings``, the record's ``"settings"`` must equal them (:func:`check_same_settings`,
    checked before the structure, so a run of other settings is named as such).

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is truncated or altered (checksum), or its tree does not match
        ``like`` (a checkpoint of another model or optimizer).

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "last.ckpt")
      >>> tree = {"w": np.arange(3, dtype=np.float32), "step": np.int32(7)}
      >>> _ = save_checkpoint(path, tree, {"epoch": 2})
      >>> restored, record = load_checkpoint(path, tree)
      >>> restored["w"].tolist(), int(restored["step"]), record
      ([0.0, 1.0, 2.0], 7, {'epoch': 2})
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        tensors, metadata = read_safetensors(path)
        record = json.loads(metadata["record"])
        expected_digest, treedef_text = metadata["sha256"], metadata["treedef"]
    except (ValueError, KeyError) as e:
        raise ValueError(f"checkpoint {path} is corrupted or truncated ({e}); it was not loaded") from None
    leaves = [tensors[f"leaf_{i:05d}"] for i in range(len(tensors))]
    if _digest(leaves) != expected_digest:
        raise ValueError(f"checkpoint {path} is corrupted (checksum mismatch); it was not loaded")
    if settings is not None:
        check_same_settings(path, record.get("settings"), settings)
    like_leaves, treedef = jax.tree.flatten(like)
    if str(treedef) != treedef_text or len(like_leaves) != len(leaves):
        raise ValueError(f"checkpoint {path} holds a different structure than this run's state")
    for i, (a, b) in enumerate(zip(leaves, like_leaves)):
        if a.shape != np.shape(b):
            raise ValueError(f"checkpoint {path}: leaf {i} has shape {a.shape}, expected {np.shape(b)}")
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in leaves]), record


def check_same_settings(path: str | os.PathLike, recorded: dict | None, now: dict) -> None:
    """Refuse to resume a run whose recorded settings differ from this call's, naming each
    difference."""
    if recorded is None:
        raise ValueError(
            f"checkpoint {path} records no settings (an older cnnjax?); pass restart=True to start afresh"
        )
    differ = [f"{k} {recorded.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(recorded) | set(now))
              if recorded.get(k) != now.get(k)]  # fmt: skip
    if differ:
        raise ValueError(
            f"checkpoint {path} is of a run with other settings ({'; '.join(differ)}); use the same "
            "settings to resume it, or restart=True (--restart) to start afresh"
        )
