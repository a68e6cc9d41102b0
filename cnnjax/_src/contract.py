"""The contract every part of cnnjax builds on.

Images are ``float32`` NHWC arrays with values in [0, 1], RGB. A model is a pure function

    apply(params, images, *, perturb=None) -> Activations

plus its parameters and a :class:`ModelSpec`. Techniques are built from the pieces here:
:class:`Objective` (maximised, with ``+ - *`` algebra), :class:`Parameterization`
(a latent to an image) and :data:`Transform` (a keyed random image transform). Optimizers are
always ``optax.GradientTransformation``; cnnjax defines no optimizer type of its own.

This module imports only JAX and NumPy: the core never imports Flax.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import check_images, is_concrete

__all__ = [
    "COMPUTE_DTYPES",
    "Activations",
    "ApplyFn",
    "LayerSpec",
    "Model",
    "ModelSpec",
    "Objective",
    "Parameterization",
    "Transform",
    "ValueMapping",
    "check_compute_dtype",
    "pytree_dataclass",
    "static_field",
]

Activations: TypeAlias = Mapping[str, jax.Array]
"""Named activations of one forward pass, in forward order.

Always holds ``"input"`` (the [0, 1] images as given, plus any perturbation) and ``"logits"``
(pre-softmax class scores), and one entry per named layer in between. Spatial activations are
NHWC; vectors are ``[n, features]``.
"""


class ApplyFn(Protocol):
    """A model as a pure function: ``apply(params, images, *, perturb=None) -> Activations``.

    ``images`` are float32 ``[n, h, w, c]`` in [0, 1]; the model maps them to its own input
    range (its :class:`ValueMapping`). ``perturb`` maps layer names to arrays added to those
    layers' outputs, so ``jax.grad`` with respect to ``perturb[name]`` at zero is the gradient
    with respect to that activation. Naming an unknown layer is a ``ValueError`` that lists the
    valid ones.
    """

    def __call__(
        self, params: Any, images: jax.Array, *, perturb: Mapping[str, jax.Array] | None = None
    ) -> Activations: ...


Transform: TypeAlias = Callable[[jax.Array, jax.Array], jax.Array]
"""A random image transform ``(key, images) -> images``.

Keys are explicit, so under ``jax.vmap`` every element of a batch draws its own randomness.
Transforms are built by factories that close over their hyperparameters, e.g. ``jitter(8)``.
"""


class Parameterization(NamedTuple):
    """How an optimised image is represented.

    Attributes:
      init: ``init(key) -> latent``, a pytree the optimizer updates.
      to_image: ``to_image(latent) -> images`` in [0, 1], NHWC. Must be differentiable.

    Example:
      >>> pixel = Parameterization(
      ...     init=lambda key: jax.random.normal(key, (1, 64, 64, 3)) * 0.01,
      ...     to_image=jax.nn.sigmoid)
      >>> pixel.to_image(pixel.init(jax.random.key(0))).shape
      (1, 64, 64, 3)
    """

    init: Callable[[jax.Array], Any]
    to_image: Callable[[Any], jax.Array]


# --------------------------------------------------------------------------------------------
# Pytree dataclasses: static fields are part of the tree structure, the rest are leaves.


def static_field(**kwargs) -> Any:
    """A dataclass field that is static (part of the treedef, hashed into jit's cache key)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def pytree_dataclass(cls: type) -> type:
    """Make ``cls`` a frozen dataclass registered as a JAX pytree.

    Fields declared with :func:`static_field` are metadata (layer names, flags); every other
    field is a leaf (indices, positions, vectors, weights), so ``jax.vmap`` over a batch of
    instances compiles once.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    meta = [f.name for f in fields if f.metadata.get("static", False)]
    data = [f.name for f in fields if not f.metadata.get("static", False)]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


# --------------------------------------------------------------------------------------------
# Objectives


class Objective:
    """Something to maximise: ``objective(acts) -> Array[b]``, one score per example.

    Objectives are small frozen-dataclass pytrees (see :func:`pytree_dataclass`): layer names
    are static, while channel indices, positions, direction vectors and targets are array
    leaves, so a batch of objectives stacked with ``jax.tree.map(jnp.stack, ...)`` runs under
    one ``jax.vmap`` and one compilation.

    They combine with ``+``, ``-``, unary ``-``, scalar ``*`` and Python's ``sum``.

    Subclasses implement ``__call__`` and set ``layers`` (the layer names they read) so that
    techniques can check names before any work.

    Example:
      >>> from cnnjax.objectives import channel
      >>> from cnnjax.testing import tiny_cnn
      >>> obj = channel("conv3", 7) - 0.1 * channel("conv3", 3)
      >>> total = sum([obj, channel("conv2", 0)])
      >>> total.layers()
      ('conv3', 'conv2')
      >>> total(tiny_cnn()(np.full((2, 32, 32, 3), 0.5, np.float32))).shape  # one score per image
      (2,)
    """

    def layers(self) -> tuple[str, ...]:
        """Names of the layers this objective reads, checked against the model before a run."""
        return ()

    def resolve(self, spec: ModelSpec, shapes: Mapping[str, tuple[int, ...]]) -> Objective:
        """Check this objective against a model and return it ready to run (before any work).

        ``shapes`` maps layer names to activation shapes without the batch axis, for the image
        size of the run. The default checks the layer names (an unknown one lists the valid
        ones); objectives with indices also check their ranges, and ones that name classes
        turn the names into indices.
        """
        spec.check_layers(self.layers())
        return self

    def __call__(self, acts: Activations) -> jax.Array:
        raise NotImplementedError

    def __add__(self, other: Objective) -> Objective:
        if isinstance(other, (int, float)) and other == 0:
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum((self, other))

    def __radd__(self, other: Any) -> Objective:
        # Lets the built-in ``sum`` start from 0.
        if isinstance(other, (int, float)) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum((self, Scaled(np.float32(-1.0), other)))

    def __neg__(self) -> Objective:
        return Scaled(np.float32(-1.0), self)

    def __mul__(self, scale: Any) -> Objective:
        if isinstance(scale, Objective):
            raise TypeError("objectives can be multiplied by scalars only, not by objectives")
        # A host scalar stays on the host (no eager device operation); a traced one is kept.
        scale = np.asarray(scale, np.float32) if is_concrete(scale) else jnp.asarray(scale, jnp.float32)
        if scale.ndim != 0:
            raise ValueError(f"an objective's scale must be a scalar, got shape {scale.shape}")
        return Scaled(scale, self)

    __rmul__ = __mul__


@pytree_dataclass
class Sum(Objective):
    """The sum of several objectives (what ``a + b`` builds)."""

    terms: tuple[Objective, ...]

    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for t in self.terms for n in t.layers()))

    def resolve(self, spec, shapes) -> Objective:
        return Sum(tuple(t.resolve(spec, shapes) for t in self.terms))

    def __call__(self, acts: Activations) -> jax.Array:
        return sum(t(acts) for t in self.terms)


@pytree_dataclass
class Scaled(Objective):
    """An objective times a scalar (what ``c * obj`` builds); the scale is a leaf."""

    scale: jax.Array
    term: Objective

    def layers(self) -> tuple[str, ...]:
        return self.term.layers()

    def resolve(self, spec, shapes) -> Objective:
        return Scaled(self.scale, self.term.resolve(spec, shapes))

    def __call__(self, acts: Activations) -> jax.Array:
        return self.scale * self.term(acts)


# --------------------------------------------------------------------------------------------
# Model metadata


@dataclasses.dataclass(frozen=True)
class ValueMapping:
    """How a model maps images in [0, 1] to its own input range: ``(x[..., order] - mean) / std``.

    Declared once in the model's spec and applied inside ``apply``, never by the caller.

    Attributes:
      mean: per-channel value subtracted from [0, 1] images.
      std: per-channel divisor.
      bgr: whether the model expects channels in BGR order.

    Example:
      EfficientNet-Lite expects ``(rgb_uint8 - 127) / 128``:

      >>> mapping = ValueMapping(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
      >>> [round(float(v), 4) for v in mapping(jnp.zeros((1, 1, 1, 3)))[0, 0, 0]]
      [-0.9922, -0.9922, -0.9922]
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    bgr: bool = False

    def __call__(self, images: jax.Array) -> jax.Array:
        if self.bgr:
            images = images[..., ::-1]
        return (images - self._channels(self.mean, images)) / self._channels(self.std, images)

    def invert(self, model_input: jax.Array) -> jax.Array:
        """Map model-range values back to [0, 1] images (for display)."""
        std, mean = self._channels(self.std, model_input), self._channels(self.mean, model_input)
        images = model_input * std + mean
        return images[..., ::-1] if self.bgr else images

    @staticmethod
    def _channels(values: tuple[float, ...], like: jax.Array) -> jax.Array:
        """``values`` shaped to broadcast over the last axis of ``like`` without rank promotion."""
        return jnp.asarray(values, like.dtype).reshape((1,) * (like.ndim - 1) + (-1,))


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Static facts about one named activation.

    Attributes:
      name: the key in :data:`Activations`.
      shape: the activation's shape for one input image at the spec's input size, without the
        batch axis: ``(h, w, c)`` for spatial layers, ``(c,)`` for vectors.
      stride: the effective stride with respect to the input (None for non-spatial layers).
      receptive_field: the theoretical receptive-field size in input pixels (None if unknown
        or not spatial).
    """

    name: str
    shape: tuple[int, ...]
    stride: int | None = None
    receptive_field: int | None = None

    @property
    def channels(self) -> int:
        return self.shape[-1]

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything static a technique needs to know about a model.

    Attributes:
      name: the model's name, e.g. ``"efficientnet_lite0"``.
      input_size: ``(h, w)`` the model was trained at.
      channels: input channels (3 for RGB, 1 for greyscale).
      value_mapping: how [0, 1] images become the model's input values.
      layers: the named activations, in forward order (``"input"`` first, ``"logits"`` last).
      class_names: one name per output class.
      resize_size: for evaluation, resize the shorter side to this before centre-cropping to
        ``input_size`` (None: resize straight to ``input_size``).
      weights: where the weights came from (source, licence, sha256...).
    """

    name: str
    input_size: tuple[int, int]
    layers: tuple[LayerSpec, ...]
    class_names: tuple[str, ...]
    channels: int = 3
    value_mapping: ValueMapping = ValueMapping()
    resize_size: int | None = None
    weights: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def layer(self, name: str) -> LayerSpec:
        """The :class:`LayerSpec` called ``name``; an unknown name lists the valid ones."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(unknown_message("layer", name, self.layer_names, f"model {self.name!r}"))

    def check_layers(self, names: Sequence[str]) -> None:
        """Raise a ``ValueError`` naming the first unknown layer and listing the valid ones."""
        valid = set(self.layer_names)
        for name in names:
            if name not in valid:
                self.layer(name)

    def class_index(self, cls: int | str) -> int:
        """The index of a class given by index or by name (or any of its synonyms).

        ImageNet names hold comma-separated synonyms (``"tabby, tabby cat"``), and 19 synonyms
        name two classes (``"crane"`` the bird and the machine). A name is looked up in order:
        the whole name, then the first synonym (the primary name), then any synonym, each
        first exactly and then ignoring case; the first step that finds one class gives it
        (``"cardigan"`` is the garment, ``"Cardigan"`` the corgi, ``"missile"`` the class whose
        primary name it is). A name that still names several classes is refused, listing them;
        an unknown name suggests close matches.

        Example:
          >>> from cnnjax.models import imagenet_classes
          >>> spec = ModelSpec("m", (8, 8), (), imagenet_classes())
          >>> spec.class_index("cardigan"), spec.class_index("Cardigan"), spec.class_index("tabby cat")
          (474, 264, 281)
        """
        n = self.num_classes
        if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool):
            if not 0 <= int(cls) < n:
                raise ValueError(f"class index {cls} is out of range for {self.name!r}: valid 0..{n - 1}")
            return int(cls)
        if not isinstance(cls, str):
            raise ValueError(f"a class is an int index or a str name, got {type(cls).__name__}")
        if cls.strip().lstrip("-").isdigit():
            return self.class_index(int(cls))
        name = cls.strip()
        synonyms = [[s.strip() for s in full.split(",")] for full in self.class_names]
        tiers = (
            lambda i: self.class_names[i].strip() == name,
            lambda i: synonyms[i][0] == name,
            lambda i: name in synonyms[i],
            lambda i: self.class_names[i].strip().lower() == name.lower(),
            lambda i: synonyms[i][0].lower() == name.lower(),
            lambda i: name.lower() in (s.lower() for s in synonyms[i]),
        )
        for match in tiers:
            found = [i for i in range(n) if match(i)]
            if len(found) == 1:
                return found[0]
            if found:
                listed = "; ".join(f"{i} ({self.class_names[i]})" for i in found)
                raise ValueError(
                    f"class name {cls!r} names {len(found)} classes of {self.name!r}: {listed}; "
                    "give the index or a longer name"
                )
        by_lower = {s.lower(): s for names in synonyms for s in names}
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(by_lower[c]) for c in close)}?" if close else ""
        raise ValueError(f"unknown class {cls!r} for model {self.name!r} ({n} classes){hint}")

    def class_name(self, index: int) -> str:
        """The display name of a class: the first synonym of its full name."""
        return self.class_names[self.class_index(int(index))].split(",")[0].strip()

    def check_images(self, images: Any, *, exact_size: bool = False) -> jax.Array:
        """Check a batch of images against the contract and this model; return it as float32.

        Raises ``ValueError`` (before any work) for a wrong rank, channel count, dtype kind,
        size smaller than :attr:`min_input_size` (or different from ``input_size`` when ``exact_size``),
        or values outside [0, 1] or non-finite (checked only on concrete arrays).
        """
        return check_images(
            images,
            channels=self.channels,
            size=self.input_size if exact_size else None,
            min_size=self.min_input_size,
            what=f"images for {self.name!r}",
        )

    @property
    def min_input_size(self) -> int:
        """The smallest image side the model takes: its largest effective stride (so its last
        spatial layer has at least one position), and at least 8."""
        strides = [layer.stride for layer in self.layers if layer.stride]
        return max([8] + strides)


def unknown_message(kind: str, name: str, valid: Sequence[str], where: str) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"unknown {kind} {name!r} for {where}.{hint} Valid {kind}s: {', '.join(valid)}"


# --------------------------------------------------------------------------------------------
# The model bundle


@dataclasses.dataclass(frozen=True)
class Model:
    """A model: a pure ``apply`` function, its ``params`` pytree and its ``spec``.

    ``model(images, perturb=None)`` is ``model.apply(model.params, images, ...)`` as one compiled
    program (jitted once per model and shapes; inside a trace it is inlined like any function).
    Techniques take the bundle and differentiate ``apply`` with respect to images, params or
    perturbations as they need.

    ``train_apply(params, images, key) -> logits``, when present, is the forward in training
    mode (dropout drawn from the explicit ``key``); training uses it, everything else uses
    ``apply`` (evaluation mode).

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> model = tiny_cnn()
      >>> acts = model.apply(model.params, np.full((2, 32, 32, 3), 0.5, np.float32))
      >>> list(acts)
      ['input', 'conv1', 'conv2', 'conv3', 'pooled', 'logits']
      >>> jax.nn.softmax(acts["logits"]).shape
      (2, 10)
    """

    apply: ApplyFn
    params: Any
    spec: ModelSpec
    train_apply: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None

    def __call__(self, images: jax.Array, *, perturb: Mapping[str, jax.Array] | None = None):
        # Called eagerly, the forward pass would run (and compile) operation by operation.
        return _jitted(self.apply)(self.params, images, perturb=perturb)

    def astype(self, dtype) -> Model:
        """This model computing in ``dtype`` (mixed precision, e.g. ``jnp.bfloat16`` on a GPU or
        TPU): its floating parameters cast once, its inputs (images, perturbations) cast at the
        start of ``apply``, its activations returned as float32, so a technique's images,
        gradients and optimiser state stay float32. ``float32`` (or None) is the model itself.

        Example:
          >>> from cnnjax.testing import tiny_cnn
          >>> model = tiny_cnn()
          >>> low = model.astype(jnp.bfloat16)
          >>> acts = low.apply(low.params, np.full((1, 32, 32, 3), 0.5, np.float32))
          >>> acts["logits"].dtype, model.astype("bfloat16").apply is low.apply  # one wrapper: no recompiles
          (dtype('float32'), True)
        """
        dtype = check_compute_dtype(dtype)
        if dtype == jnp.float32:
            return self
        params = _cast_floats(self.params, dtype.name)  # one program, not one per leaf
        return dataclasses.replace(self, apply=_in_dtype(self.apply, dtype), params=params, train_apply=None)


_JITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_IN_DTYPE: dict = {}

#: The dtypes a model may compute in (:meth:`Model.astype`).
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def check_compute_dtype(dtype) -> np.dtype:
    """``dtype`` (None: float32) as a NumPy dtype, one of :data:`COMPUTE_DTYPES`, else a clear error."""
    try:
        d = np.dtype(jnp.float32 if dtype is None else dtype)
    except TypeError:
        d = None
    if d is None or d.name not in COMPUTE_DTYPES:
        raise ValueError(
            f"dtype must be one of {', '.join(COMPUTE_DTYPES)} (or None: float32), got {dtype!r}"
        )
    return d


@functools.partial(jax.jit, static_argnames="dtype")
def _cast_floats(tree, dtype: str):
    """The floating leaves of ``tree`` cast to ``dtype``, the others as they are."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a,
                        tree)  # fmt: skip


def _in_dtype(apply: Callable, dtype: np.dtype) -> Callable:
    """``apply`` with its floating inputs cast to ``dtype`` and its activations returned as
    float32; one wrapper per ``(apply, dtype)``, so compiled programs are reused."""
    key = (id(apply), dtype.name)
    found = _IN_DTYPE.get(key)
    if found is not None and found[0] is apply:
        return found[1]

    def wrapped(params, images, **kwargs):
        low = _cast_floats((images, kwargs), dtype.name)
        return _cast_floats(apply(params, low[0], **low[1]), "float32")

    wrapped.__name__ = getattr(apply, "__name__", "apply")
    _IN_DTYPE[key] = (apply, wrapped)
    return wrapped


def _jitted(apply: Callable) -> Callable:
    """``jax.jit(apply)``, one wrapper per ``apply`` for as long as it lives."""
    try:
        return _JITTED[apply]
    except KeyError:
        return _JITTED.setdefault(apply, jax.jit(apply))
    except TypeError:  # not weakly referenceable: a fresh wrapper (JAX's own cache still helps)
        return jax.jit(apply)
