"""Per-layer measurements of parameters, gradients and activations, for the training step's
instruments and the doctor: one name per layer (a parameter's path without its own name), one
reduction per leaf, all traceable inside a compiled program.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["dead_fractions", "layer_norms", "layer_of"]


def layer_of(path) -> str:
    keys = list(path)
    if len(keys) > 1 and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
        keys.pop()  # a flax nnx Variable: ['dense']['kernel'].value
    if len(keys) > 1:
        keys.pop()  # the parameter's own name
    return "/".join(_key_name(k) for k in keys) or "params"


def _key_name(key) -> str:
    if isinstance(key, jax.tree_util.DictKey | jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    return str(key)


def layer_norms(tree: Any) -> dict[str, jax.Array]:
    """Layer -> the L2 norm of its floating-point leaves together (one reduction per leaf)."""
    squares: dict[str, jax.Array] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            continue
        name = layer_of(path)
        s = jnp.sum(jnp.square(leaf.astype(jnp.float32)))
        squares[name] = squares[name] + s if name in squares else s
    return {name: jnp.sqrt(s) for name, s in squares.items()}


def dead_fractions(acts) -> dict[str, jax.Array]:
    """Spatial layer -> the fraction of its channels zero at every position of every example."""
    return {
        name: jnp.mean(jnp.all(a == 0, axis=(0, 1, 2)).astype(jnp.float32))
        for name, a in acts.items()
        if name != "input" and a.ndim == 4
    }
