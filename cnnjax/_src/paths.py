"""Output paths, checked before any work: a long run never fails at its last step because of
where it was asked to write, and never writes over earlier results unless asked.

* :func:`check_output_file`: a file to write (an image, a JSON file...).
* :func:`check_output_dir`: a folder to write results into (weights, checkpoints, a report).

Both refuse, with one sentence naming the path: a parent that is a file, a parent that cannot be
written (checked by creating and removing a probe file in the nearest existing folder, which
works for every user, root included, and on read-only file systems), a folder where a file is
meant and the reverse, an unknown file extension, and existing results unless ``overwrite``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["check_output_dir", "check_output_file"]


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(".")  # pragma: no cover (the root always exists)


def _check_writable_parent(path: Path, what: str) -> None:
    parent = _nearest_existing(path)
    if not parent.is_dir():
        raise ValueError(f"cannot write {what} {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".cnnjax-write-probe-", dir=parent)
    except OSError as e:
        raise ValueError(f"cannot write {what} {path}: {parent} is not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(
    path: str | os.PathLike,
    *,
    suffixes: Iterable[str] | None = None,
    overwrite: bool = True,
    what: str = "file",
) -> Path:
    """``path`` as a ``Path``, checked to be a file that can be written, before any work.

    Args:
      path: the file.
      suffixes: the accepted extensions (lower case, with the dot), or None for any.
      overwrite: whether an existing file may be replaced (else a ``ValueError``).
      what: how to name the file in messages ("image", "report"...).

    Raises:
      ValueError: a folder at ``path``, an existing file without ``overwrite``, an unknown
        extension, or a parent that is a file or cannot be written.

    Example:
      >>> import os, tempfile
      >>> check_output_file(os.path.join(tempfile.mkdtemp(), "a.png"), suffixes=(".png",)).suffix
      '.png'
    """
    path = Path(path)
    if suffixes is not None:
        suffixes = tuple(suffixes)
        if path.suffix.lower() not in suffixes:
            raise ValueError(
                f"cannot write {what} {path}: the extension must be one of {', '.join(suffixes)}"
            )
    if path.is_dir():
        raise ValueError(f"cannot write {what} {path}: it is a folder")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    _check_writable_parent(path, what)
    return path


def check_output_dir(
    path: str | os.PathLike, *, results: Iterable[str] = (), overwrite: bool = True, what: str = "folder"
) -> Path:
    """``path`` as a ``Path``, checked to be a folder that exists or can be made, and written.

    Args:
      path: the folder.
      results: names of result files inside it that must not be replaced unless ``overwrite``.
      overwrite: whether those results may be replaced.
      what: how to name the folder in messages.

    Raises:
      ValueError: a file at ``path``, results there without ``overwrite``, or a folder (or
        parent) that cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot write {what} {path}: it is a file, not a folder")
    found = [name for name in results if (path / name).exists()]
    if found and not overwrite:
        raise ValueError(
            f"{path} already holds {', '.join(found)}; pass --overwrite (overwrite=True) to replace them"
        )
    _check_writable_parent(path / ".probe", what)
    return path
