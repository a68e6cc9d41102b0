"""cnnjax's persistent compilation cache: XLA programs compiled once per machine, not once per
process.

JAX can keep compiled programs on disk (``jax_compilation_cache_dir``); cnnjax turns that on
when it is imported, in a folder of the user's own:

* ``$CNNJAX_CACHE_DIR`` if set (``off``, ``0`` or an empty value: no cache);
* else ``$XDG_CACHE_HOME/cnnjax/xla``, or ``~/.cache/cnnjax/xla``.

A cache the user configured for JAX (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update("jax_compilation_cache_dir", ...)`` before importing cnnjax) is left as it
is. The folder is created readable by its owner only (0700); JAX evicts the least recently used
entries beyond :data:`MAX_BYTES`. JAX reads a damaged entry as a miss and compiles again (a
warning, never an error), and a cache that cannot be created (a read-only home) only costs the
compile time.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import jax

__all__ = ["MAX_BYTES", "MIN_COMPILE_SECONDS", "cache_dir", "use_compilation_cache"]

MAX_BYTES = 2 * 2**30  # the cache's bound on disk (JAX evicts the least recently used beyond it)
MIN_COMPILE_SECONDS = 0.3  # programs compiled faster than this are not worth a file
_OFF = ("", "0", "off", "false", "no", "none")


def cache_dir() -> Path | None:
    """The folder cnnjax caches compiled programs in, or None when ``CNNJAX_CACHE_DIR`` turns it off."""
    value = os.environ.get("CNNJAX_CACHE_DIR")
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnjax" / "xla"


def use_compilation_cache(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at ``path`` (default :func:`cache_dir`).

    Returns:
      The folder in use, or None: turned off by ``CNNJAX_CACHE_DIR``, or the folder could not
      be made (a warning says why). A folder JAX was already given is kept and returned.
    """
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    folder = Path(path) if path is not None else cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            folder.chmod(0o700)  # programs are code: nobody else may write (or read) them
    except OSError as e:
        warnings.warn(f"cnnjax: no compilation cache ({e}); every process compiles afresh", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # the user's JAX setting wins
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return folder
