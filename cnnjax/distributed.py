"""Several processes (hosts), one result: each process writes its own rows, process 0 the index.

JAX is the distributed engine: start every process with ``jax.distributed.initialize`` (on CPUs
also ``jax.config.update("jax_cpu_collectives_implementation", "gloo")``), make a mesh over all
devices (``jax.make_mesh((jax.device_count(),), ("data",))``) and call the techniques with it
as on one machine; every process runs the same program on the same arguments and holds the
parts of the results on its own devices. These functions save such results without gathering
them in one place:

* :func:`process_rows`: the rows of a target axis of ``n`` entries that this process writes;
* :func:`write_shards`: each process writes its rows of the results to ``shard-<p>-of-<P>.npz``
  and, once every process has written, process 0 writes ``index.json``;
* :func:`read_shards`: the whole results back from a folder written so, checked complete.

A folder with ``index.json`` is complete: the index is written after a barrier that every
process reaches only after its shard is on disk, and every file is written atomically.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from cnnjax._src.atomic import atomic_write, atomic_write_bytes
from cnnjax._src.paths import check_output_dir
from cnnjax._src.sharding import check_mesh

__all__ = ["INDEX", "process_rows", "read_shards", "write_shards"]

#: The name of the index file process 0 writes.
INDEX = "index.json"
_FORMAT = "cnnjax-shards/1"


def _shard_name(process: int, processes: int) -> str:
    return f"shard-{process:05d}-of-{processes:05d}.npz"


def process_rows(n: int, mesh=None, process: int | None = None) -> np.ndarray:
    """The indices of the rows of an axis of ``n`` entries that ``process`` (default: this one)
    writes: those a technique places on its devices when it splits the axis over the mesh's
    first axis (``n`` padded to a multiple of it, each device a block in the mesh's order).

    Args:
      n: the length of the target axis (images, targets).
      mesh: the mesh the work ran on (default: the one in context).
      process: a process index (default: ``jax.process_index()``).

    Returns:
      int64 ``[rows]``, ascending; together the processes' rows are ``0 .. n - 1``, each once.

    Example:
      >>> mesh = jax.make_mesh((1,), ("data",))
      >>> process_rows(5, mesh).tolist()
      [0, 1, 2, 3, 4]
    """
    mesh = check_mesh(mesh)
    if mesh is None:
        raise ValueError("process_rows needs the mesh the work ran on (mesh= or jax.set_mesh)")
    if not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    process = jax.process_index() if process is None else int(process)
    # The first axis's devices, in order (any other axis replicates the rows).
    first = np.moveaxis(mesh.devices, 0, -1).reshape(-1, mesh.devices.shape[0])[0]
    block = -(-n // len(first))
    mine = [k for k, device in enumerate(first) if device.process_index == process]
    rows = [np.arange(k * block, min((k + 1) * block, n)) for k in mine]
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)


def _local_rows(name: str, array, rows: np.ndarray, axis: int) -> np.ndarray:
    """``array``'s ``rows`` along ``axis``, from this process's own copies (never gathered)."""
    if isinstance(array, np.ndarray) or not isinstance(array, jax.Array) or array.is_fully_addressable:
        return np.take(np.asarray(array), rows, axis=axis)
    found: dict[int, np.ndarray] = {}
    for shard in array.addressable_shards:
        for d, part in enumerate(shard.index):
            if d != axis and part != slice(None) and (part.start, part.stop) != (0, array.shape[d]):
                raise ValueError(f"{name} is split along axis {d}; write_shards splits only axis {axis}")
        start = shard.index[axis].start or 0
        data = np.asarray(shard.data)
        for k in range(data.shape[axis]):
            found.setdefault(start + k, np.take(data, k, axis=axis))
    missing = [int(r) for r in rows if int(r) not in found]
    if missing:
        raise ValueError(f"{name}: rows {missing[:5]} of this process are on another process's devices")
    if not len(rows):
        shape = list(array.shape)
        shape[axis] = 0
        return np.zeros(shape, array.dtype)
    return np.stack([found[int(r)] for r in rows], axis=axis)


def write_shards(out: str | os.PathLike, arrays: Mapping[str, object], *, mesh=None,
                 axis: int | Mapping[str, int] = 0) -> Path:  # fmt: skip
    """Write this process's rows of ``arrays`` to ``out``; process 0 writes the index last.

    Call it on every process with the same names and shapes (the results of the same sharded
    call). Each process writes ``shard-<p>-of-<P>.npz`` holding its :func:`process_rows` of
    every array (along ``axis``, e.g. 1 for an attack's ``[eps, n, ...]`` images) and
    ``rows``; after a barrier across the processes, process 0 writes ``index.json`` (names,
    shapes, dtypes, axes, shard files). Arrays replicated on every process are cut the same way,
    so no process writes another's rows.

    Args:
      out: the folder (created; earlier shards of the same names are replaced).
      arrays: name -> array (``jax.Array``, global or local, or NumPy), one length ``n`` along
        its axis for all of them.
      mesh: the mesh the work ran on (default: the one in context).
      axis: the target axis: one for every array, or name -> axis.

    Returns:
      The path of this process's shard.

    Raises:
      ValueError: no arrays, names that are not plain words, arrays of different lengths,
        an axis out of range, or an output folder that cannot be written (before any write).
    """
    mesh = check_mesh(mesh)
    if mesh is None:
        raise ValueError("write_shards needs the mesh the work ran on (mesh= or jax.set_mesh)")
    if not arrays:
        raise ValueError("write_shards needs at least one array")
    axes = {name: int(axis[name] if isinstance(axis, Mapping) else axis) for name in arrays}
    lengths = {}
    for name, a in arrays.items():
        if not name.isidentifier() or name == "rows":
            raise ValueError(f"array names must be identifiers other than 'rows', got {name!r}")
        ndim = len(np.shape(a))
        if not -ndim <= axes[name] < ndim:
            raise ValueError(f"axis {axes[name]} is out of range for {name} of shape {np.shape(a)}")
        axes[name] %= ndim
        lengths[name] = np.shape(a)[axes[name]]
    if len(set(lengths.values())) != 1:
        raise ValueError(f"the arrays' lengths along their axes differ: {lengths}")
    out = check_output_dir(out, what="shard folder")
    n = next(iter(lengths.values()))
    process, processes = jax.process_index(), jax.process_count()
    rows = process_rows(n, mesh, process)
    parts = {name: _local_rows(name, a, rows, axes[name]) for name, a in arrays.items()}

    def save(f):
        buffer = io.BytesIO()
        np.savez(buffer, rows=rows, **parts)
        f.write(buffer.getvalue())

    path = atomic_write(out / _shard_name(process, processes), save)
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"cnnjax.write_shards {out}")  # every shard is on disk
    if process == 0:
        index = {
            "format": _FORMAT,
            "processes": processes,
            "length": int(n),
            "arrays": {
                name: {"shape": list(np.shape(a)), "dtype": str(parts[name].dtype), "axis": axes[name]}
                for name, a in arrays.items()
            },
            "shards": [_shard_name(p, processes) for p in range(processes)],
        }
        atomic_write_bytes(out / INDEX, json.dumps(index, indent=1).encode())
    return path


def read_shards(out: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays :func:`write_shards` wrote to ``out``, put together from every shard.

    Raises:
      FileNotFoundError: no ``index.json`` (the run did not finish) or a shard missing.
      ValueError: an index of another format, or shards whose rows do not cover every row
        exactly once or whose arrays do not match the index.

    Example:
      >>> import tempfile
      >>> mesh = jax.make_mesh((1,), ("data",))
      >>> folder = tempfile.mkdtemp()
      >>> _ = write_shards(folder, {"scores": np.arange(6.0).reshape(2, 3)}, mesh=mesh, axis=1)
      >>> read_shards(folder)["scores"].tolist()
      [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    out = Path(out)
    if not (out / INDEX).is_file():
        raise FileNotFoundError(
            f"{out / INDEX} not found: the sharded run did not finish (or wrote elsewhere)"
        )
    index = json.loads((out / INDEX).read_text())
    if index.get("format") != _FORMAT:
        raise ValueError(f"{out / INDEX} is not a cnnjax shard index (format {index.get('format')!r})")
    n, specs = index["length"], index["arrays"]
    result = {name: np.zeros(spec["shape"], spec["dtype"]) for name, spec in specs.items()}
    seen = np.zeros(n, np.int64)
    for shard in index["shards"]:
        with np.load(out / shard) as data:
            rows = data["rows"]
            seen[rows] += 1
            for name, spec in specs.items():
                where = [slice(None)] * len(spec["shape"])
                where[spec["axis"]] = rows
                part = data[name]
                if part.shape[spec["axis"]] != len(rows):
                    raise ValueError(f"{shard}: {name} has {part.shape[spec['axis']]} rows for {len(rows)}")
                result[name][tuple(where)] = part
    if not np.all(seen == 1):
        bad = np.flatnonzero(seen != 1)[:5].tolist()
        raise ValueError(f"the shards in {out} do not hold every row exactly once (rows {bad} ...)")
    return result
