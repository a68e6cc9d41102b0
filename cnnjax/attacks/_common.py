"""What every attack shares: the result type, argument checks, labels and targets."""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import MAX_STEPS, check_finite_run
from cnnjax._src.chunks import (
    MEMORY_FACTOR,
    budget_chunk,
    check_memory_budget,
    forward_bytes,
    map_row_chunks,
)
from cnnjax._src.contract import Model
from cnnjax._src.targets import classes_per_image
from cnnjax.models import classify

__all__ = [
    "AttackResult",
    "MAX_RESTARTS",
    "MAX_STEPS",
    "check_epsilons",
    "check_finite",
    "check_norm",
    "image_bytes",
    "in_chunks",
    "num_classes",
    "resolve_classes",
    "succeeded",
    "targets_or_labels",
    "top1",
]

MAX_RESTARTS = 1000


class AttackResult(NamedTuple):
    """What an attack returns.

    With a scalar epsilon every field has a leading image axis ``n``; with a sequence of E
    epsilons (a sweep), a leading ``[E]`` axis comes first.

    Attributes:
      images: float32 ``[..., n, h, w, c]`` adversarial images in [0, 1].
      success: bool ``[..., n]``: the prediction is the target (targeted) or not the label.
      predictions: int32 ``[..., n]`` top-1 class of each adversarial image.
      confidence: float32 ``[..., n]`` softmax probability of that class.
      steps: int32 ``[..., n]`` optimiser steps taken (with early stopping: until success).
      c: float32 ``[..., n]`` the constant of the returned perturbation (L-BFGS and
        Carlini-Wagner; NaN where no constant succeeded), else None.
    """

    images: jax.Array
    success: jax.Array
    predictions: jax.Array
    confidence: jax.Array
    steps: jax.Array
    c: jax.Array | None = None


def check_norm(norm: Any) -> str:
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        text = "inf" if norm == math.inf else str(norm)
    else:
        text = str(norm).lower().removeprefix("l")
    if text in ("inf", "infinity"):
        return "inf"
    if text in ("2", "2.0"):
        return "2"
    raise ValueError(f"norm must be 'inf' (L-infinity) or 2 (L2), got {norm!r}")


def check_epsilons(eps: Any, norm: str, dim: int) -> tuple[np.ndarray, bool]:
    """``eps`` as a float32 [E] array and whether it was a scalar; checked against the norm."""
    try:
        arr = np.asarray(eps, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number or a sequence of numbers, got {eps!r}") from None
    scalar = arr.ndim == 0
    if arr.ndim > 1 or arr.size == 0:
        raise ValueError(f"eps must be a number or a non-empty 1-D sequence, got shape {arr.shape}")
    arr = arr.reshape(-1)
    limit, what = (1.0, "L-infinity (the whole [0, 1] box)") if norm == "inf" else (
        math.sqrt(dim), f"L2 (sqrt of {dim} values, the diameter of the [0, 1] box)")  # fmt: skip
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > limit)
    if bad.any():
        raise ValueError(
            f"eps must be finite and in [0, {limit:.6g}] for {what} in [0, 1] pixel space "
            f"(e.g. 2/255 = {2 / 255:.5f}); got {float(arr[bad][0])!r}"
        )
    return arr.astype(np.float32), scalar


def targets_or_labels(model: Model, images: jax.Array, labels: Any, targets: Any) -> tuple[jax.Array, bool]:
    """The classes the attack moves towards (targets) or away from (labels; default: predictions).

    Whether the attack is targeted travels into the compiled program as a per-image boolean
    array, not a static flag, so targeted and untargeted calls share one program.
    """
    n = images.shape[0]
    if targets is not None:
        if labels is not None:
            classes_per_image(
                model.spec, labels, n, "labels"
            )  # checked, though a targeted attack ignores them
        return jnp.asarray(classes_per_image(model.spec, targets, n, "targets")), True
    if labels is not None:
        return jnp.asarray(classes_per_image(model.spec, labels, n, "labels")), False
    return None, False


def top1(model: Model, images: jax.Array, memory_budget: int | None = None) -> jax.Array:
    """The model's top-1 class per image, int32 ``[n]``, by :func:`~cnnjax.classify`, in chunks
    of images that fit ``memory_budget`` (default: the device's, :func:`in_chunks`).

    Asks for classify's default top_k (5) and keeps the first, so a batch that was already
    classified reuses that compiled program instead of compiling another forward pass.
    """

    def run(x):
        return jnp.asarray(np.asarray(classify(model, x, top_k=min(5, model.spec.num_classes)).classes)[:, 0])

    bytes_each = forward_bytes(model.apply, model.params, tuple(np.shape(images)[1:]))
    return in_chunks(run, (images,), bytes_each=bytes_each, memory_budget=check_memory_budget(memory_budget))


def resolve_classes(model: Model, images: jax.Array, classes: jax.Array | None, targeted: bool):
    """Default labels (the model's own top-1), computed only after every check passed, and the
    per-image targeted flags."""
    classes = top1(model, images) if classes is None else classes
    return classes, jnp.asarray(np.full(classes.shape, targeted))


def check_finite(result: AttackResult, name: str) -> AttackResult:
    """The result, unless its images went non-finite (then :class:`~cnnjax.DivergedError`)."""
    check_finite_run(name, result.images, hint="a model that returns NaN or inf logits or gradients?")
    return result


def num_classes(apply, params, images) -> int:
    return jax.eval_shape(lambda p, x: apply(p, x)["logits"], params, images[:1]).shape[-1]


def succeeded(logits, classes, targeted):
    pred = jnp.argmax(logits, axis=-1)
    return jnp.where(targeted, pred == classes, pred != classes)


def image_bytes(model: Model, images, copies: int) -> int:
    """What an attack counts per image against its ``memory_budget``: ``MEMORY_FACTOR`` (3) times
    the network's forward pass on it (:func:`~cnnjax._src.chunks.forward_bytes`) plus ``copies``
    copies of the image (iterates, gradients, optimiser states)."""
    shape = tuple(images.shape[1:])
    return MEMORY_FACTOR * forward_bytes(model.apply, model.params, shape) + copies * 4 * math.prod(shape)


def in_chunks(run, rows: tuple, *, bytes_each: int, memory_budget: int, mesh=None, axis: int = 0):
    """``run(*rows)`` (arrays of one leading length ``n``, None allowed) on chunks of the rows that
    fit ``memory_budget`` at ``bytes_each`` a row, one compiled program for every chunk (the last
    padded with copies of its first row; chunks a multiple of the mesh's devices), the results
    joined along ``axis`` with the padding dropped. All the rows fit: one call, as it is."""
    n = len(rows[0])
    devices = 1 if mesh is None else mesh.devices.shape[0]
    chunk = budget_chunk(n, bytes_each, memory_budget, devices)
    return map_row_chunks(lambda _, piece: run(*piece), rows, min(chunk, n), axis)
