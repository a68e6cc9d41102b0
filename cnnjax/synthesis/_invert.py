"""Inverting a code: the image whose activations at a layer match a photo's (Mahendran &
Vedaldi, "Understanding Deep Image Representations by Inverting Them", CVPR 2015).

    x* = argmin_x ||Phi(x) - Phi_0||^2 / ||Phi_0||^2 + lambda_alpha N_alpha(x) + lambda_TV TV^beta(x)

The data term is :func:`cnnjax.losses.inversion`; the alpha-norm keeps pixels in range and
total variation keeps the image smooth, more so for deeper layers (whose codes constrain the
image less). Several layers (and several images) are inverted in one compiled program: every
(layer, image) pair is one problem, and the network runs once per step on all of them.
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
from cnnjax import param as _param
from cnnjax import priors as _priors
from cnnjax._src.checks import (
    MAX_STEPS,
    as_key,
    check_finite_run,
    check_float,
    check_floats,
    check_positive_int,
)
from cnnjax._src.contract import Model
from cnnjax.synthesis._engine import (
    apply_stacked,
    drive,
    init_state,
    minimise_chunk,
    normalize_by_mean_abs,
)

__all__ = ["InvertResult", "invert", "tv_weight"]

#: Total-variation weight at the first and at the last layer of a model; layers in between
#: get the geometric interpolation by depth (:func:`tv_weight`). Chosen by measurement on the
#: bundled model (README, "Synthesis").
TV_RANGE = (0.5, 50.0)


class InvertResult(NamedTuple):
    """What :func:`invert` returns.

    Attributes:
      images: float32 ``[layers * n, h, w, c]`` in [0, 1], layer-major (all images for the
        first layer, then the second...).
      error: ``[layers * n]``, the normalised reconstruction error
        ``||Phi(x) - Phi_0||^2 / ||Phi_0||^2`` of the final images (0 is perfect).
      history: ``[layers * n, steps]``, the total loss before each step.
      layers: the layer of each row block, in order.
    """

    images: jax.Array
    error: jax.Array
    history: jax.Array
    layers: tuple[str, ...]


def tv_weight(model: Model, layer: str) -> float:
    """The default total-variation weight for inverting ``layer``: ``TV_RANGE`` interpolated
    geometrically by the layer's depth (its position among the model's layers)."""
    names = model.spec.layer_names
    depth = names.index(model.spec.layer(layer).name) / max(1, len(names) - 1)
    lo, hi = TV_RANGE
    return float(lo * (hi / lo) ** depth)


def _boundaries(steps: int) -> np.ndarray:
    """Where the learning rate drops 10x: at 60% and at 85% of the run (one drop if they meet)."""
    return np.array([int(0.6 * steps), int(0.85 * steps)], np.int32)


def _optimizer(h):
    """The optimiser as a function of the (traced) learning rate, momentum and the steps where
    the learning rate drops 10x (:func:`_boundaries`: traced too, so the number of steps is no
    compiled constant).

    Gradients are normalised by their mean absolute value, so the learning rate is a mean change
    per pixel at every layer. The latent is projected onto the box so that no pixel sticks at a
    clipped value, where the priors' gradients would vanish.
    """
    b = h["boundaries"]

    def schedule(count):  # optax.piecewise_constant_schedule's arithmetic, boundaries traced
        v = h["learning_rate"]
        for k in range(2):
            indicator = jnp.maximum(0.0, jnp.sign(b[k] - count))
            dropped = v * indicator + (1 - indicator) * 0.1 * v
            v = dropped if k == 0 else jnp.where(b[1] == b[0], v, dropped)
        return v

    return optax.chain(
        normalize_by_mean_abs(), optax.sgd(schedule, momentum=h["momentum"]), _priors.box(-0.5, 0.5)
    )


@functools.partial(jax.jit, static_argnames=("apply", "layers", "param", "from_code"))
def _setup(apply, params, targets, keys, hyper, *, layers, param, from_code):
    """The codes to match, the starting latents and the optimiser's state."""
    if from_code:
        codes = {layers[0]: targets}
    else:
        acts = apply(params, targets)
        codes = {name: acts[name] for name in layers}
    latents = jax.vmap(param.init)(keys)
    return codes, latents, init_state(_optimizer, latents, _rates(hyper, keys.shape[0]))


def _rates(hyper, problems):
    """The optimiser's hyperparameters, one row per problem."""
    return {k: jnp.broadcast_to(hyper[k], (problems,) + jnp.shape(hyper[k])) for k in
            ("learning_rate", "momentum", "boundaries")}  # fmt: skip


@functools.partial(jax.jit, static_argnames=("apply", "layers", "param", "length", "final"))
def _advance(apply, params, codes, keys, tv_weights, hyper, latents, state, start, *, layers, param, length,
             final, steps):  # fmt: skip
    n = jax.tree.leaves(codes)[0].shape[0]
    weights = jnp.repeat(tv_weights, n)

    def loss_fn(latents, step_keys):
        x = jax.vmap(param.to_image)(latents)  # [L * n, 1, h, w, c]
        acts = apply_stacked(apply, params, x, layers)
        error = jnp.concatenate(
            [
                _losses.inversion(acts[name][i * n : (i + 1) * n, 0], codes[name])
                for i, name in enumerate(layers)
            ]
        )
        images = x[:, 0]
        prior = hyper["alpha_weight"] * _losses.alpha_norm(images, hyper["alpha"]) + (
            weights * _losses.total_variation(images, hyper["beta"])
        )
        return error + prior, (error + prior, error)

    rates = _rates(hyper, keys.shape[0])
    return minimise_chunk(
        loss_fn, latents, state, keys, _optimizer, rates, start, length=length, steps=steps, final=final
    )


def _run(model, targets, keys, tv_weights, hyper, *, layers, param, steps, from_code):
    """Setup, then the steps in chunks (Ctrl-C is seen between them)."""
    codes, latents, state = _setup(model.apply, model.params, targets, keys, hyper, layers=layers,
                                   param=param, from_code=from_code)  # fmt: skip
    advance = functools.partial(_advance, model.apply, model.params, codes, keys, tv_weights, hyper,
                                layers=layers, param=param, steps=steps)  # fmt: skip
    latents, (history, _), (_, error) = drive(advance, latents, state, steps, final=True)
    return _images(latents, param=param), error, history.T


@functools.partial(jax.jit, static_argnames=("param",))
def _images(latents, *, param):
    return jax.vmap(param.to_image)(latents)[:, 0]


def invert(
    model: Model,
    image_or_code: Any,
    layers: str | Sequence[str],
    *,
    steps: int = 300,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
    alpha: float = 6.0,
    alpha_weight: float = 30.0,
    beta: float = 2.0,
    tv: float | Sequence[float] | None = None,
    size: int | tuple[int, int] | None = None,
    key: Any = 0,
    dtype=None,
) -> InvertResult:
    r"""Reconstruct images from their code at one or several layers.

    Minimises :math:`\ell(x) + \lambda_\alpha N_\alpha(x) + \lambda_{TV} TV^\beta(x)` from
    noise with heavy-ball momentum and a learning rate dropped 10x at 60% and 85% of the run
    (Mahendran & Vedaldi 2015, section 3.3); gradients are normalised by their mean absolute
    value so that ``learning_rate`` means the same at every layer. Every number below is an
    array argument of the compiled program: a new value never recompiles.

    Args:
      model: a :class:`~cnnjax.Model`.
      image_or_code: images ``[n, h, w, c]`` in [0, 1] (their codes at each layer are the
        targets), or a code: an array shaped like the activation of the single layer for
        images of ``size`` (e.g. ``[n, 1000]`` logits).
      layers: a layer name (any, including ``"logits"``) or several; all run in one program.
      steps: optimiser steps (300).
      learning_rate: mean change per pixel per step at the start (0.01).
      momentum: heavy-ball momentum (0.9).
      alpha: exponent of the alpha-norm (6).
      alpha_weight: :math:`\lambda_\alpha` (30; chosen on the bundled model: with 1, deep layers'
        reconstructions saturate).
      beta: exponent of the total variation (2).
      tv: :math:`\lambda_{TV}`, one value or one per layer (default: growing with depth,
        :func:`tv_weight`).
      size: the reconstruction's size when inverting a code (default: the model's input size).
      key: an int seed or a PRNG key (the starting noise).
      dtype: the model's arithmetic (:meth:`cnnjax.Model.astype`): None (float32) or
        ``jnp.bfloat16`` on a GPU or TPU; the images, gradients and optimiser state stay float32.

    Returns:
      :class:`InvertResult` ``(images, error, history, layers)``.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> photo = np.random.default_rng(0).random((1, 32, 32, 3), np.float32)
      >>> inv = invert(tiny_cnn(), photo, ["conv1", "conv3", "logits"], steps=8)
      >>> inv.images.shape, inv.error.shape, inv.layers
      ((3, 32, 32, 3), (3,), ('conv1', 'conv3', 'logits'))
    """
    model = model if dtype is None else model.astype(dtype)
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if not layers:
        raise ValueError("invert needs at least one layer")
    model.spec.check_layers(layers)
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers are repeated: {layers}")
    steps = check_positive_int(steps, "steps", hi=MAX_STEPS)
    hyper = {
        "learning_rate": check_float(learning_rate, "learning_rate", lo=0.0, lo_open=True),
        "momentum": check_float(momentum, "momentum", lo=0.0, hi=1.0, hi_open=True),
        "alpha": check_float(alpha, "alpha", lo=1.0),
        "alpha_weight": check_float(alpha_weight, "alpha_weight", lo=0.0),
        "beta": check_float(beta, "beta", lo=0.0, lo_open=True),
    }
    from_code, targets, hw = _targets(model, image_or_code, layers, size)
    if tv is None:
        tv = [tv_weight(model, name) for name in layers]
    tv = np.broadcast_to(check_floats(tv, "tv", lo=0.0, length=len(layers)), (len(layers),))
    n = targets.shape[0]
    param = _param.pixel(hw, 1, model.spec.channels)
    keys = jax.random.split(as_key(key), len(layers) * n)
    images, error, history = _run(
        model,
        targets,
        keys,
        jnp.asarray(tv),
        {**{k: jnp.float32(v) for k, v in hyper.items()}, "boundaries": _boundaries(steps)},
        layers=layers,
        param=param,
        steps=steps,
        from_code=from_code,
    )
    check_finite_run("invert", images, history)
    return InvertResult(images, error, history, layers)


def _targets(model: Model, x: Any, layers: tuple[str, ...], size) -> tuple[bool, jax.Array, tuple[int, int]]:
    """Decide whether ``x`` is images or a code, check it, and return the reconstruction size."""
    spec = model.spec
    shape = tuple(getattr(x, "shape", ()))
    is_image = len(shape) == 4 and shape[-1] == spec.channels
    if is_image and not (len(layers) == 1 and size is not None):
        images = spec.check_images(x)
        return False, images, tuple(images.shape[1:3])
    hw = spec.input_size if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    if len(layers) != 1:
        raise ValueError(f"a code can be inverted at one layer only; got layers {layers}")
    probe = jax.ShapeDtypeStruct((1,) + tuple(hw) + (spec.channels,), jnp.float32)
    spec.check_images(probe)
    expected = tuple(jax.eval_shape(model.apply, model.params, probe)[layers[0]].shape[1:])
    if len(shape) < 1 or shape[1:] != expected:
        raise ValueError(
            f"expected images [n, h, w, {spec.channels}] or a code of layer {layers[0]!r} shaped [n, "
            f"{', '.join(map(str, expected))}] (for {hw[0]}x{hw[1]} images), got shape {shape}"
        )
    code = jnp.asarray(x, jnp.float32)
    if not bool(jnp.all(jnp.isfinite(code))):
        raise ValueError("the code contains non-finite values")
    return True, code, tuple(hw)
