"""Objectives (maximised): what an optimised image should do to the network.

Each objective is a frozen-dataclass pytree ``objective(acts) -> Array[b]`` (one score per
image). Layer names are static; channel indices, positions, class indices and direction
vectors are array leaves, so a list of objectives of the same kind is stacked (:func:`stack`)
and run under one ``jax.vmap``, and new targets never recompile. They combine with
``+ - *`` and ``sum``::

    obj = objectives.channel("block_10", 7) + 0.1 * objectives.diversity("block_10")
    obj = objectives.class_logit("espresso") - 1e-3 * objectives.total_variation()

Index ranges and class names are checked against the model (``resolve``) before any work.
Your own objective is a subclass of :class:`Objective` decorated with :func:`pytree_dataclass`
(layer names as :func:`static_field`), with ``__call__(acts)`` and ``layers()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import losses as _losses
from cnnjax._src.checks import check_float, is_concrete
from cnnjax._src.contract import ModelSpec, Objective, pytree_dataclass, static_field

__all__ = [
    "Objective",
    "pytree_dataclass",
    "static_field",
    "neuron",
    "channel",
    "class_logit",
    "class_log_probability",
    "direction",
    "deepdream",
    "diversity",
    "total_variation",
    "alpha_norm",
    "stack",
]

Shapes = Mapping[str, tuple[int, ...]]


def _index(value, what: str) -> np.ndarray:
    # Leaves are NumPy arrays on the host: they become the compiled program's arguments
    # without an eager device operation (each of which compiles a small program of its own).
    arr = np.asarray(value)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be an int, got {value!r}")
    return arr.astype(np.int32)


def _check_range(value: jax.Array, size: int, what: str, layer: str) -> None:
    v = np.asarray(value)
    bad = v[(v < 0) | (v >= size)]
    if bad.size:
        raise ValueError(
            f"{what} {int(bad.flat[0])} is out of range for layer {layer!r}: it has {size} "
            f"{what}s (valid 0..{size - 1})"
        )


def _layer_shape(spec: ModelSpec, shapes: Shapes, layer: str) -> tuple[int, ...]:
    spec.layer(layer)  # an unknown name lists the valid ones
    return tuple(shapes[layer])


@pytree_dataclass
class Neuron(Objective):
    """One channel of a spatial layer at one position: ``acts[layer][:, y, x, channel]``."""

    layer: str = static_field()
    channel: jax.Array
    y: jax.Array  # -1: the centre
    x: jax.Array

    def layers(self):
        return (self.layer,)

    def resolve(self, spec, shapes):
        shape = _layer_shape(spec, shapes, self.layer)
        if len(shape) != 3:
            raise ValueError(
                f"neuron needs a spatial layer; {self.layer!r} has shape {shape} "
                f"(use channel({self.layer!r}, c) for a vector layer)"
            )
        h, w, c = shape
        _check_range(self.channel, c, "channel", self.layer)
        y = jnp.where(self.y < 0, h // 2, self.y)
        x = jnp.where(self.x < 0, w // 2, self.x)
        _check_range(y, h, "row", self.layer)
        _check_range(x, w, "column", self.layer)
        return Neuron(self.layer, self.channel, y, x)

    def __call__(self, acts):
        a = acts[self.layer]
        return jax.lax.dynamic_index_in_dim(
            jax.lax.dynamic_index_in_dim(a, self.y, 1, keepdims=False), self.x, 1, keepdims=False
        )[:, self.channel]


def neuron(layer: str, channel: int, y: int | None = None, x: int | None = None) -> Objective:
    """Maximise one unit: channel ``channel`` of ``layer`` at row ``y``, column ``x``.

    ``y`` and ``x`` default to the centre of the layer (for the size of the optimised image).
    """
    return Neuron(
        layer,
        _index(channel, "channel"),
        _index(-1 if y is None else y, "y"),
        _index(-1 if x is None else x, "x"),
    )


@pytree_dataclass
class Channel(Objective):
    """The spatial mean of one channel (a vector layer: the value of that feature)."""

    layer: str = static_field()
    channel: jax.Array

    def layers(self):
        return (self.layer,)

    def resolve(self, spec, shapes):
        shape = _layer_shape(spec, shapes, self.layer)
        _check_range(self.channel, shape[-1], "channel", self.layer)
        return self

    def __call__(self, acts):
        a = jnp.take(acts[self.layer], self.channel, axis=-1)
        return a.reshape(a.shape[0], -1).mean(axis=1)


def channel(layer: str, channel: int) -> Objective:
    """Maximise the mean activation of ``channel`` over all positions of ``layer``."""
    return Channel(layer, _index(channel, "channel"))


@pytree_dataclass
class ClassLogit(Objective):
    """A class's logit (before the softmax): ``acts["logits"][:, index]``."""

    index: jax.Array
    name: str | None = static_field(default=None)

    def layers(self):
        return ("logits",)

    def resolve(self, spec, shapes):
        if self.name is not None:
            return ClassLogit(_index(spec.class_index(self.name), "class"))
        _check_range(self.index, spec.num_classes, "class", "logits")
        return self

    def __call__(self, acts):
        return jnp.take(acts["logits"], self.index, axis=-1)


def class_logit(cls: int | str) -> Objective:
    """Maximise the logit of class ``cls`` (an index, or a name resolved against the model:
    any ImageNet synonym works, an unknown name suggests close matches).

    The logit rather than the probability: maximising the softmax can be done by pushing the
    other classes down instead of this one up (Simonyan et al. 2014).
    """
    if isinstance(cls, str):
        return ClassLogit(np.int32(0), cls)
    return ClassLogit(_index(cls, "class"))


@pytree_dataclass
class ClassLogProbability(ClassLogit):
    """A class's log-probability: ``log_softmax(acts["logits"])[:, index]``."""

    def resolve(self, spec, shapes):
        resolved = ClassLogit.resolve(self, spec, shapes)
        return ClassLogProbability(resolved.index)

    def __call__(self, acts):
        return jnp.take(jax.nn.log_softmax(acts["logits"], axis=-1), self.index, axis=-1)


def class_log_probability(cls: int | str) -> Objective:
    """Maximise ``log p(cls)`` (after the softmax): unlike the logit, this also pushes the
    other classes down, which is what a confident (e.g. fooling) image needs."""
    if isinstance(cls, str):
        return ClassLogProbability(np.int32(0), cls)
    return ClassLogProbability(_index(cls, "class"))


@pytree_dataclass
class Direction(Objective):
    """The mean over positions of the activation's projection on a unit vector."""

    layer: str = static_field()
    vector: jax.Array

    def layers(self):
        return (self.layer,)

    def resolve(self, spec, shapes):
        shape = _layer_shape(spec, shapes, self.layer)
        if self.vector.shape != (shape[-1],):
            raise ValueError(
                f"direction vector for layer {self.layer!r} must have shape ({shape[-1]},), "
                f"got {self.vector.shape}"
            )
        norm = float(np.linalg.norm(np.asarray(self.vector)))
        if not np.isfinite(norm) or norm == 0:
            raise ValueError(f"direction vector must be finite and non-zero (norm {norm})")
        return self

    def __call__(self, acts):
        a = acts[self.layer]
        v = self.vector / jnp.linalg.norm(self.vector)
        proj = jnp.tensordot(a, v, axes=1)
        return proj.reshape(a.shape[0], -1).mean(axis=1)


def direction(layer: str, vector) -> Objective:
    """Maximise the activation of ``layer`` along ``vector`` (a direction in its channel space,
    e.g. a difference of mean activations), averaged over positions (Olah et al. 2017)."""
    vector = np.asarray(vector, np.float32) if is_concrete(vector) else jnp.asarray(vector, jnp.float32)
    if vector.ndim != 1:
        raise ValueError(f"direction vector must be 1-D [channels], got shape {vector.shape}")
    return Direction(layer, vector)


@pytree_dataclass
class DeepDream(Objective):
    """The mean squared activation of a layer."""

    layer: str = static_field()

    def layers(self):
        return (self.layer,)

    def __call__(self, acts):
        a = acts[self.layer]
        return jnp.mean((a * a).reshape(a.shape[0], -1), axis=1)


def deepdream(layer: str) -> Objective:
    """Maximise ``mean(acts[layer]^2)``: amplify whatever the layer already sees (Mordvintsev,
    Olah & Tyka 2015, "Inceptionism")."""
    return DeepDream(layer)


@pytree_dataclass
class Diversity(Objective):
    """Minus each image's mean cosine similarity to the other images' Gram matrices."""

    layer: str = static_field()

    def layers(self):
        return (self.layer,)

    def resolve(self, spec, shapes):
        shape = _layer_shape(spec, shapes, self.layer)
        if len(shape) != 3:
            raise ValueError(f"diversity needs a spatial layer; {self.layer!r} has shape {shape}")
        return self

    def __call__(self, acts):
        g = _losses.gram(acts[self.layer])
        g = g.reshape(g.shape[0], -1)
        g = g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        sim = g @ g.T
        b = g.shape[0]
        if b == 1:
            return jnp.zeros((1,), sim.dtype)
        return -(jnp.sum(sim, axis=1) - jnp.diagonal(sim)) / (b - 1)


def diversity(layer: str) -> Objective:
    r"""Reward a batch of images for differing in style at ``layer``.

    For image ``i`` of a batch of ``b``: :math:`-\frac{1}{b-1}\sum_{j \ne i} \cos(G_i, G_j)`
    with ``G`` the Gram matrices of the layer (Olah et al. 2017, "Diversity"). Add it with a
    small weight to an objective optimised with ``batch > 1`` images per target.
    """
    return Diversity(layer)


@pytree_dataclass
class TotalVariation(Objective):
    """The total variation TV^beta of the input image (a penalty: subtract it)."""

    beta: float = static_field(default=2.0)

    def layers(self):
        return ("input",)

    def __call__(self, acts):
        return _losses.total_variation(acts["input"], self.beta)


def total_variation(beta: float = 2.0) -> Objective:
    """The input's total variation (:func:`cnnjax.losses.total_variation`), to be subtracted:
    ``obj - 1e-3 * total_variation()`` prefers smooth images."""
    beta = check_float(beta, "beta", lo=0.0, lo_open=True)
    return TotalVariation(float(beta))


@pytree_dataclass
class AlphaNorm(Objective):
    """The alpha-norm of the input image (a penalty: subtract it)."""

    alpha: float = static_field(default=6.0)

    def layers(self):
        return ("input",)

    def __call__(self, acts):
        return _losses.alpha_norm(acts["input"], self.alpha)


def alpha_norm(alpha: float = 6.0) -> Objective:
    """The input's alpha-norm (:func:`cnnjax.losses.alpha_norm`), to be subtracted."""
    return AlphaNorm(check_float(alpha, "alpha", lo=1.0))


def stack(objectives: Sequence[Objective]) -> Objective:
    """Stack objectives of the same kind (same classes and layers) into one batched objective
    whose leaves have a leading target axis, for ``jax.vmap``.

    Example:
      >>> batch = stack([channel("conv3", 0), channel("conv3", 5)])
      >>> batch.layer, batch.channel.tolist()
      ('conv3', [0, 5])
    """
    objectives = list(objectives)
    if not objectives:
        raise ValueError("need at least one objective")
    for o in objectives:
        if not isinstance(o, Objective):
            raise ValueError(f"expected cnnjax objectives, got {type(o).__name__}")
    first = jax.tree.structure(objectives[0])
    for i, o in enumerate(objectives[1:], 1):
        if jax.tree.structure(o) != first:
            raise ValueError(
                "objectives batched together must be of the same kind, on the same layers "
                "(only indices, positions and vectors may differ); "
                f"objective 0 is {_describe(objectives[0])}, "
                f"objective {i} is {_describe(o)}"
            )

    def stack_leaves(*xs):
        if all(is_concrete(x) for x in xs):  # on the host: no eager device operation
            return np.stack([np.asarray(x) for x in xs])
        return jnp.stack([jnp.asarray(x) for x in xs])

    return jax.tree.map(stack_leaves, *objectives)


def _describe(o: Objective) -> str:
    fields = [f"{f.name}={getattr(o, f.name)!r}" for f in dataclasses.fields(o) if f.metadata.get("static")]
    inner = [_describe(t) for t in getattr(o, "terms", ())] + (
        [_describe(o.term)] if hasattr(o, "term") else []
    )
    return f"{type(o).__name__}({', '.join(fields + inner)})"
