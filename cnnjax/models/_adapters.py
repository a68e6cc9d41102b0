"""Turn a Flax NNX module, a Flax Linen module or a plain function into the model contract.

Every adapter returns a :class:`~cnnjax.Model` whose

    apply(params, images, *, perturb=None) -> Activations

takes [0, 1] NHWC images, applies the spec's value mapping, and returns named activations with
``"input"`` first and ``"logits"`` last. The recording and perturbing of activations is done
in one place, :func:`record`, through a :class:`Tape`:

* a plain function is written ``fn(params, x, tap) -> logits`` and calls ``h = tap("conv1", h)``
  for each layer it wants named;
* an NNX module is written the same way, as ``forward(self, x, tap)`` (or ``__call__``); the
  graph is split once with ``nnx.split`` and merged inside ``apply`` (a pure function);
* a Linen module needs no changes: the outputs of its submodules are recorded with
  ``capture_intermediates`` (named by their path, ``"block1/conv"``) and perturbations are
  added to those outputs by intercepting the submodules' ``__call__``.

Flax is imported only inside the adapters that need it.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from cnnjax._src.contract import Activations, LayerSpec, Model, ModelSpec, ValueMapping, unknown_message

__all__ = ["Tape", "record", "from_function", "from_nnx", "from_linen", "build_spec"]

Forward = Callable[[jax.Array, "Tape"], jax.Array]


class Tape:
    """Records named activations during one forward pass and adds perturbations to them.

    ``tap(name, h)`` returns ``h + perturb[name]`` (or ``h``) and records the returned value.
    A name may be recorded once per pass.
    """

    def __init__(self, perturb: Mapping[str, jax.Array] | None = None):
        self.perturb = dict(perturb or {})
        # An OrderedDict keeps forward order through jit/vmap (plain dicts come back sorted).
        self.acts: collections.OrderedDict[str, jax.Array] = collections.OrderedDict()

    def __call__(self, name: str, h: jax.Array) -> jax.Array:
        if name in self.acts:
            raise ValueError(f"layer name {name!r} is recorded twice in one forward pass")
        if name in self.perturb:
            delta = jnp.asarray(self.perturb[name])
            try:
                fits = jnp.broadcast_shapes(delta.shape, h.shape) == h.shape
            except ValueError:
                fits = False
            if not fits:
                raise ValueError(
                    f"perturbation for layer {name!r} has shape {delta.shape}, which does not "
                    f"broadcast to the activation's shape {h.shape}"
                )
            h = h + jnp.broadcast_to(delta.astype(h.dtype), h.shape)
        self.acts[name] = h
        return h

    def unused(self) -> list[str]:
        return [name for name in self.perturb if name not in self.acts]


def record(
    forward: Forward,
    images: jax.Array,
    value_mapping: ValueMapping,
    perturb: Mapping[str, jax.Array] | None = None,
) -> Activations:
    """Run ``forward(value_mapping(images), tap) -> logits`` and return its activations.

    ``"input"`` is recorded before the value mapping (so its gradient is the gradient with
    respect to the [0, 1] image) and ``"logits"`` after the forward.
    """
    tape = Tape(perturb)
    x = tape("input", images)
    logits = forward(value_mapping(x), tape)
    tape("logits", logits)
    unused = tape.unused()
    if unused:
        raise ValueError(unknown_message("layer", unused[0], list(tape.acts), "perturb"))
    return tape.acts


def _checked(apply: Callable, spec: ModelSpec) -> Callable:
    """Wrap ``apply`` so that unknown perturbation names fail before any work."""

    def checked_apply(params, images, *, perturb=None):
        if perturb:
            spec.check_layers(list(perturb))
        return apply(params, images, perturb=perturb)

    checked_apply.__doc__ = f"The pure forward of {spec.name!r}: images in [0, 1] -> activations."
    return checked_apply


def build_spec(
    apply: Callable,
    params: Any,
    *,
    name: str,
    input_size: tuple[int, int] | int,
    channels: int = 3,
    value_mapping: ValueMapping = ValueMapping(),
    class_names: Sequence[str] | None = None,
    resize_size: int | None = None,
    receptive_fields: Mapping[str, int] | None = None,
    weights: Mapping[str, str] | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> ModelSpec:
    """Derive a :class:`ModelSpec` by tracing ``apply`` once on an abstract input.

    Layer shapes and effective strides come from ``jax.eval_shape`` (no FLOPs are spent), or
    from ``shapes`` (every activation's shape without the batch axis, in forward order) when
    the architecture knows them; class names default to ``"class_0"...``.
    """
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    h, w = input_size
    if shapes is None:
        probe = jax.ShapeDtypeStruct((1, h, w, channels), jnp.float32)
        traced = jax.eval_shape(lambda p, x: apply(p, x), params, probe)
        shapes = {layer: tuple(s.shape[1:]) for layer, s in traced.items()}
    if "logits" not in shapes:
        raise ValueError(f"model {name!r} does not return 'logits'")
    layers = []
    for layer, shape in shapes.items():
        shape = tuple(shape)
        stride = None
        if len(shape) == 3 and shape[0] > 0:
            stride = max(1, round(h / shape[0]))
        rf = (receptive_fields or {}).get(layer)
        layers.append(LayerSpec(layer, shape, stride, rf))
    num_classes = shapes["logits"][-1]
    if class_names is None:
        class_names = tuple(f"class_{i}" for i in range(num_classes))
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} logits")
    return ModelSpec(
        name=name,
        input_size=(h, w),
        layers=tuple(layers),
        class_names=tuple(class_names),
        channels=channels,
        value_mapping=value_mapping,
        resize_size=resize_size,
        weights=dict(weights or {}),
    )


def _value_mapping(spec: ModelSpec | None, spec_kwargs: Mapping[str, Any]) -> ValueMapping:
    return spec.value_mapping if spec else spec_kwargs.get("value_mapping", ValueMapping())


def _model(raw_apply: Callable, params: Any, spec: ModelSpec | None, train_apply=None, **spec_kwargs):
    if spec is None:
        spec = build_spec(raw_apply, params, **spec_kwargs)
    elif spec_kwargs:
        raise ValueError(f"give either spec or {sorted(spec_kwargs)}, not both")
    return Model(apply=_checked(raw_apply, spec), params=params, spec=spec, train_apply=train_apply)


def from_function(
    fn: Callable[[Any, jax.Array, Tape], jax.Array],
    params: Any,
    spec: ModelSpec | None = None,
    **spec_kwargs,
) -> Model:
    """Wrap a plain function ``fn(params, x, tap) -> logits`` as a :class:`~cnnjax.Model`.

    ``x`` arrives in the model's own value range (the spec's value mapping is applied first);
    ``tap(name, h)`` names an activation and returns it (plus its perturbation, if any).

    Args:
      fn: the forward function.
      params: its parameters (any pytree).
      spec: a ready :class:`ModelSpec`; or give ``spec_kwargs`` instead.
      **spec_kwargs: ``name``, ``input_size`` and optionally ``channels``, ``value_mapping``,
        ``class_names``... to derive the spec (see :func:`build_spec`).

    Returns:
      A :class:`~cnnjax.Model`.

    Example:
      >>> def fn(p, x, tap):
      ...     h = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME",
      ...                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
      ...     h = tap("conv", jax.nn.relu(h))
      ...     return h.mean((1, 2)) @ p["dense"]
      >>> rng = np.random.default_rng(0)
      >>> params = {"w": rng.normal(size=(3, 3, 3, 8)).astype(np.float32),
      ...           "dense": rng.normal(size=(8, 10)).astype(np.float32)}
      >>> model = from_function(fn, params, name="tiny", input_size=32)
      >>> model.spec.layer_names, model.spec.layer("conv").shape
      (('input', 'conv', 'logits'), (32, 32, 8))
    """
    value_mapping = _value_mapping(spec, spec_kwargs)

    def apply(params, images, *, perturb=None):
        return record(lambda x, tap: fn(params, x, tap), images, value_mapping, perturb)

    return _model(apply, params, spec, **spec_kwargs)


def from_nnx(module: Any, spec: ModelSpec | None = None, **spec_kwargs) -> Model:
    """Wrap a Flax NNX module as a :class:`~cnnjax.Model`.

    The module computes ``forward(self, x, tap) -> logits`` if it has such a method, else
    ``__call__(self, x, tap)``. If that method also takes ``dropout_key``, the model gets a
    ``train_apply(params, images, key)`` that passes the key (training mode). Its state is
    split once (``nnx.split``): ``params`` is the
    module's whole state (parameters and, e.g., BatchNorm statistics) and ``apply`` merges it
    back inside a pure function, so ``jax.grad`` with respect to ``params`` works. The module is
    used as it is: put it in eval mode (``module.eval()``) first if it has dropout or BatchNorm.
    ``spec`` and ``spec_kwargs`` are as for :func:`from_function`.

    Example:
      >>> from flax import nnx
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.conv = nnx.Conv(3, 10, (3, 3), rngs=rngs)
      ...     def __call__(self, x, tap):
      ...         h = tap("conv", self.conv(x))
      ...         return h.mean((1, 2))  # one channel per class
      >>> model = from_nnx(Net(nnx.Rngs(0)), name="net", input_size=32)
      >>> model.spec.layer_names, model.spec.layer("conv").shape
      (('input', 'conv', 'logits'), (32, 32, 10))
    """
    from flax import nnx

    if not isinstance(module, nnx.Module):
        raise ValueError(f"from_nnx expects a flax.nnx.Module, got {type(module).__name__}")
    method = "forward" if callable(getattr(module, "forward", None)) else "__call__"
    sig = inspect.signature(getattr(module, method))
    if len(sig.parameters) < 2:
        raise ValueError(
            f"{type(module).__name__}.{method} must take (x, tap) and call tap(name, h) for each "
            f"named layer; its signature is {sig}"
        )
    graphdef, state = nnx.split(module)
    value_mapping = _value_mapping(spec, spec_kwargs)

    def apply(params, images, *, perturb=None):
        m = nnx.merge(graphdef, params)
        return record(getattr(m, method), images, value_mapping, perturb)

    train_apply = None
    if "dropout_key" in sig.parameters:

        def train_apply(params, images, key):
            m = nnx.merge(graphdef, params)
            return getattr(m, method)(value_mapping(images), Tape(), dropout_key=key)

    return _model(apply, state, spec, train_apply, **spec_kwargs)


def from_linen(module: Any, variables: Any, spec: ModelSpec | None = None, **spec_kwargs) -> Model:
    """Wrap a Flax Linen module and its variables as a :class:`~cnnjax.Model`.

    No change to the module is needed. Every submodule's output is an activation named by its
    path (``"conv1"``, ``"block2/conv"``), recorded with ``capture_intermediates``; a
    perturbation for a layer is added to that submodule's output by intercepting its
    ``__call__`` (Linen's own ``self.perturb`` needs the module's cooperation and a zero
    variable for every point). The module's return value is the logits. Pass ``variables``
    that make the module deterministic (e.g. ``use_running_average=True``). ``spec`` and
    ``spec_kwargs`` are as for :func:`from_function`.

    Example:
      >>> import flax.linen as nn
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         h = nn.Conv(10, (3, 3), name="conv")(x)
      ...         return h.mean((1, 2))  # one channel per class
      >>> variables = Net().init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
      >>> model = from_linen(Net(), variables, name="net", input_size=32)
      >>> model.spec.layer_names, model.spec.layer("conv").shape
      (('input', 'conv', 'logits'), (32, 32, 10))
    """
    import flax.linen as nn

    if not isinstance(module, nn.Module):
        raise ValueError(f"from_linen expects a flax.linen.Module, got {type(module).__name__}")
    value_mapping = _value_mapping(spec, spec_kwargs)

    def forward(variables, x, tap):
        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            path = context.module.path
            if context.method_name == "__call__" and path:
                name = "/".join(path)
                if name in tap.perturb:
                    out = out + jnp.broadcast_to(jnp.asarray(tap.perturb[name], out.dtype), out.shape)
            return out

        with nn.intercept_methods(interceptor):
            logits, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        for path, value in _flatten_intermediates(state["intermediates"]):
            if path:  # the root's own output is the logits
                tap.acts["/".join(path)] = value
        return logits

    def apply(variables, images, *, perturb=None):
        return record(lambda x, tap: forward(variables, x, tap), images, value_mapping, perturb)

    return _model(apply, variables, spec, **spec_kwargs)


def _flatten_intermediates(tree, prefix=()):
    """Yield ``(module_path, output)`` in the order the outputs were captured."""
    for key, value in tree.items():
        if key == "__call__":
            yield prefix, value[0]
        elif isinstance(value, Mapping):
            yield from _flatten_intermediates(value, prefix + (key,))
