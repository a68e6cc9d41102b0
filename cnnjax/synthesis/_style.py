"""Neural style transfer (Gatys, Ecker & Bethge 2015/2016): the content of one image in the
style of others, by matching a layer's activations and several layers' Gram matrices.

    L(x) = w_c content(F(x), F(c)) + w_s mean_l style(F_l(x), sum_j b_j G_l(s_j)) + w_tv TV(x)

Networks other than VGG are known to transfer style weakly: their (residual) activations are
peaky, with low entropy, and Gram matrices latch onto the peaks. Wang, Li & Vasconcelos
(CVPR 2021) fix this by smoothing the activations with a softmax before the losses; that is the
default here (``smoothing="softmax"``, :func:`cnnjax.losses.softmax_smoothing`).

Every (content, style blend, weight setting) combination is one problem; all of them run in
one compiled program, with the network evaluated once per step on all of them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax import losses as _losses
from cnnjax import priors as _priors
from cnnjax._src.checks import (
    MAX_STEPS,
    as_key,
    check_finite_run,
    check_float,
    check_floats,
    check_positive_int,
)
from cnnjax._src.contract import Model, ModelSpec
from cnnjax.synthesis._engine import (
    apply_stacked,
    by_learning_rate,
    check_optimizer,
    drive,
    init_state,
    minimise_chunk,
)

__all__ = ["StyleTransferResult", "default_layers", "from_yiq", "luminance", "style_transfer", "to_yiq"]


class StyleTransferResult(NamedTuple):
    """What :func:`style_transfer` returns.

    Attributes:
      images: float32 ``[problems, h, w, c]`` in [0, 1].
      content_loss: ``[problems]``, the (smoothed) content loss of the results, unweighted.
      style_loss: ``[problems]``, the (smoothed) style loss of the results, unweighted.
      initial_style_loss: ``[problems]``, the style loss of the starting images.
      history: ``[problems, steps]``, the total weighted loss before each step.
    """

    images: jax.Array
    content_loss: jax.Array
    style_loss: jax.Array
    initial_style_loss: jax.Array
    history: jax.Array


def default_layers(spec: ModelSpec) -> tuple[str, tuple[str, ...]]:
    """Content and style layers for a model, from its layers' strides.

    Style: the last layer at each effective stride from 2 to 16 (textures from fine to
    coarse, as Gatys et al. take the first layer of each VGG block). Content: the last layer
    at the largest of those strides. For EfficientNet-Lite0: content ``block_10``, style
    ``block_0, block_2, block_4, block_10``.
    """
    by_stride: dict[int, str] = {}
    for layer in spec.layers:
        if layer.spatial and layer.stride and 2 <= layer.stride <= 16 and layer.name != "input":
            by_stride[layer.stride] = layer.name
    if not by_stride:
        raise ValueError(f"model {spec.name!r} has no spatial layers with stride 2..16; pass the layers")
    style = tuple(by_stride[s] for s in sorted(by_stride))
    return style[-1], style


_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], np.float32
)


def to_yiq(images: jax.Array) -> jax.Array:
    """RGB ``[..., 3]`` to YIQ (luminance and two chroma channels)."""
    return jnp.einsum("...k,rk->...r", images, jnp.asarray(_YIQ))


def from_yiq(yiq: jax.Array) -> jax.Array:
    """YIQ ``[..., 3]`` back to RGB."""
    return jnp.einsum("...k,rk->...r", yiq, jnp.asarray(np.linalg.inv(_YIQ).astype(np.float32)))


def luminance(images: jax.Array) -> jax.Array:
    """The luminance ``Y`` of RGB images, as a grey RGB image ``[..., 3]``."""
    y = to_yiq(images)[..., :1]
    return jnp.broadcast_to(y, images.shape)


def _adam(learning_rate) -> optax.GradientTransformation:
    return optax.chain(optax.adam(learning_rate), _priors.box(0.0, 1.0))


@functools.cache
def _lbfgs() -> optax.GradientTransformation:
    return optax.chain(optax.lbfgs(), _priors.box(0.0, 1.0))


def _boxed(optimizer):
    """A user's optimizer with the image kept in [0, 1] after every step."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optax.chain(optimizer, _priors.box(0.0, 1.0))
    return _BOXED.setdefault(
        optimizer, lambda learning_rate: optax.chain(optimizer(learning_rate), _priors.box(0.0, 1.0))
    )


_BOXED: dict = {}


def _smooth(f, temperature, smoothing):
    return _losses.softmax_smoothing(f, temperature) if smoothing == "softmax" and f.ndim == 4 else f


@functools.partial(
    jax.jit,
    static_argnames=(
        "apply", "content_layer", "style_layers", "optimizer", "smoothing", "from_noise", "preserve_color",
    ),
)  # fmt: skip
def _setup(apply, params, content, style, blend, key, temperature, hyperparams, *, content_layer,
           style_layers, optimizer, smoothing, from_noise, preserve_color):  # fmt: skip
    """The targets (content code, blended Gram matrices and their scales), the starting images
    and the optimiser's state."""
    problems = blend.shape[0]
    content = jnp.broadcast_to(content, (problems,) + content.shape[1:])
    colour = content
    if preserve_color:
        # Luminance-only transfer (Gatys et al. 2016): match the style's luminance statistics
        # to the content's, transfer on luminance, then restore the content's chroma.
        cy, sy = luminance(content), luminance(style)
        mu_c, sd_c = cy.mean(), cy.std()
        sy = (sy - sy.mean(axis=(1, 2, 3), keepdims=True)) / (sy.std(axis=(1, 2, 3), keepdims=True) + 1e-6)
        content, style = cy, jnp.clip(sy * sd_c + mu_c, 0.0, 1.0)
    c_target = _smooth(apply(params, content)[content_layer], temperature, smoothing)
    s_acts = apply(params, style)
    grams = {name: _losses.gram(_smooth(s_acts[name], temperature, smoothing)) for name in style_layers}
    grams = {name: jnp.einsum("ps,sij->pij", blend, g) for name, g in grams.items()}  # [problems, k, k]
    # Both losses are relative to their target's energy, so the weights mean the same for
    # every layer, model and smoothing: 1 is "as large as the target itself".
    targets = {
        "content": c_target,
        "grams": grams,
        "content_scale": jnp.mean(c_target**2, axis=tuple(range(1, c_target.ndim))),
        "gram_scales": {name: jnp.mean(g**2, axis=(1, 2)) for name, g in grams.items()},
        "colour": colour,
    }
    if from_noise:
        start = jnp.clip(0.5 + 0.1 * jax.random.normal(key, content.shape), 0.0, 1.0)
    else:
        start = content
    return targets, start, init_state(optimizer, start, hyperparams)


@functools.partial(
    jax.jit,
    static_argnames=("apply", "content_layer", "style_layers", "optimizer", "smoothing", "length", "final"),
)
def _advance(apply, params, targets, weights, keys, temperature, hyperparams, x, state, start, *,
             content_layer, style_layers, optimizer, smoothing, length, final, steps):  # fmt: skip
    layers = tuple(dict.fromkeys((content_layer,) + style_layers))
    w_content, w_style, w_tv = weights[:, 0], weights[:, 1], weights[:, 2]

    def loss_fn(x, step_keys):
        acts = apply_stacked(apply, params, x[:, None], layers)
        feats = {name: _smooth(acts[name][:, 0], temperature, smoothing) for name in layers}
        c_loss = _losses.content(feats[content_layer], targets["content"]) / targets["content_scale"]
        s_loss = sum(
            _losses.style(feats[name], targets["grams"][name]) / targets["gram_scales"][name]
            for name in style_layers
        ) / len(style_layers)
        total = w_content * c_loss + w_style * s_loss + w_tv * _losses.total_variation(x)
        return total, (total, c_loss, s_loss)

    return minimise_chunk(
        loss_fn, x, state, keys, optimizer, hyperparams, start, length=length, steps=steps, final=final
    )


@functools.partial(jax.jit, static_argnames=("preserve_color",))
def _finish(x, colour, *, preserve_color):
    if not preserve_color:
        return x
    return jnp.clip(
        from_yiq(jnp.concatenate([to_yiq(x)[..., :1], to_yiq(colour)[..., 1:]], axis=-1)), 0.0, 1.0
    )


def _run(model, content, style, blend, weights, key, temperature, hyperparams, *, content_layer, style_layers,
         optimizer, steps, smoothing, from_noise, preserve_color):  # fmt: skip
    """Setup, the steps in chunks (Ctrl-C is seen between them), finish."""
    statics = dict(
        content_layer=content_layer, style_layers=style_layers, optimizer=optimizer, smoothing=smoothing
    )
    targets, x, state = _setup(model.apply, model.params, content, style, blend, key, temperature,
                               hyperparams, from_noise=from_noise, preserve_color=preserve_color,
                               **statics)  # fmt: skip
    keys = jax.random.split(key, blend.shape[0])
    advance = functools.partial(_advance, model.apply, model.params, targets, weights, keys, temperature,
                                hyperparams, steps=steps, **statics)  # fmt: skip
    # The loop's forward pass gives the losses at the start (its first step) and at the end
    # (one more pass, its update skipped): the network is compiled once, in the loop.
    x, (history, _, style_history), (_, c_loss, s_loss) = drive(advance, x, state, steps, final=True)
    x = _finish(x, targets["colour"], preserve_color=preserve_color)
    return x, c_loss, s_loss, style_history[0], history.T


def style_transfer(
    model: Model,
    content: Any,
    style: Any,
    *,
    content_layer: str | None = None,
    style_layers: Sequence[str] | None = None,
    blend: Any = None,
    content_weight: Any = 1.0,
    style_weight: Any = 30.0,
    tv_weight: Any = 300.0,
    smoothing: str | None = "softmax",
    temperature: float = 1.0,
    init: str = "content",
    optimizer: Any = "adam",
    learning_rate: Any = None,
    steps: int = 200,
    preserve_color: bool = False,
    key: Any = 0,
    dtype=None,
) -> StyleTransferResult:
    r"""Paint ``content`` in the style of ``style``.

    Minimises ``w_c content + w_s style + w_tv TV`` over the image, starting from the content
    (or from noise), with Adam or L-BFGS; the image is kept in [0, 1] by projection. The style
    loss is the mean over ``style_layers`` of :func:`cnnjax.losses.style`, with Gram matrices
    normalised by the number of positions (``G = V^T V / (h w)``) and targets that blend the
    style images' Gram matrices. Both the content and the style loss are divided by their
    target's mean square, so they are relative errors (1: as large as the target) and the
    weights mean the same at every layer; the defaults (30 and 300, Adam 0.01, 200 steps)
    were chosen by looking at results on the bundled model and styles.

    Args:
      model: a :class:`~cnnjax.Model`.
      content: content images ``[n, h, w, c]`` in [0, 1] (n = 1 or one per problem).
      style: style images ``[s, h', w', c]`` in [0, 1] (any size; Gram matrices do not depend
        on it).
      content_layer, style_layers: default :func:`default_layers` of the model.
      blend: weights of the style images: ``[s]`` for one blend, ``[problems, s]`` for one per
        problem (rows are normalised to sum to 1). Default: all style images equally; with
        ``n == s`` content images and no blend, content ``i`` gets style ``i`` (pairs).
      content_weight, style_weight, tv_weight: scalars or one value per problem (a sweep of
        settings runs as one program; the weights are array arguments, so new values never
        recompile).
      smoothing: ``"softmax"`` (Wang et al. 2021) or None (plain Gatys et al.).
      temperature: of the softmax smoothing.
      init: ``"content"`` or ``"noise"``.
      optimizer: ``"adam"`` (with ``learning_rate``), ``"lbfgs"`` (``optax.lbfgs`` with its
        line search), a function of the learning rate returning an optax transformation, or
        an optax transformation used as it is. The image is kept in [0, 1] after every step.
      learning_rate: the learning rate in [0, 1] pixel units (Adam's default 0.01): one value
        or one per problem, traced (a sweep is one program; new values never recompile).
      steps: optimiser steps.
      preserve_color: transfer on luminance only and keep the content's colours.
      key: an int seed or a PRNG key (the noise of ``init="noise"``).
      dtype: the model's arithmetic (:meth:`cnnjax.Model.astype`): None (float32) or
        ``jnp.bfloat16`` on a GPU or TPU; the images, gradients and optimiser state stay float32.

    Returns:
      :class:`StyleTransferResult` ``(images, content_loss, style_loss, initial_style_loss,
      history)``.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> rng = np.random.default_rng(0)
      >>> content, style = rng.random((1, 32, 32, 3), np.float32), rng.random((1, 32, 32, 3), np.float32)
      >>> out = style_transfer(tiny_cnn(), content, style, steps=5, style_weight=[10.0, 30.0])
      >>> out.images.shape
      (2, 32, 32, 3)
    """
    model = model if dtype is None else model.astype(dtype)
    spec = model.spec
    content = spec.check_images(content)
    style = spec.check_images(style)
    default_content, default_style = default_layers(spec)
    content_layer = default_content if content_layer is None else content_layer
    style_layers = tuple(default_style if style_layers is None else style_layers)
    if not style_layers:
        raise ValueError("style_transfer needs at least one style layer")
    spec.check_layers((content_layer,) + style_layers)
    for name in style_layers:
        if not spec.layer(name).spatial:
            raise ValueError(
                f"style layer {name!r} is not spatial (shape {spec.layer(name).shape}); Gram "
                "matrices need a spatial layer"
            )
    if smoothing not in ("softmax", None):
        raise ValueError(f"smoothing must be 'softmax' or None, got {smoothing!r}")
    if init not in ("content", "noise"):
        raise ValueError(f"init must be 'content' or 'noise', got {init!r}")
    if preserve_color and spec.channels != 3:
        raise ValueError("preserve_color needs RGB images")
    steps = check_positive_int(steps, "steps", hi=MAX_STEPS)
    temperature = check_float(temperature, "temperature", lo=0.0, lo_open=True)
    blend = _blend(blend, content.shape[0], style.shape[0])
    weights = [
        check_floats(w, name, lo=0.0)
        for name, w in (("content_weight", content_weight), ("style_weight", style_weight),
                        ("tv_weight", tv_weight))
    ]  # fmt: skip
    rates = None
    if optimizer == "adam":
        optimizer, learning_rate = _adam, 0.01 if learning_rate is None else learning_rate
    elif optimizer == "lbfgs":
        if learning_rate is not None:
            raise ValueError("L-BFGS takes no learning rate (its line search sets the step)")
        optimizer = _lbfgs()
    elif isinstance(optimizer, str):
        raise ValueError(f"optimizer must be 'adam', 'lbfgs' or an optax transformation, got {optimizer!r}")
    else:
        optimizer = _boxed(check_optimizer(optimizer, learning_rate))
    if learning_rate is not None:
        rates = check_floats(learning_rate, "learning_rate", lo=0.0, lo_open=True)
        optimizer = by_learning_rate(optimizer)
    sizes = (
        {len(blend), content.shape[0]}
        | {len(w) for w in weights}
        | ({len(rates)} if rates is not None else set())
    )
    problems = max(sizes)
    if sizes - {1, problems}:
        raise ValueError(
            f"content images ({content.shape[0]}), blend rows ({len(blend)}), per-problem weights "
            f"({', '.join(str(len(w)) for w in weights)}) and learning rates must each be 1 or the "
            f"number of problems ({problems})"
        )
    blend = np.broadcast_to(blend, (problems, blend.shape[1]))
    weights = [np.broadcast_to(w, (problems,)) for w in weights]
    hyperparams = (
        None
        if rates is None
        else {"learning_rate": np.ascontiguousarray(np.broadcast_to(rates, (problems,)))}
    )
    out = _run(
        model,
        content,
        style,
        np.ascontiguousarray(blend),
        np.stack(weights, 1),
        as_key(key),
        np.float32(temperature),
        hyperparams,
        content_layer=content_layer,
        style_layers=style_layers,
        optimizer=optimizer,
        steps=steps,
        smoothing=smoothing,
        from_noise=init == "noise",
        preserve_color=bool(preserve_color),
    )
    check_finite_run("style_transfer", out[0], out[4])
    return StyleTransferResult(*out)


def _blend(blend, n_content: int, n_style: int) -> np.ndarray:
    """The ``[problems, s]`` blend matrix, rows summing to 1."""
    if blend is None:
        if n_content == n_style and n_content > 1:
            return np.eye(n_style, dtype=np.float32)
        return np.full((max(1, n_content), n_style), 1.0 / n_style, np.float32)
    b = np.asarray(blend, np.float32)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != n_style:
        raise ValueError(
            f"blend must be [{n_style}] or [problems, {n_style}] for {n_style} style images, "
            f"got shape {np.shape(blend)}"
        )
    if not np.all(np.isfinite(b)) or np.any(b < 0) or np.any(b.sum(1) <= 0):
        raise ValueError(f"blend weights must be finite, >= 0 and not all zero in a row, got {b}")
    if b.shape[0] == 1 and n_content > 1:
        b = np.repeat(b, n_content, axis=0)
    return b / b.sum(1, keepdims=True)
