"""Sharding a technique's leading axis (images, a batch) over a mesh's first axis.

JAX is the distributed engine: the arrays are placed with a ``NamedSharding`` (or constrained to
one inside a jitted function) and XLA's partitioner splits the computation that follows them; the
parameters stay replicated. The mesh's axes are used as automatic ones (``jax.make_mesh`` makes
explicit axes by default, which would ask for an output sharding on every contraction).
"""

from __future__ import annotations

import functools
import inspect

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnnjax._src.chunks import chunked_map, pad_rows_to

__all__ = [
    "auto_axes",
    "check_mesh",
    "chunk_for_mesh",
    "device_blocks_map",
    "on_mesh",
    "place",
    "rows_sharding",
    "shard_rows",
    "shard_tree_rows",
    "to_host",
    "unpad_rows",
]


def check_mesh(mesh) -> Mesh | None:
    """The mesh to split over: ``mesh`` itself if it is a ``jax.sharding.Mesh``; for None the one
    in context (``with jax.set_mesh(mesh):``), or None without one; anything else a clear error."""
    if mesh is None:
        if jax.sharding.get_abstract_mesh().empty:
            return None
        try:
            context = jax.sharding.get_mesh()
        except ValueError:  # inside a caller's jit: its shardings place the work
            return None
        return None if context.empty else context
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (e.g. jax.make_mesh((8,), ('data',))), got {mesh!r}"
        )
    return mesh


def auto_axes(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis automatic: XLA's partitioner decides the shardings inside the
    compiled programs (explicit axes, ``jax.make_mesh``'s default, would ask for an output
    sharding on every contraction)."""
    return Mesh(
        mesh.devices, mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
    )


def on_mesh(technique):
    """Decorate a technique that takes ``mesh=``: the mesh (given, or the one in context) is
    checked before any work and, if there is one, the technique runs inside it with automatic
    axes (:func:`auto_axes`) and receives it as ``mesh``; without one it runs as written. The
    result's arrays come back placed on the caller's mesh (its own axis types), so that the
    caller's code inside ``jax.set_mesh`` can go on with them."""
    signature = inspect.signature(technique)

    @functools.wraps(technique)
    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        mesh = check_mesh(bound.arguments.get("mesh"))
        if mesh is None:
            return technique(*args, **kwargs)
        bound.arguments["mesh"] = auto = auto_axes(mesh)
        with jax.set_mesh(auto):
            result = technique(*bound.args, **bound.kwargs)
        if auto.axis_types == mesh.axis_types:
            return result
        return jax.tree.map(lambda a: _on_mesh_of_caller(a, auto, mesh), result)

    return run


def _on_mesh_of_caller(a, auto: Mesh, mesh: Mesh):
    """``a``, if placed on ``auto``, re-labelled with the same partition on ``mesh`` (the same
    devices in the same order: no data moves)."""
    sharding = getattr(a, "sharding", None)
    if not isinstance(sharding, NamedSharding) or sharding.mesh != auto:
        return a
    target = NamedSharding(mesh, sharding.spec)
    return jax.make_array_from_single_device_arrays(a.shape, target, [s.data for s in a.addressable_shards])


def chunk_for_mesh(mesh: Mesh | None, chunk_size: int) -> int:
    """``chunk_size`` rounded up to a multiple of the mesh's first axis (unchanged without a
    mesh), so that every streamed chunk splits evenly over the devices."""
    if check_mesh(mesh) is None:
        return chunk_size
    d = mesh.devices.shape[0]
    return -(-chunk_size // d) * d


def device_blocks_map(f, xs, batch: int, devices: int):
    """:func:`~cnnjax._src.chunks.chunked_map` of ``f`` over ``xs`` whose leading length is a
    multiple of ``devices``, in ``devices`` equal blocks side by side (vmapped): with ``xs`` split
    over a mesh's first axis of ``devices`` devices, each device maps over its own block in
    chunks of ``batch / devices``. One device: ``chunked_map`` itself."""
    if devices == 1:
        return chunked_map(f, xs, batch)
    blocks = jax.tree.map(lambda a: a.reshape(devices, -1, *a.shape[1:]), xs)
    out = jax.vmap(lambda block: chunked_map(f, block, -(-batch // devices)))(blocks)
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), out)


def place(a, sharding: NamedSharding) -> jax.Array:
    """``a`` (the same value on every process) placed with ``sharding``: ``jax.device_put`` when
    this process holds all its devices, else each process puts the pieces for its own devices
    (several processes, ``jax.distributed``)."""
    if sharding.is_fully_addressable:
        return jax.device_put(a, sharding)
    if isinstance(a, jax.Array) and not a.is_fully_addressable:  # already spread over the processes
        return jax.jit(lambda x: x, out_shardings=sharding)(a)
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def rows_sharding(mesh: Mesh) -> NamedSharding:
    """The leading axis split over the mesh's first axis, everything else replicated."""
    mesh = auto_axes(mesh)
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def shard_rows(mesh: Mesh | None, *arrays) -> tuple[int | None, list]:
    """Place arrays of one leading length ``n`` on ``mesh``, split along their first axis.

    A length that does not divide over the mesh's first axis is padded with copies of the first
    row (valid inputs, so the padding computes nothing undefined); drop it from the results with
    :func:`unpad_rows`. Returns ``(n, arrays)``; without a mesh ``(None, arrays)`` unchanged.
    """
    if check_mesh(mesh) is None:
        return None, list(arrays)
    n, padded = pad_rows_to([np.asarray(a) for a in arrays], mesh.devices.shape[0])
    sharding = rows_sharding(mesh)
    return n, [place(a, sharding) for a in padded]


def unpad_rows(tree, n: int | None, axis: int = 0):
    """Every leaf of ``tree`` cut to its first ``n`` entries along ``axis`` (the padding dropped);
    ``tree`` itself when ``n`` is None (:func:`shard_rows` without a mesh)."""
    if n is None:
        return tree
    return jax.tree.map(lambda a: jax.lax.slice_in_dim(a, 0, n, axis=axis), tree)


def shard_tree_rows(mesh: Mesh, tree, rows: int):
    """``tree`` placed on ``mesh``: leaves whose leading length is ``rows`` (a multiple of the
    mesh's first axis) split along it, the others (an optimizer's step count) replicated."""
    split = rows_sharding(mesh)
    replicated = NamedSharding(split.mesh, PartitionSpec())
    return jax.tree.map(
        lambda a: place(a, split if getattr(a, "ndim", 0) and a.shape[0] == rows else replicated),
        tree,
    )


def to_host(tree):
    """Every leaf of ``tree`` as a NumPy array on this host. A leaf spread over several
    processes' devices (``jax.distributed``) is gathered from them: every process must call
    this alike, and it is meant for small results (histories, indices), not images."""

    def fetch(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return np.asarray(a)
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(fetch, tree)
