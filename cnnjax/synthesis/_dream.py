"""DeepDream (Mordvintsev, Olah & Tyka 2015): amplify what a layer sees in a photo.

Gradient ascent on ``mean(acts[layer]^2)`` from the photo itself, with the original recipe's
three ingredients: normalised steps (``step / mean|g|``), a random circular shift of the
image before every step (jitter), and octaves: the photo is processed from a small scale up,
and the detail added at each scale (the dreamed image minus the photo at that scale) is
upscaled and carried to the next. Networks here are fully convolutional up to their pooling,
so images of any size at least the model's smallest input work.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax import priors as _priors
from cnnjax import transforms as _transforms
from cnnjax._src.checks import MAX_STEPS, as_key, check_finite_run, check_float, check_int, check_positive_int
from cnnjax._src.contract import Model
from cnnjax.objectives import deepdream
from cnnjax.synthesis._engine import (
    drive,
    init_state,
    learning_rate_hyperparams,
    minimise_chunk,
    normalize_by_mean_abs,
)

__all__ = ["DreamResult", "dream", "octave_sizes"]


class DreamResult(NamedTuple):
    """What :func:`dream` returns.

    Attributes:
      images: float32 ``[n, h, w, c]`` in [0, 1], the size of the input.
      history: ``[n, octaves * steps]``, the objective before each step (on the shifted image
        at that octave's size; NumPy, on the host).
    """

    images: jax.Array
    history: np.ndarray


def octave_sizes(size: tuple[int, int], octaves: int, scale: float) -> list[tuple[int, int]]:
    """Image sizes from the smallest octave to the input's own: ``size / scale^k``."""
    h, w = size
    return [(max(1, round(h / scale**k)), max(1, round(w / scale**k))) for k in reversed(range(octaves))]


def _optimizer(hyperparams) -> optax.GradientTransformation:
    # The learning rate is in grey levels of 255 per step of the normalised gradient.
    return optax.chain(
        normalize_by_mean_abs(), optax.sgd(hyperparams["learning_rate"] / 255.0), _priors.box(0.0, 1.0)
    )


@functools.partial(jax.jit, static_argnames=("size",))
def _octave_start(images, previous, hyperparams, *, size):
    """The octave's photo and its starting image: the photo at this size plus the detail the
    previous octave added (``previous``: its result and its photo), upscaled; and a fresh
    optimiser state."""
    n, _, _, c = images.shape
    base = jax.image.resize(images, (n, *size, c), "cubic").clip(0.0, 1.0)
    if previous is not None:
        detail = jax.image.resize(previous[0] - previous[1], base.shape, "linear")
        start = jnp.clip(base + detail, 0.0, 1.0)
    else:
        start = base
    return base, start, init_state(_optimizer, start, hyperparams)


@functools.partial(jax.jit, static_argnames=("apply", "transform", "length", "final"))
def _advance(apply, params, objective, keys, hyperparams, latents, state, start, *, transform, length, final,
             steps):  # fmt: skip
    def loss_fn(latents, step_keys):
        x = jax.vmap(lambda k, im: transform(k, im[None])[0])(step_keys, latents)
        score = objective(apply(params, x))
        return -score, score

    return minimise_chunk(
        loss_fn, latents, state, keys, _optimizer, hyperparams, start, length=length, steps=steps, final=final
    )


def _run(model, images, keys, objective, hyperparams, *, sizes, steps, transform):
    """The octaves, smallest first, each one's steps in chunks (Ctrl-C is seen between them)."""
    previous, history = None, []
    for i, size in enumerate(sizes):
        base, x, state = _octave_start(images, previous, hyperparams, size=size)
        octave_keys = jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
        advance = functools.partial(_advance, model.apply, model.params, objective, octave_keys, hyperparams,
                                    transform=transform, steps=steps)  # fmt: skip
        x, h, _ = drive(advance, x, state, steps,
                        final=False)  # fmt: skip
        previous = (x, base)
        history.append(h)
    return x, np.concatenate(history, axis=0).T


def dream(
    model: Model,
    images: Any,
    layers: str | Sequence[str] | Mapping[str, float],
    *,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 10,
    learning_rate: Any = 1.5,
    jitter: int = 32,
    key: Any = 0,
    dtype=None,
) -> DreamResult:
    r"""DeepDream: ascend :math:`\sum_l w_l \, \mathrm{mean}(a_l(x)^2)` from the images themselves.

    At each of ``octaves`` scales (smallest first, each ``octave_scale`` times the previous),
    ``steps`` steps of ``x <- clip(x + (learning_rate / 255) g / mean|g|, 0, 1)`` where ``g``
    is the gradient at the image shifted circularly by up to ``jitter`` pixels; the detail
    added at one scale is upscaled and added to the next. ``learning_rate`` is in 8-bit grey
    levels: the original's 1.5 on 0..255 pixels is the default. Each image has its own random
    shifts.

    Args:
      model: a :class:`~cnnjax.Model`.
      images: float32 ``[n, h, w, c]`` in [0, 1]; any size whose smallest octave is at least
        the model's smallest input (``model.spec.min_input_size``).
      layers: a layer name, several (weight 1 each), or ``{name: weight}``.
      octaves: number of scales (4).
      octave_scale: ratio between consecutive scales (1.4).
      steps: steps per octave (10).
      learning_rate: mean absolute change per step in grey levels of 255 (1.5); one value or
        one per image (traced: a new value never recompiles).
      jitter: the largest random shift in pixels (32).
      key: an int seed or a PRNG key.
      dtype: the model's arithmetic (:meth:`cnnjax.Model.astype`): None (float32) or
        ``jnp.bfloat16`` on a GPU or TPU; the images, gradients and optimiser state stay float32.

    Returns:
      :class:`DreamResult` ``(images, history)``.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> photo = np.random.default_rng(0).random((1, 40, 48, 3), np.float32)
      >>> dream(tiny_cnn(), photo, "conv2", octaves=2, steps=3).images.shape
      (1, 40, 48, 3)
    """
    model = model if dtype is None else model.astype(dtype)
    images = model.spec.check_images(images)
    if isinstance(layers, str):
        layers = {layers: 1.0}
    elif not isinstance(layers, Mapping):
        layers = {name: 1.0 for name in layers}
    if not layers:
        raise ValueError("dream needs at least one layer")
    model.spec.check_layers(list(layers))
    weights = {name: check_float(w, f"the weight of layer {name!r}") for name, w in layers.items()}
    octaves = check_positive_int(octaves, "octaves")
    steps = check_positive_int(steps, "steps", hi=MAX_STEPS)
    octave_scale = check_float(octave_scale, "octave_scale", lo=1.0)
    jitter = check_int(jitter, "jitter", lo=0)
    hyperparams = learning_rate_hyperparams(learning_rate, images.shape[0])
    sizes = tuple(octave_sizes(images.shape[1:3], octaves, octave_scale))
    if min(sizes[0]) < model.spec.min_input_size:
        raise ValueError(
            f"the smallest octave of a {images.shape[1]}x{images.shape[2]} image is "
            f"{sizes[0][0]}x{sizes[0][1]}, smaller than {model.spec.name!r} takes "
            f"({model.spec.min_input_size} px): use fewer octaves, a smaller octave_scale or a larger image"
        )
    objective = sum(w * deepdream(name) for name, w in weights.items())
    keys = jax.random.split(as_key(key), images.shape[0])
    out, history = _run(model, images, keys, objective, hyperparams, sizes=sizes, steps=steps,
                        transform=_transforms.roll(jitter))  # fmt: skip
    check_finite_run("dream", out, history)
    return DreamResult(out, history)
